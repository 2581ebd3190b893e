//! `kill -9` the controller mid-pipeline and start it again on the same data dir.

use super::{attempts, chain, ended, step_status};
use crate::harness::Cluster;
use std::time::{Duration, Instant};

#[test]
fn a_pipeline_survives_a_killed_controller() {
    let mut c = Cluster::new().with_fixed_http();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let file = c.pipeline("chain.toml", &chain(3, 1.5));
    let run = c.submit(&file);
    c.wait_for(&run, "s2 to run", Duration::from_secs(30), |d| {
        step_status(d, "s2") == "running"
    });

    let killed = Instant::now();
    c.kill("controller");
    // The fault under test: the controller stays down for a second while its agent works on.
    std::thread::sleep(Duration::from_secs(1));
    c.start_controller_with(&["controller".to_string()]);
    let restarted = Instant::now();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);

    assert_eq!(
        doc["status"],
        "succeeded",
        "{doc}\n{}",
        c.process_log("controller")
    );
    for step in ["s1", "s2", "s3"] {
        let tries = attempts(&doc, step);
        assert_eq!(tries.len(), 1, "{step} ran more than once: {tries:?}");
        assert_eq!(tries[0].1, "succeeded", "{step}: {tries:?}");
    }
    let out = c.drover(&["artifacts", "get", &run, "s3", "out", "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "start\ns1\ns2\ns3\n");
    eprintln!(
        "recovery (controller killed 1s): run finished {:.2}s after the restart, {:.2}s after the kill (s3 alone takes 1.5s)",
        restarted.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}
