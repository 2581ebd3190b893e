//! Python function steps through the SDK: exceptions, several return values, a diamond, local
//! runs, and ClearML's `Task` and `Logger` inside a step.

use crate::harness::{Cluster, text};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/functions.py");

/// Submits a case with the SDK and waits for the run with `drover wait latest`.
fn submit_and_wait(c: &Cluster, case: &str) -> (std::process::Output, Value) {
    let out = c.python(&[SCRIPT, case]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pipeline submitted"));
    let out = c.drover(&["wait", "latest", "--json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

#[test]
fn a_raising_step_fails_with_its_traceback_in_the_log() {
    let c = Cluster::up(1, &["default"]);
    let (out, run) = submit_and_wait(&c, "exception");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(run["status"], "failed", "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let log = c.drover(&["logs", run_id, "explode"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("ValueError: bad input 7"), "{log}");
}

#[test]
fn several_return_names_unpack_the_tuple() {
    let c = Cluster::up(1, &["default"]);
    let (out, run) = submit_and_wait(&c, "two_returns");
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(c.unpickled(run_id, "split", "small"), "3");
    assert_eq!(c.unpickled(run_id, "split", "big"), "30");
    assert_eq!(c.unpickled(run_id, "add", "sum"), "33");
}

/// Inside a step `Task.current_task()` is the step's task; what needs the controller there says
/// it is not supported yet, and the logger's reports reach the step's log.
#[test]
fn a_steps_task_is_the_step_and_its_reports_reach_the_log() {
    let c = Cluster::up(1, &["default"]);
    let (out, run) = submit_and_wait(&c, "task");
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    let seen = c.unpickled(run_id, "train", "seen");
    assert!(seen.contains(&format!("'id': '{run_id}/train'")), "{seen}");
    assert!(seen.contains("'name': 'train'"), "{seen}");
    assert!(seen.contains("'locally': False"), "{seen}");
    assert!(seen.contains("'connected': {'x': 3}"), "{seen}");
    assert!(
        seen.contains("inside a drover step is not supported yet"),
        "{seen}"
    );
    let log = c.drover(&["logs", run_id, "train"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("drover: scalar loss / train @ 1: 0.5"),
        "{log}"
    );
    assert!(!log.contains("could not be stored"), "{log}");
}

#[test]
fn a_diamond_of_functions_passes_values_along() {
    function_diamond(&Cluster::up(2, &["default"]));
}

/// Pickled values flow between function steps; also run on an S3 store (`artifacts.rs`).
pub(crate) fn function_diamond(c: &Cluster) {
    let (out, run) = submit_and_wait(c, "diamond");
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(
        c.unpickled(run_id, "combine", "result"),
        "{'total': 10, 'max': 4}"
    );
}

#[test]
fn start_locally_runs_in_process_without_queuing() {
    let c = Cluster::up(1, &["default"]);
    let out = c.python(&[SCRIPT, "local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("local pipeline succeeded"),
        "{}",
        text(&out)
    );
    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
}
