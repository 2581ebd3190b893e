//! Counters the controller keeps and the Prometheus text served at `/metrics`.

use crate::scheduler::{RunRecord, RunStatus, StepStatus};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-lifetime counters, shared by the consumers and the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    handled: Mutex<BTreeMap<String, u64>>,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    publish_failures: Mutex<BTreeMap<String, u64>>,
    amqp_reconnects: AtomicU64,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, label: &str) {
    // A panic elsewhere cannot leave a counter map half-updated, so a poisoned lock is fine.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(label.to_string()).or_default() += 1;
}

fn snapshot(map: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    map.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Metrics {
    /// A message of `kind` was consumed and handled.
    pub fn handled(&self, kind: &str) {
        bump(&self.handled, kind);
    }

    /// A message was dead-lettered by this controller for `reason`.
    pub fn dead_lettered(&self, reason: &str) {
        bump(&self.dead_letters, reason);
    }

    /// Publishing a message of `kind` failed.
    pub fn publish_failed(&self, kind: &str) {
        bump(&self.publish_failures, kind);
    }

    /// How many times the controller's broker connection was replaced after a loss, so far.
    pub fn set_amqp_reconnects(&self, total: u64) {
        self.amqp_reconnects.store(total, Ordering::Relaxed);
    }

    pub fn dead_letters(&self) -> BTreeMap<String, u64> {
        snapshot(&self.dead_letters)
    }

    /// The Prometheus text exposition of the counters and of the runs' and steps' statuses.
    pub fn render(&self, runs: &[RunRecord]) -> String {
        let mut by_run: BTreeMap<&str, u64> =
            RunStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut by_step: BTreeMap<&str, u64> =
            StepStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for run in runs {
            *by_run.entry(run.status.as_str()).or_default() += 1;
            for step in &run.steps {
                *by_step.entry(step.status.as_str()).or_default() += 1;
            }
        }
        let mut out = String::new();
        family(
            &mut out,
            "drover_runs",
            "gauge",
            "Runs known to the controller, by status.",
            "status",
            by_run.iter().map(|(k, v)| (*k, *v)),
        );
        family(
            &mut out,
            "drover_steps",
            "gauge",
            "Steps of every run, by status.",
            "status",
            by_step.iter().map(|(k, v)| (*k, *v)),
        );
        let handled = snapshot(&self.handled);
        family(
            &mut out,
            "drover_messages_handled_total",
            "counter",
            "Messages consumed and handled, by kind.",
            "kind",
            handled.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        let dead = self.dead_letters();
        family(
            &mut out,
            "drover_dead_letters_total",
            "counter",
            "Messages this controller dead-lettered, by reason.",
            "reason",
            dead.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        let failed = snapshot(&self.publish_failures);
        family(
            &mut out,
            "drover_publish_failures_total",
            "counter",
            "Messages the controller failed to publish, by kind.",
            "kind",
            failed.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        let _ = writeln!(
            out,
            "# HELP drover_amqp_reconnects_total Times the controller reconnected to the broker.\n\
             # TYPE drover_amqp_reconnects_total counter\n\
             drover_amqp_reconnects_total {}",
            self.amqp_reconnects.load(Ordering::Relaxed)
        );
        out
    }
}

/// One labelled family in the Prometheus text format.
pub(crate) fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (value, n) in values {
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_statuses() {
        let m = Metrics::default();
        m.dead_lettered("malformed");
        m.dead_lettered("malformed");
        m.handled("submit");
        let text = m.render(&[]);
        assert!(
            text.contains("drover_dead_letters_total{reason=\"malformed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("drover_messages_handled_total{kind=\"submit\"} 1"),
            "{text}"
        );
        assert!(text.contains("drover_runs{status=\"running\"} 0"), "{text}");
        assert!(text.contains("# TYPE drover_steps gauge"), "{text}");
        assert!(
            text.contains("\ndrover_amqp_reconnects_total 0\n"),
            "{text}"
        );
    }
}
