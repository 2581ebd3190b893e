//! Drain an agent mid-step: the step finishes, the agent exits 0, queued steps go elsewhere; a
//! step outliving the drain timeout is handed back and runs elsewhere.

use super::{attempts, ended, now_ms, step_status};
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

/// A step that outlives the drain timeout is stopped and handed back (`released`): it runs
/// again elsewhere at once, never alongside the stopped attempt, and nothing of it fails.
#[test]
fn a_step_outliving_the_drain_timeout_is_handed_back_and_runs_elsewhere() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent_with("a1", &["default"], &["--drain-timeout", "1s"]);
    // The lock file exists exactly while an attempt's shell runs: a second attempt starting
    // while the first still runs fails on it.
    let lock = c.dir.path().join("running.lock");
    let file = c.pipeline(
        "long.toml",
        &format!(
            "[pipeline]\nname = \"long\"\n[[step]]\nname = \"long\"\nretries = 0\nenv = {{ LOCK = \"{}\" }}\ncommand = [\"sh\", \"-c\", \"if [ -e \\\"$LOCK\\\" ]; then echo overlap; exit 1; fi; touch \\\"$LOCK\\\"; trap 'rm -f \\\"$LOCK\\\"; exit 143' TERM; sleep 10 & wait $!; rm -f \\\"$LOCK\\\"; echo attempt $DROVER_ATTEMPT > out.txt\"]\noutputs = {{ out = \"out.txt\" }}\n",
            lock.display()
        ),
    );
    let run = c.submit(&file);
    c.wait_for(
        &run,
        "the step to run on a1",
        Duration::from_secs(30),
        |d| step_status(d, "long") == "running" && lock.exists(),
    );
    c.start_agent("a2", &["default"]);
    crate::harness::wait_until("a2 to report in", Duration::from_secs(30), || {
        let doc = c.json(&["agents", "--json"]);
        doc["agents"].as_array()?.iter().find(|a| a["id"] == "a2")?;
        Some(())
    });

    let drained_at = now_ms();
    c.signal("a1", Signal::SIGTERM);
    let doc = c.wait_for(
        &run,
        "the step to run again",
        Duration::from_secs(30),
        |d| {
            attempts(d, "long").len() == 2
                && Cluster::step(d, "long")["attempts"][1]["started_at"].is_u64()
        },
    );
    let picked_up = Cluster::step(&doc, "long")["attempts"][1]["started_at"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(drained_at);
    let status = c.wait_exit("a1", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", c.process_log("a1"));

    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("a2"));
    assert_eq!(
        attempts(&doc, "long"),
        vec![
            ("a1".to_string(), "released".to_string()),
            ("a2".to_string(), "succeeded".to_string())
        ],
        "{doc}"
    );
    let out = c.drover(&["artifacts", "get", &run, "long", "out", "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 2\n");
    eprintln!("drain timeout 1s: attempt 2 started {picked_up} ms after SIGTERM to a1");
    // 1 s of drain timeout, then at most a second or two to stop, report and dispatch; a lease
    // expiry (3 s after a1's last heartbeat) would come later and end the attempt as lost.
    assert!(
        picked_up < 4_000,
        "attempt 2 started {picked_up} ms after the drain began"
    );
}
