//! Per-attempt phase timers: how long each part of an attempt took on the agent (workdir,
//! inputs, environment, the process, outputs, the log's end and `Finished`), logged at debug
//! level when it ends, so a slow step can be read phase by phase (`RUST_LOG=drover_agent=debug`).

use std::fmt::Write as _;
use std::time::Instant;

/// The phases passed so far.
#[derive(Debug)]
pub struct Phases {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }
}

impl Phases {
    /// Ends phase `name` now (it began when the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.done.push((name, ms));
        self.last = now;
    }

    /// `workdir 0.4 ms, inputs 3.1 ms, ...` and the total.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (name, ms) in &self.done {
            let _ = write!(out, "{name} {ms:.1} ms, ");
        }
        let total: f64 = self.done.iter().map(|(_, ms)| ms).sum();
        let _ = write!(out, "total {total:.1} ms");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_listed_in_order_with_their_total() {
        let mut phases = Phases::default();
        phases.mark("a");
        std::thread::sleep(std::time::Duration::from_millis(5));
        phases.mark("b");
        let text = phases.describe();
        assert!(text.starts_with("a "), "{text}");
        let b: f64 = text
            .split("b ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0.0);
        assert!(b >= 5.0, "{text}");
        assert!(text.contains(", total "), "{text}");
    }
}
