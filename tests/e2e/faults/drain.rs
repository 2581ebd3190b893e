//! Drain an agent mid-step: the step finishes, the agent exits 0, queued steps go elsewhere.

use super::{attempts, ended, step_status};
use crate::harness::Cluster;
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn a_draining_agent_finishes_its_step_and_leaves_the_queue_to_others() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent_with(
        "a1",
        &["default"],
        &["--concurrency", "1", "--drain-timeout", "60s"],
    );
    // The long step's 2 s are the workload: time for the agent to be told to drain mid-step.
    let long = c.pipeline(
        "long.toml",
        "[pipeline]\nname = \"long\"\n[[step]]\nname = \"long\"\ncommand = [\"sh\", \"-c\", \"sleep 2; echo done > out.txt\"]\noutputs = { out = \"out.txt\" }\n",
    );
    let quick = c.pipeline(
        "quick.toml",
        "[pipeline]\nname = \"quick\"\n[[step]]\nname = \"q1\"\ncommand = [\"true\"]\n[[step]]\nname = \"q2\"\ncommand = [\"true\"]\n",
    );
    let long_run = c.submit(&long);
    c.wait_for(
        &long_run,
        "the long step to run",
        Duration::from_secs(30),
        |d| step_status(d, "long") == "running",
    );
    let quick_run = c.submit(&quick);
    // a1 has no free slot: the quick steps wait in the queue.
    c.wait_for(
        &quick_run,
        "the quick steps to be queued",
        Duration::from_secs(10),
        |d| step_status(d, "q1") == "queued" && step_status(d, "q2") == "queued",
    );

    c.signal("a1", Signal::SIGTERM);
    let agents =
        crate::harness::wait_until("a1 to report draining", Duration::from_secs(10), || {
            let doc = c.json(&["agents", "--json"]);
            let a1 = doc["agents"]
                .as_array()?
                .iter()
                .find(|a| a["id"] == "a1")?
                .clone();
            (a1["draining"] == true).then_some(doc)
        });
    assert!(agents["agents"].as_array().is_some());
    let status = c.wait_exit("a1", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", c.process_log("a1"));
    let doc = c.wait_for(
        &long_run,
        "the long run to end",
        Duration::from_secs(10),
        ended,
    );
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(
        attempts(&doc, "long"),
        vec![("a1".into(), "succeeded".into())]
    );

    c.start_agent("a2", &["default"]);
    let doc = c.wait_for(
        &quick_run,
        "the quick run to end",
        Duration::from_secs(30),
        ended,
    );
    assert_eq!(doc["status"], "succeeded", "{doc}");
    for step in ["q1", "q2"] {
        assert_eq!(
            attempts(&doc, step),
            vec![("a2".into(), "succeeded".into())],
            "{doc}"
        );
    }
}
