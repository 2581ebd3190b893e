//! `kill -9` an agent while its step runs: after the lease another agent runs it, once.

use super::{attempts, ended, now_ms, step_status};
use crate::harness::{Cluster, text};
use std::time::{Duration, Instant};

#[test]
fn a_killed_agents_step_is_retried_elsewhere_after_the_lease() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    // The step's 2 s are the workload: it is still running when its agent is killed.
    let file = c.pipeline(
        "slow.toml",
        "[pipeline]\nname = \"slow\"\n[[step]]\nname = \"work\"\ncommand = [\"sh\", \"-c\", \"sleep 2; echo attempt $DROVER_ATTEMPT > out.txt\"]\noutputs = { out = \"out.txt\" }\nretries = 1\nretry_backoff = \"0s\"\n",
    );
    let run = c.submit(&file);
    c.wait_for(
        &run,
        "the step to run on a1",
        Duration::from_secs(30),
        |d| step_status(d, "work") == "running",
    );
    c.start_agent("a2", &["default"]);

    let killed_at = now_ms();
    let killed = Instant::now();
    c.kill("a1");
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    let ended_after = killed.elapsed();

    assert_eq!(
        doc["status"],
        "succeeded",
        "{doc}\n{}",
        c.process_log("controller")
    );
    let tries = attempts(&doc, "work");
    assert_eq!(
        tries,
        vec![
            ("a1".to_string(), "lost".to_string()),
            ("a2".to_string(), "succeeded".to_string())
        ],
        "{doc}"
    );
    let second = &Cluster::step(&doc, "work")["attempts"][1];
    let picked_up = second["started_at"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(killed_at);
    let out = c.drover(&["artifacts", "get", &run, "work", "out", "-o", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attempt 2\n",
        "{}",
        text(&out)
    );
    eprintln!(
        "recovery (agent killed, lease 3s): attempt 2 started {picked_up} ms after the kill; run succeeded {:.2}s after it",
        ended_after.as_secs_f64()
    );
}
