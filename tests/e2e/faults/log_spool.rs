//! A step writes 64 MiB of numbered lines while the broker is away for 45 s: the agent keeps
//! them in a spool file instead of memory and sends them when the broker is back. Checked:
//! every line is in the log exactly once and in order (missing, duplicated and out-of-place
//! lines are reported by number), the agent's RSS stayed bounded, the spool was used and then
//! removed, and the delay is told in the run's console, not in the log.

use super::ended;
use super::rabbit::PrivateBroker;
use crate::harness::{Cluster, wait_until};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every line is `LINE_BYTES` long: a 9-digit number, a space, padding and a newline.
const LINE_BYTES: usize = 64;
/// 64 MiB of output in all.
const LINES: usize = 64 * 1024 * 1024 / LINE_BYTES;
/// Lines written before the outage, so the log is known to flow first.
const BEFORE: usize = 1000;
const OUTAGE: Duration = Duration::from_secs(45);
/// The agent may grow by this much over its RSS before the outage (the in-memory window is
/// 8 MiB); holding the output in memory would take more than 64 MiB.
const RSS_GROWTH_LIMIT_KB: u64 = 40 * 1024;

fn line(i: usize) -> String {
    format!("{i:09} {}\n", "x".repeat(LINE_BYTES - 11))
}

/// The step: `BEFORE` lines, then (once the flag file exists) the rest as fast as it can.
fn script(flag: &Path) -> String {
    let pad = "x".repeat(LINE_BYTES - 11);
    let awk = |from: usize, to: usize| {
        format!("awk 'BEGIN {{ for (i = {from}; i < {to}; i++) printf \"%09d {pad}\\n\", i }}'\n")
    };
    format!(
        "{}while [ ! -e '{}' ]; do sleep 0.1; done\n{}",
        awk(0, BEFORE),
        flag.display(),
        awk(BEFORE, LINES)
    )
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes in the agent's spool files now.
fn spooled(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .fold((0, 0), |(n, size), m| (n + 1, size + m.len()))
}

/// What the log holds compared with the lines written: (missing, duplicated, out of place).
fn check_lines(log: &[u8]) -> (Vec<usize>, Vec<usize>, Vec<String>) {
    let mut seen = vec![0u32; LINES];
    let mut misplaced = Vec::new();
    for (at, text) in log.split_inclusive(|b| *b == b'\n').enumerate() {
        let text = String::from_utf8_lossy(text);
        let number = text.get(..9).and_then(|n| n.parse::<usize>().ok());
        match number {
            Some(n) if n < LINES && text == line(n) => {
                seen[n] += 1;
                if n != at {
                    misplaced.push(format!("line {n} at position {at}"));
                }
            }
            _ => misplaced.push(format!("unexpected {text:?} at position {at}")),
        }
    }
    let missing = (0..LINES).filter(|n| seen[*n] == 0).collect();
    let duplicated = (0..LINES).filter(|n| seen[*n] > 1).collect();
    (missing, duplicated, misplaced)
}

#[test]
fn no_line_is_lost_through_a_long_broker_outage() {
    let rabbit = PrivateBroker::start();
    let mut c = Cluster::new();
    c.amqp = rabbit.url();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let flag = c.dir.path().join("outage-started");
    let gen_script = c.dir.path().join("lines.sh");
    std::fs::write(&gen_script, script(&flag)).expect("write the step's script");
    let file = c.pipeline(
        "lines.toml",
        &format!(
            "[pipeline]\nname = \"lines\"\n[[step]]\nname = \"work\"\ncommand = [\"sh\", \"{}\"]\n",
            gen_script.display()
        ),
    );
    let run = c.submit(&file);
    let log_file = c
        .data_dir()
        .join("logs")
        .join(&run)
        .join("work")
        .join("1.log");
    wait_until(
        "the first lines to reach the controller",
        Duration::from_secs(60),
        || {
            let size = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0);
            (size >= (BEFORE * LINE_BYTES) as u64).then_some(())
        },
    );
    let agent = c.pid("a1");
    let spool_dir = c.dir.path().join("a1").join("jobs").join("_spool");
    let rss_before = rss_kb(agent);
    let rss_peak = Cell::new(rss_before);
    let spool_peak = Cell::new(0u64);
    let sample = || {
        rss_peak.set(rss_peak.get().max(rss_kb(agent)));
        spool_peak.set(spool_peak.get().max(spooled(&spool_dir).1));
    };

    rabbit.stop_app();
    let stopped = Instant::now();
    // To read the processes' logs by, should the outage not hold the log back.
    let stopped_at = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    std::fs::write(&flag, "").expect("write the flag file");
    // The outage lasts a fixed time on purpose; meanwhile the agent is watched.
    while stopped.elapsed() < OUTAGE {
        sample();
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = c
        .http_get(&format!("/api/v1/runs/{run}/steps/work/log"))
        .len();
    rabbit.start_app();
    let back = Instant::now();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(180), |d| {
        sample();
        ended(d)
    });
    let caught_up = back.elapsed();
    sample();
    let (rss_peak, spool_peak) = (rss_peak.get(), spool_peak.get());

    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("a1"));
    let log = std::fs::read(&log_file).expect("the step's log");
    let (missing, duplicated, misplaced) = check_lines(&log);
    assert!(
        missing.is_empty() && duplicated.is_empty() && misplaced.is_empty(),
        "{} lines missing (first {:?}), {} duplicated (first {:?}), {} out of place (first {:?}); log {} bytes of {}",
        missing.len(),
        missing.first(),
        duplicated.len(),
        duplicated.first(),
        misplaced.len(),
        misplaced.first(),
        log.len(),
        LINES * LINE_BYTES
    );
    assert!(
        spool_peak >= 32 * 1024 * 1024,
        "the spool held at most {spool_peak} bytes: the output did not wait on disk"
    );
    let (files, _) = spooled(&spool_dir);
    assert_eq!(
        files, 0,
        "the spool files are removed once everything is sent"
    );
    assert!(
        rss_peak <= rss_before + RSS_GROWTH_LIMIT_KB,
        "the agent grew from {rss_before} kB to {rss_peak} kB"
    );
    assert!(
        during < LINES * LINE_BYTES / 2,
        "{during} bytes arrived while the broker was away: the outage did not hold the log back \
         (the broker's app stopped at {stopped_at})\n{}",
        c.tails()
    );
    let console = c.http_get(&format!("/api/v1/runs/{run}/console"));
    let delay = console
        .lines()
        .find(|l| l.contains("log of attempt 1 delayed"))
        .unwrap_or_else(|| panic!("no delay in the console:\n{console}"));
    assert!(delay.ends_with("(broker unreachable)"), "{delay}");
    let seconds: u64 = delay
        .split("delayed ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(seconds >= 40, "{delay}");
    eprintln!(
        "log spool (64 MiB through a 45 s outage): agent RSS {rss_before} kB -> peak {rss_peak} kB, spool peak {} MiB, log complete {:.1}s after the broker was back; console: {delay}",
        spool_peak / (1024 * 1024),
        caught_up.as_secs_f64()
    );
}
