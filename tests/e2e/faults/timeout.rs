//! A step with `timeout = "1s"` running `sleep 30`: killed, retried, then failed.

use super::{attempts, ended};
use crate::harness::Cluster;
use std::time::{Duration, Instant};

#[test]
fn a_step_over_its_timeout_is_killed_retried_and_failed() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline(
        "slow.toml",
        "[pipeline]\nname = \"slow\"\n[[step]]\nname = \"slow\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1s\"\nretries = 2\nretry_backoff = \"0s\"\n",
    );
    let started = Instant::now();
    let run = c.submit(&file);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(40), ended);
    let took = started.elapsed();
    assert_eq!(doc["status"], "failed", "{doc}");
    let tries = attempts(&doc, "slow");
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries.iter().all(|(_, o)| o == "timed_out"), "{tries:?}");
    assert!(
        took < Duration::from_secs(20),
        "three 1s attempts took {took:?}"
    );
}
