//! Pipelines run by the submitting process (`PipelineDecorator.run_locally()`,
//! `PipelineController.start_locally(run_pipeline_steps_locally=True)`) are recorded with the
//! controller: the run, its grown steps, their logs and the driver's console are there, every
//! attempt ran in the submitting process (never on an agent), and the run ends as the local
//! run did; when that process dies the run fails after the lease, saying why.

use crate::harness::{Cluster, text, wait_until};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/local_runs.py");

fn cluster() -> Cluster {
    let mut c = Cluster::up_with(1, &["default"], &[]);
    c.queues.push("drivers".into());
    c
}

/// Runs a case to its end; its output and the id of the run it recorded.
fn run_case(c: &Cluster, args: &[&str]) -> (std::process::Output, String) {
    let mut full = vec![SCRIPT];
    full.extend_from_slice(args);
    let out = c.python(&full);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let run = recorded_run(&stdout).unwrap_or_else(|| panic!("not recorded:\n{}", text(&out)));
    (out, run)
}

/// The run id in "... recorded as run <id>: <url>".
fn recorded_run(stdout: &str) -> Option<String> {
    let rest = stdout.split("recorded as run ").nth(1)?;
    Some(rest.split(':').next()?.trim().to_string())
}

fn status(c: &Cluster, run: &str) -> Value {
    c.wait_for(run, "the run to end", Duration::from_secs(30), |doc| {
        doc["status"] != "running"
    })
}

