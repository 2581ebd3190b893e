//! Step callbacks of a PipelineController given to `start()`: the run gets a driver on the
//! drivers queue that runs them from their source on an agent, answers the steps the
//! controller holds "waiting for callback" (a typed pending reason, shown by `drover status`),
//! skips a subtree when a pre_execute_callback returns False and takes the run down when a
//! callback raises. The callbacks print into the driver's log.

use crate::harness::{Cluster, text};
use serde_json::Value;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/callbacks.py");
const TASKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/tasks");

/// `drover up` with one agent on `default` and the drivers agent `up` starts.
fn cluster() -> Cluster {
    let mut c = Cluster::up(1, &["default"]);
    c.queues.push("drivers".into());
    c
}

/// Runs a case of the script, which submits and returns; the run's id.
fn submit(c: &Cluster, args: &[&str]) -> String {
    let mut full = vec![SCRIPT];
    full.extend_from_slice(args);
    let out = c.python(&full);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .split("submitted as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .trim()
        .to_string()
}

fn ended(c: &Cluster, run: &str) -> Value {
    c.wait_for(run, "the run to end", Duration::from_secs(120), |doc| {
        doc["status"] != "running"
    })
}

fn driver_log(c: &Cluster, run: &str) -> String {
    let out = c.drover(&["logs", run, "driver"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn callbacks_run_in_a_driver_on_an_agent_and_a_false_pre_skips_the_subtree() {
    let c = cluster();
    let run_id = submit(&c, &["functions"]);
    let run = ended(&c, &run_id);
    let log = driver_log(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    for line in [
        // ${pipeline.x} is filled in (parameters are text, as the step gets them); the step
        // was held for the answer when the callback ran.
        "pre first {'kwargs/x': '2'} held pending {'reason': 'waiting_for_callback'}",
        "pre skipped {'kwargs/x': '${first.y}'} held pending {'reason': 'waiting_for_callback'}",
        "status first pending -> ",
        "status skipped pending -> skipped",
        "status after pending -> skipped",
        &format!("post first completed {run_id}/first"),
        &format!("post other completed {run_id}/other"),
    ] {
        assert!(
            log.contains(line),
            "no {line:?} in the driver's log:\n{log}"
        );
    }
    // The driver reads the run twice a second, so a short step's `running` may pass unseen.
    assert!(ended_as(&log, "first", "completed"), "{log}");
    assert!(!log.contains("pre after"), "{log}");
    assert!(!log.contains("post skipped"), "{log}");
    let skipped = Cluster::step(&run, "skipped");
    assert_eq!(skipped["status"], "skipped", "{run}");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap_or("")
            .contains("pre_execute_callback returned False"),
        "{run}"
    );
    assert_eq!(Cluster::step(&run, "after")["status"], "skipped", "{run}");
    // "2" doubled twice, as text.
    assert_eq!(c.unpickled(&run_id, "other", "y"), "'2222'");
    let driver = Cluster::step(&run, "driver");
    assert_eq!(driver["driver"], true, "{run}");
    assert_eq!(driver["queue"], "drivers", "{run}");
}

#[test]
fn a_step_waiting_for_its_callback_is_shown_so_until_the_driver_answers() {
    let c = cluster();
    let gate = c.dir.path().join("gate");
    let run_id = submit(&c, &["gated", gate.to_str().unwrap()]);
    let held = c.wait_for(
        &run_id,
        "step gated to wait for its callback",
        Duration::from_secs(60),
        |doc| Cluster::step(doc, "gated")["pending_reason"]["reason"] == "waiting_for_callback",
    );
    let gated = Cluster::step(&held, "gated");
    assert_eq!(gated["status"], "pending", "{held}");
    assert_eq!(gated["message"], "waiting for callback", "{held}");
    let out = c.drover(&["status", &run_id]);
    let status = String::from_utf8_lossy(&out.stdout);
    let row = status
        .lines()
        .find(|l| l.starts_with("gated "))
        .unwrap_or_else(|| panic!("no row for gated in {status}"));
    assert!(row.contains("pending (waiting for callback)"), "{status}");

    std::fs::write(&gate, b"").unwrap();
    let run = ended(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let gated = Cluster::step(&run, "gated");
    assert_eq!(gated["status"], "succeeded", "{run}");
    assert!(gated.get("pending_reason").is_none(), "{run}");
    assert!(
        driver_log(&c, &run_id).contains("gate gated opened"),
        "{run}"
    );
}

#[test]
fn a_raising_callback_fails_the_driver_and_the_run() {
    let c = cluster();
    let run_id = submit(&c, &["raising"]);
    let run = ended(&c, &run_id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or("");
    assert!(error.contains("driver driver failed"), "{run}");
    assert_eq!(Cluster::step(&run, "first")["status"], "succeeded", "{run}");
    assert_ne!(
        Cluster::step(&run, "second")["status"],
        "succeeded",
        "{run}"
    );
    let log = driver_log(&c, &run_id);
    assert!(log.contains("ValueError: no go for second"), "{log}");
}

#[test]
fn callbacks_of_a_step_from_a_registered_task_get_its_task_and_overrides() {
    let c = cluster();
    let out = c.python(&[&format!("{TASKS}/make_data.py")]);
    assert!(out.status.success(), "{}", text(&out));
    let task = c.json(&["tasks", "--json"]);
    let task_id = task["tasks"][0]["id"].as_str().unwrap().to_string();
    let run_id = submit(&c, &["tasks"]);
    let run = ended(&c, &run_id);
    let log = driver_log(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    for line in [
        format!("task pre make {task_id} [('General/rows', '4')]"),
        format!("post make completed {run_id}/make"),
    ] {
        assert!(
            log.contains(&line),
            "no {line:?} in the driver's log:\n{log}"
        );
    }
    assert!(ended_as(&log, "make", "completed"), "{log}");
    assert_eq!(c.unpickled(&run_id, "make", "dataset"), "[0, 1, 2, 3]");
}

/// Whether the log has the status_change line of `step` reaching `status`.
fn ended_as(log: &str, step: &str, status: &str) -> bool {
    log.lines()
        .any(|l| l.starts_with(&format!("status {step} ")) && l.ends_with(&format!("-> {status}")))
}
