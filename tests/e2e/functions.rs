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

/// Inside a step `Task.current_task()` is the step's task, what it uploads is one of the step's
/// outputs, and the logger's reports reach the step's log.
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
    assert!(seen.contains("'uploaded': True"), "{seen}");
    assert_eq!(c.unpickled(run_id, "train", "x"), "3");
    let log = c.drover(&["logs", run_id, "train"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("drover: scalar loss / train @ 1: 0.5"),
        "{log}"
    );
    assert!(!log.contains("could not be stored"), "{log}");
}

/// `Task.upload_artifact` inside a step stores objects, files and folders as the step's outputs
/// (listed and downloadable like return values, a return value's name refused); another step of
/// the run reads them with `Task.get_task(task_id="${make.id}")` and
/// `StorageManager.get_local_copy` of `${make.artifacts.notes.url}` or of an artifact's `url`.
#[test]
fn a_steps_uploaded_artifacts_are_its_outputs_and_another_step_reads_them() {
    let c = Cluster::up(1, &["default"]);
    let (out, run) = submit_and_wait(&c, "task_artifacts");
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(c.unpickled(run_id, "make", "table"), "{'rows': [1, 2, 3]}");
    let clash = c.unpickled(run_id, "make", "clash");
    assert!(
        clash.contains("upload_artifact(\\'count\\')")
            && clash.contains("has the name of one of the step\\'s return values"),
        "{clash}"
    );
    let listed = c.json(&["artifacts", "list", run_id, "--json"]);
    let mut names: Vec<(String, String)> = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == "make")
        .map(|a| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (field("name"), field("file_name"))
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("clash".to_string(), "clash.pkl".to_string()),
            ("count".into(), "count.pkl".into()),
            ("model".into(), "model.zip".into()),
            ("notes".into(), "notes.txt".into()),
            ("table".into(), "table.pkl".into()),
        ],
        "{listed}"
    );
    let notes = c.dir.path().join("notes.txt");
    let got = c.drover(&[
        "artifacts",
        "get",
        run_id,
        "make",
        "notes",
        "-o",
        notes.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "plain file\n");
    let seen = c.unpickled(run_id, "read", "seen");
    for expected in [
        "'names': ['clash', 'count', 'model', 'notes', 'table']".to_string(),
        "'table': {'rows': [1, 2, 3]}".into(),
        "'count': 3".into(),
        "'types': {'clash': 'pickle', 'count': 'pickle', 'model': 'folder', 'notes': 'file', 'table': 'pickle'}".into(),
        "'weight': '0.5'".into(),
        "'notes': 'plain file'".into(),
        "'by_url': 'table.pkl'".into(),
        "'refused': True".into(),
        format!("'id': '{run_id}/make'"),
        format!("/api/v1/runs/{run_id}/steps/make/artifacts/table'"),
        format!("/api/v1/runs/{run_id}/steps/make/artifacts/notes'"),
        "'notes_by_reference': 'plain file'".into(),
    ] {
        assert!(seen.contains(&expected), "{expected} not in {seen}");
    }
}

/// `${STEP.artifacts.NAME.url}` of an artifact the step never stored fails the consuming step
/// when it would be dispatched, naming the reference.
#[test]
fn a_reference_to_an_artifact_never_stored_fails_the_step_at_dispatch() {
    let c = Cluster::up(1, &["default"]);
    let (out, run) = submit_and_wait(&c, "missing_artifact");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = c.json(&["status", run["run_id"].as_str().unwrap(), "--json"]);
    let step = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "use")
        .unwrap();
    assert_eq!(step["status"], "failed", "{status}");
    assert_eq!(step["attempt"], 0, "{status}");
    let why = step["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("${make.artifacts.ghost.url}: step make has no artifact \"ghost\""),
        "{why}"
    );
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
fn start_locally_runs_in_process_and_is_recorded() {
    let c = Cluster::up(1, &["default"]);
    let out = c.python(&[SCRIPT, "local"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("local pipeline succeeded"),
        "{}",
        text(&out)
    );
    // Recorded with the controller, yet every attempt ran in the script, none on the agent.
    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs["runs"][0]["status"], "succeeded", "{runs}");
    let run = c.json(&[
        "status",
        runs["runs"][0]["run_id"].as_str().unwrap(),
        "--json",
    ]);
    for step in run["steps"].as_array().unwrap() {
        for attempt in step["attempts"].as_array().unwrap() {
            let runner = attempt["agent"].as_str().unwrap_or("");
            assert!(
                runner.starts_with("local-"),
                "{} ran on {runner:?}: {run}",
                step["name"]
            );
        }
    }
}