fn log(c: &Cluster, run: &str, step: &str) -> String {
    let out = c.drover(&["logs", run, step]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every attempt of every step ran in the submitting process.
fn ran_locally(run: &Value) {
    for step in run["steps"].as_array().unwrap() {
        for attempt in step["attempts"].as_array().unwrap() {
            let agent = attempt["agent"].as_str().unwrap_or("");
            assert!(
                agent.starts_with("local-"),
                "{} ran on {agent:?}: {run}",
                step["name"]
            );
        }
    }
}

#[test]
fn a_run_locally_pipeline_is_recorded_with_its_grown_steps_and_console() {
    let c = cluster();
    let (out, run_id) = run_case(&c, &["ok"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("answer 26"),
        "{}",
        text(&out)
    );
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["name"], "local-ok", "{run}");
    assert_eq!(run["params"]["width"], "3", "{run}");
    assert_eq!(run["params"]["label"], "\"fan\"", "{run}");
    let names: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "driver",
        "square",
        "square_1",
        "square_2",
        "add_all",
        "square_plus_one",
        "square_3",
    ] {
        assert!(names.contains(&name), "no step {name} in {names:?}");
        assert_eq!(Cluster::step(&run, name)["status"], "succeeded", "{run}");
    }
    assert_eq!(Cluster::step(&run, "driver")["driver"], true, "{run}");
    ran_locally(&run);
    let console = log(&c, &run_id, "driver");
    assert!(
        console.contains("pipeline fan: total 5, nested 26"),
        "{console}"
    );
    assert!(log(&c, &run_id, "square_2").contains("squaring 2"));
    // The nested step was added by the component that called it.
    let console = c.http_get(&format!("/api/v1/runs/{run_id}/console"));
    assert!(console.contains("square_plus_one"), "{console}");
    let runs = String::from_utf8_lossy(&c.drover(&["runs"]).stdout).into_owned();
    assert!(runs.contains(&run_id), "{runs}");
}

#[test]
fn a_failing_run_locally_pipeline_is_recorded_failed() {
    let c = cluster();
    let (out, run_id) = run_case(&c, &["raising"]);
    assert!(!out.status.success(), "{}", text(&out));
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or("");
    assert!(
        error.contains("driver driver failed") && error.contains("explode"),
        "{run}"
    );
    assert_eq!(Cluster::step(&run, "explode")["status"], "failed", "{run}");
    assert!(log(&c, &run_id, "explode").contains("ValueError: bad input 7"));
    assert!(log(&c, &run_id, "driver").contains("ComponentFailed"));
    ran_locally(&run);
}

#[test]
fn a_recorded_local_run_fails_after_the_lease_when_its_process_dies() {
    let c = cluster();
    let marker = c.dir.path().join("hanging");
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/python");
    let mut cmd = Command::new("python3");
    cmd.args([SCRIPT, "hang", marker.to_str().unwrap()])
        .env("DROVER_URL", &c.url)
        .env("DROVER_NAMESPACE", &c.ns)
        .env("DROVER_AMQP_URL", &c.amqp)
        .env("PYTHONPATH", sdk)
        .current_dir(c.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("python3");
    wait_until("the pipeline to wait", Duration::from_secs(60), || {
        marker.exists().then_some(()).ok_or("no marker yet")
    });
    child.kill().expect("kill -9 the local run");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let run_id = recorded_run(&stdout).unwrap_or_else(|| panic!("not recorded: {stdout}"));
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or("");
    assert!(error.contains("presumed gone"), "{run}");
    assert_eq!(
        Cluster::step(&run, "square")["status"],
        "succeeded",
        "{run}"
    );
}

#[test]
fn start_locally_with_local_steps_is_recorded() {
    let c = cluster();
    let (out, run_id) = run_case(&c, &["controller"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("successful True"),
        "{}",
        text(&out)
    );
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["params"]["x"], "5", "{run}");
    assert_eq!(
        Cluster::step(&run, "second")["status"],
        "succeeded",
        "{run}"
    );
    let second = log(&c, &run_id, "second");
    // Parameters travel as text: "5" doubled is "55".
    assert!(second.contains("doubling 55"), "{second:?}\n{}", text(&out));
    ran_locally(&run);
}

#[test]
fn step_callbacks_run_in_the_local_process_and_a_skip_is_recorded() {
    let c = cluster();
    let (out, run_id) = run_case(&c, &["callbacks"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("successful True"), "{stdout}");
    for line in [
        "pre first {'kwargs/x': 2}",
        "pre skipped {'kwargs/x': '${first.y}'}",
        "status first pending -> running",
        "status first running -> completed",
        "status skipped pending -> skipped",
        "post other completed",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("post first completed {run_id}/first")),
        "{stdout}"
    );
    assert!(!stdout.contains("pre after"), "{stdout}");
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let skipped = Cluster::step(&run, "skipped");
    assert_eq!(skipped["status"], "skipped", "{run}");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap_or("")
            .contains("pre_execute_callback"),
        "{run}"
    );
    assert_eq!(Cluster::step(&run, "after")["status"], "skipped", "{run}");
    assert_eq!(Cluster::step(&run, "other")["status"], "succeeded", "{run}");
    ran_locally(&run);
    assert_eq!(run["external"], true, "{run}");
    let shown = c.drover(&["status", &run_id]);
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains("executed by the process that submitted it"),
        "{}",
        text(&shown)
    );
}

#[test]
fn start_locally_runs_the_steps_on_agents_and_their_callbacks_here() {
    let c = cluster();
    let out = c.python(&[SCRIPT, "driven"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("successful True"), "{stdout}");
    let run_id = stdout
        .split("submitted as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .to_string();
    for line in [
        "pre first {'kwargs/x': 2}",
        "held first: pending, waiting for callback",
        "held skipped: pending, waiting for callback",
        "status first pending -> ",
        "status skipped pending -> skipped",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("post first completed {run_id}/first")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("post other completed {run_id}/other")),
        "{stdout}"
    );
    assert!(!stdout.contains("pre after"), "{stdout}");
    let run = status(&c, &run_id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(Cluster::step(&run, "skipped")["status"], "skipped", "{run}");
    assert_eq!(Cluster::step(&run, "after")["status"], "skipped", "{run}");
    assert!(run.get("external").is_none(), "run by agents: {run}");
    let other = Cluster::step(&run, "other");
    assert_eq!(other["status"], "succeeded", "{run}");
    let agent = other["attempts"][0]["agent"].as_str().unwrap_or("");
    assert!(
        !agent.is_empty() && !agent.starts_with("local-"),
        "ran on an agent: {run}"
    );
}
