//! `kill -9` a controller that keeps its state in the journal stream, delete its data dir (the
//! lost disk), and start a controller on an empty one: the run goes on from the latest
//! snapshot (taken every 1 KiB of journal here) and the journal after it.

use super::{attempts, chain, ended, step_status};
use crate::harness::{Cluster, Store};
use std::time::Duration;

#[test]
fn a_run_survives_its_controller_and_its_data_dir() {
    // Artifacts in a bucket: the local store would go with the data dir.
    let mut c = Cluster::on(Store::S3).with_fixed_http();
    let controller = [
        "controller",
        "--state-journal",
        "stream",
        "--state-snapshot-every",
        "1KiB",
    ]
    .map(String::from);
    c.start_controller_with(&controller);
    c.start_agent("a1", &["default"]);
    let file = c.pipeline("chain.toml", &chain(3, 1.5));
    let run = c.submit(&file);
    c.wait_for(&run, "s2 to run", Duration::from_secs(30), |d| {
        step_status(d, "s2") == "running"
    });

    c.kill("controller");
    std::fs::remove_dir_all(c.data_dir()).unwrap();
    c.start_controller_with(&controller);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);

    let log = c.process_log("controller");
    assert_eq!(doc["status"], "succeeded", "{doc}\n{log}");
    for step in ["s1", "s2", "s3"] {
        let tries = attempts(&doc, step);
        assert_eq!(tries.len(), 1, "{step} ran more than once: {tries:?}");
        assert_eq!(tries[0].1, "succeeded", "{step}: {tries:?}");
    }
    assert!(
        log.contains("state journal") && log.contains("loaded the snapshot of batch"),
        "the new controller took its state from a snapshot and the journal:\n{log}"
    );
    let out = c.drover(&["artifacts", "get", &run, "s3", "out", "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "start\ns1\ns2\ns3\n");
}
