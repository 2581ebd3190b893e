//! What a step cannot take from the machine: its log is cut at `--max-log-size` while the
//! process's memory stays bounded, a `setsid` daemon dies with its attempt (cgroup and
//! subreaper), and an output past `--max-artifact-size` fails the step with the reason.

use crate::harness::{Cluster, text};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

/// Resident memory of a started process (`VmRSS`), and its peak so far (`VmHWM`), in bytes.
fn rss(c: &Cluster, label: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid(label))).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn attempt_message(run: &Value, step: &str) -> String {
    Cluster::step(run, step)["attempts"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// 2 GiB of output under `drover up` (controller and agent in one process): the step succeeds,
/// the process's peak memory grows by at most 64 MiB, and the stored log is the cap plus the
/// marker line.
#[test]
fn a_step_writing_two_gibibytes_is_cut_at_the_cap_in_bounded_memory() {
    let cap = 32 * MIB;
    let c = Cluster::up_with(1, &["default"], &["--max-log-size", "32MiB"]);
    // Warm up: the first run pays for what any run costs (threads, buffers, caches).
    let warm = c.pipeline(
        "warm.toml",
        "[pipeline]\nname = \"warm\"\n[[step]]\nname = \"w\"\ncommand = [\"sh\", \"-c\", \"head -c 1000000 /dev/zero | tr '\\\\0' x\"]\n",
    );
    let (out, _) = c.run_wait(&warm, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, before) = rss(&c, "up");
    let file = c.pipeline(
        "flood.toml",
        "[pipeline]\nname = \"flood\"\n[[step]]\nname = \"flood\"\ncommand = [\"sh\", \"-c\", \"yes | head -c 2G\"]\ntimeout = \"10m\"\n",
    );
    let started = std::time::Instant::now();
    let (out, run) = c.run_wait(&file, &[]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        c.process_log("up")
    );
    assert_eq!(run["steps"]["flood"], "succeeded", "{run}");
    let (now, peak) = rss(&c, "up");
    eprintln!(
        "2 GiB of output in {took:?}: peak RSS {} MiB before, {} MiB after (now {} MiB)",
        before / MIB,
        peak / MIB,
        now / MIB
    );
    assert!(
        peak <= before + 64 * MIB,
        "peak RSS grew from {} to {} MiB",
        before / MIB,
        peak / MIB
    );
    let run_id = run["run_id"].as_str().unwrap();
    let log = c
        .data_dir()
        .join("logs")
        .join(run_id)
        .join("flood")
        .join("1.log");
    let size = std::fs::metadata(&log).unwrap().len();
    let marker = format!(
        "drover: the log reached its limit of {cap} bytes (--max-log-size); the rest of the step's output is discarded\n"
    );
    assert_eq!(size, cap + marker.len() as u64, "{}", log.display());
    // All 2 GiB were read from the pipe: what is not stored was dropped.
    let said = format!(
        "log {} bytes, {} dropped past its cap",
        cap + marker.len() as u64,
        2 * 1024 * MIB - cap
    );
    assert!(
        c.process_log("up").contains(&said),
        "{}",
        c.process_log("up")
    );
    let out = c.drover(&["logs", run_id, "flood"]);
    assert!(
        out.stdout.ends_with(marker.as_bytes()),
        "{}",
        text(&out).len()
    );
    assert!(out.stdout.starts_with(b"y\ny\n"));
}

fn setsid_daemon_is_gone(extra: &[&str], mechanism: &str) {
    let c = Cluster::up_with(1, &["default"], extra);
    let marker = format!(
        "sleep 1000{}",
        std::process::id() % 1000 + extra.len() as u32
    );
    let file = c.pipeline(
        "daemon.toml",
        &format!(
            "[pipeline]\nname = \"daemon\"\n[[step]]\nname = \"d\"\ncommand = [\"sh\", \"-c\", \"setsid sh -c 'touch ready; exec {marker}' > /dev/null 2>&1 & until [ -e ready ]; do sleep 0.01; done\"]\n"
        ),
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(run["steps"]["d"], "succeeded", "{run}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    let log = c.process_log("up");
    assert!(
        left.stdout.is_empty(),
        "a setsid daemon outlived its attempt: pids {}\n{log}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(log.contains(mechanism), "{log}");
}

/// As root on a machine with the cgroup v2 hierarchy (hybrid or unified), `auto` puts each
/// attempt in a cgroup of its own.
#[test]
fn a_setsid_daemon_dies_with_its_attempt_through_its_cgroup() {
    if !is_root() {
        eprintln!("skipped: creating cgroups needs root or a delegated cgroup");
        return;
    }
    setsid_daemon_is_gone(&["--step-cleanup", "cgroup"], "a cgroup per attempt");
}

#[test]
fn a_setsid_daemon_dies_with_its_attempt_through_the_subreaper_sweep() {
    setsid_daemon_is_gone(&["--step-cleanup", "subreaper"], "the subreaper sweep");
}

/// An output larger than the controller accepts fails the step with the controller's reason.
#[test]
fn an_output_past_the_artifact_limit_fails_the_step_with_the_reason() {
    let c = Cluster::up_with(1, &["default"], &["--max-artifact-size", "1KiB"]);
    let file = c.pipeline(
        "big.toml",
        "[pipeline]\nname = \"big\"\n[[step]]\nname = \"make\"\ncommand = [\"sh\", \"-c\", \"head -c 5000 /dev/zero > out.bin\"]\noutputs = { out = \"out.bin\" }\n",
    );
    let (_, run) = c.run_wait(&file, &[]);
    assert_eq!(run["steps"]["make"], "failed", "{run}");
    let status = c.json(&["status", run["run_id"].as_str().unwrap(), "--json"]);
    let message = attempt_message(&status, "make");
    assert!(
        message.contains("cannot upload output 'out'")
            && message.contains("larger than the controller accepts (5000 bytes)")
            && message.contains("--max-artifact-size"),
        "{message}"
    );
}

/// Whether the tests run as root (the owner of their own `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
