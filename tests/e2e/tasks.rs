//! Tasks registered by their scripts (`Task.init` with a controller reachable) and run again as
//! pipeline steps (`add_step(base_task_project=, base_task_name=)`), with parameter overrides
//! cast to the connected values' types, `${step.id}` passed between them and
//! `${step.parameters.SECTION/NAME}` read from an earlier step.

use crate::harness::{Cluster, text};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/tasks");

#[test]
fn a_registered_task_runs_as_a_step_with_its_overrides() {
    let c = Cluster::up(1, &["default"]);
    for script in ["make_data.py", "process.py"] {
        let out = c.python(&[&format!("{DIR}/{script}")]);
        assert!(out.status.success(), "{script}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("drover Task: registered task id="),
            "{stdout}"
        );
        assert!(stdout.contains("exiting (execute_remotely)"), "{stdout}");
        assert!(!stdout.contains("uploaded"), "the script went on: {stdout}");
    }
    let listed = c.json(&["tasks", "--json"]);
    let tasks = listed["tasks"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["process", "make data"], "{listed}");
    // Names match regardless of case, as in ClearML.
    let found = c.json(&["tasks", "--json", "--project", "E2E"]);
    assert_eq!(found["tasks"].as_array().map(Vec::len), Some(2), "{found}");
    assert_eq!(tasks[1]["task_type"], "data_processing");
    assert_eq!(tasks[1]["parameters"]["General/rows"], "3", "{listed}");
    assert!(
        tasks[0]["script"]
            .as_str()
            .unwrap()
            .contains("dataset_task_id"),
        "{listed}"
    );

    // The web UI lists them on its tasks page, filled by its module from the same API.
    let page = c.http_get("/tasks");
    assert!(page.contains("src=\"/assets/tasks.js\""), "{page}");
    assert!(
        page.contains("<a href=\"/tasks\" aria-current=\"page\">Tasks</a>"),
        "{page}"
    );
    let module = c.http_get("/assets/tasks.js");
    assert!(module.contains("/api/v1/tasks"), "{module}");

    let out = c.python(&[&format!("{DIR}/pipeline.py")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_pipeline_outputs(&c);
}

/// The latest run is `pipeline.py`'s, ended, with the outputs its overrides and references give.
fn assert_pipeline_outputs(c: &Cluster) {
    let out = c.drover(&["wait", "latest", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(c.unpickled(run_id, "make", "dataset"), "[0, 1, 2, 3]");
    let scaled = c.unpickled(run_id, "process", "scaled");
    for expected in [
        "'values': [0.0, 0.5, 1.0, 1.5]".to_string(),
        "'scale_type': 'float'".into(),
        "'label': 'from the pipeline, 4 rows'".into(),
        "'keep': True".into(),
        format!("'id': '{run_id}/process'"),
        "'main': '__main__'".into(),
    ] {
        assert!(scaled.contains(&expected), "{expected} not in {scaled}");
    }
}

/// Under `start_locally(run_pipeline_steps_locally=True)` each task's script runs as a subprocess
/// of the calling process with its step's context: the same overrides, references and
/// artifacts as on an agent, recorded with the controller (no agent runs here).
#[test]
fn registered_tasks_run_as_local_steps_with_their_overrides() {
    let c = Cluster::up(0, &["default"]);
    for script in ["make_data.py", "process.py"] {
        let out = c.python(&[&format!("{DIR}/{script}")]);
        assert!(out.status.success(), "{script}: {}", text(&out));
    }
    let out = c.python(&[&format!("{DIR}/pipeline.py"), "--locally"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("uploaded 4 rows"), "{stdout}");
    assert!(stdout.contains("successful: True"), "{stdout}");
    assert!(!stdout.contains("registered task id="), "{stdout}");
    assert_pipeline_outputs(&c);
}

/// `execute_remotely(queue_name=...)` registers the script, submits a one-step run of it on that
/// queue and exits; the step runs the rest of the script.
#[test]
fn execute_remotely_with_a_queue_runs_the_script_there() {
    let c = Cluster::up(1, &["default"]);
    let out = c.python(&[&format!("{DIR}/queued.py")]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exiting (execute_remotely)"), "{stdout}");
    let out = c.drover(&["wait", "latest", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(c.unpickled(run_id, "queued_task", "shout"), "'HELLO'");
}

#[test]
fn a_step_from_an_unregistered_task_is_refused_naming_it() {
    let c = Cluster::up(0, &["default"]);
    let out = c.python(&[&format!("{DIR}/pipeline.py")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no task named 'make data' in project 'e2e' is registered"),
        "{stderr}"
    );
}
