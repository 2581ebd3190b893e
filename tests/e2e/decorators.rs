//! Decorator pipelines through the SDK: a driver on the drivers queue adds component steps while
//! it runs; lazy values, parallel components, values built by the driver, nesting, failures,
//! component callbacks (in the driver, and in the calling process under `run_locally()`) and a
//! driver whose agent is killed (replay, and a replay that diverges).

use crate::harness::{Cluster, text, wait_until};
use serde_json::Value;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/decorators.py");

/// `drover up` with one agent of `concurrency` slots on `default` (and the drivers agent `up`
/// starts by itself).
fn cluster(concurrency: u32) -> Cluster {
    let slots = concurrency.to_string();
    let mut c = Cluster::up_with(1, &["default"], &["--concurrency", &slots]);
    c.queues.push("drivers".into());
    c
}

/// Submits a case with the SDK (the call returns once the run is submitted), waits for it and
/// returns its full status document.
fn submit_and_wait(c: &Cluster, args: &[&str]) -> Value {
    submit(c, args);
    finished(c)
}

/// Waits for the latest run to end; its full status document.
fn finished(c: &Cluster) -> Value {
    let out = c.drover(&["wait", "latest", "--json"]);
    let summary: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    c.json(&["status", run_id(&summary), "--json"])
}

fn submit(c: &Cluster, args: &[&str]) {
    let mut full = vec![SCRIPT];
    full.extend_from_slice(args);
    let out = c.python(&full);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("submitted as run"), "{stdout}");
    assert!(stdout.contains("pipeline submitted"), "{stdout}");
}

fn run_id(run: &Value) -> &str {
    run["run_id"].as_str().unwrap()
}

fn log(c: &Cluster, run: &str, step: &str) -> String {
    let out = c.drover(&["logs", run, step]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn steps_named<'a>(run: &'a Value, base: &str) -> Vec<&'a Value> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let name = s["name"].as_str().unwrap();
            name == base
                || name
                    .strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect()
}

#[test]
fn lazy_values_wait_and_load_in_every_use() {
    let c = cluster(2);
    let run = submit_and_wait(&c, &["lazy"]);
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    assert!(console.contains("printed 7"), "{console}");
    assert!(console.contains("lazy ok"), "{console}");
    let driver = Cluster::step(&run, "driver");
    assert_eq!(driver["driver"], true, "{driver}");
    // make, ident (7), ident (the reference to make's numbers) were added by the driver
    assert_eq!(steps_named(&run, "ident").len(), 2, "{run}");
    let edge = Cluster::step(&run, "ident_1");
    assert_eq!(edge["parents"], serde_json::json!(["make"]), "{edge}");
}

#[test]
fn eight_components_run_at_once_on_eight_slots() {
    let c = cluster(8);
    let run = submit_and_wait(&c, &["parallel"]);
    assert_eq!(run["status"], "succeeded", "{run}");
    let naps = steps_named(&run, "nap");
    assert_eq!(naps.len(), 8, "{run}");
    let attempt = |s: &Value, field: &str| s["attempts"][0][field].as_u64().unwrap();
    // All eight ran at once: every nap started before any nap ended (run one after another,
    // the last start would come after the first end).
    let last_start = naps.iter().map(|s| attempt(s, "started_at")).max().unwrap();
    let first_end = naps.iter().map(|s| attempt(s, "ended_at")).min().unwrap();
    assert!(
        last_start < first_end,
        "a nap started at {last_start} after another ended at {first_end}: {run}"
    );
    assert!(log(&c, run_id(&run), "driver").contains("parallel total 28"));
}

#[test]
fn a_set_and_a_dataframe_built_by_the_driver_reach_a_component() {
    let c = cluster(2);
    let run = submit_and_wait(&c, &["values"]);
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    assert!(
        console.contains("summary {'tags': ['a', 'b', 'c'], 'rows': 3, 'sum': 6}"),
        "{console}"
    );
}

#[test]
fn fan_out_and_fan_in() {
    let c = cluster(4);
    let run = submit_and_wait(&c, &["fanout"]);
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    assert_eq!(steps_named(&run, "square").len(), 8, "{run}");
    assert!(console.contains("fanout total 140"), "{console}");
}

#[test]
fn a_component_calls_a_component_on_a_one_slot_agent() {
    let c = cluster(1);
    let run = submit_and_wait(&c, &["nested"]);
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    assert!(console.contains("nested result 17"), "{console}");
    Cluster::step(&run, "square_plus_one");
    Cluster::step(&run, "square");
}

#[test]
fn a_raising_component_fails_the_run_naming_the_step() {
    let c = cluster(2);
    let run = submit_and_wait(&c, &["raising"]);
    assert_eq!(run["status"], "failed", "{run}");
    let console = log(&c, run_id(&run), "driver");
    assert!(
        console.contains("component step 'explode' failed"),
        "{console}"
    );
    assert!(
        log(&c, run_id(&run), "explode").contains("ValueError: bad input 7"),
        "{run}"
    );
    assert!(!console.contains("never printed 7"), "{console}");
    // The run's error says how the driver ended and names the component step that failed.
    let error = run["error"].as_str().unwrap_or("");
    assert!(error.starts_with("driver driver failed"), "{run}");
    assert!(error.ends_with("; failed step(s): explode"), "{run}");
}

#[test]
fn multi_instance_pipelines_are_waited_for_with_their_return_values() {
    let c = cluster(2);
    let out = c.python(&[SCRIPT, "multi"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("submitted as run").count(), 2, "{stdout}");
    assert!(
        stdout.contains("results [{'x': 2, 'squared': 4}, {'x': 3, 'squared': 9}]"),
        "{stdout}"
    );
}

/// A controller, a worker on `default` and the first drivers agent as separate processes, so
/// the test can kill the driver's agent.
fn split_cluster() -> Cluster {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("worker", &["default"]);
    c.start_agent_with("drivers-1", &["drivers"], &["--services-mode"]);
    c
}

/// Submits the replay case, waits until its first driver attempt waits to be killed, kills its
/// agent and starts another drivers agent; returns the finished run.
fn kill_the_driver_agent(case: &str) -> (Cluster, Value) {
    let mut c = split_cluster();
    let marker = c.dir.path().join("markers");
    std::fs::create_dir_all(&marker).unwrap();
    submit(&c, &[case, marker.to_str().unwrap()]);
    let waiting = marker.join("driver-waiting");
    wait_until(
        "the driver's first attempt",
        Duration::from_secs(120),
        || waiting.exists().then_some(()),
    );
    c.kill("drivers-1");
    c.start_agent_with("drivers-2", &["drivers"], &["--services-mode"]);
    let run = finished(&c);
    (c, run)
}

#[test]
fn a_driver_whose_agent_dies_replays_on_another_without_running_a_component_twice() {
    let (c, run) = kill_the_driver_agent("replay");
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    let driver = Cluster::step(&run, "driver");
    let outcomes: Vec<&str> = driver["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"], "{driver}");
    for step in steps_named(&run, "square") {
        let attempts = step["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{step}");
        assert_eq!(attempts[0]["outcome"], "succeeded", "{step}");
    }
    assert_eq!(steps_named(&run, "square").len(), 2, "{run}");
    // the set and the DataFrame the driver built were pickled again, to the same digest
    let describe = steps_named(&run, "describe");
    assert_eq!(describe.len(), 1, "{run}");
    assert_eq!(
        describe[0]["attempts"].as_array().unwrap().len(),
        1,
        "{run}"
    );
    assert!(
        console.contains("[replay] first value 9 rows 10"),
        "{console}"
    );
    assert!(console.contains("second value 81"), "{console}");
    assert!(!console.contains("[replay] second value"), "{console}");
}

#[test]
fn a_replay_that_makes_another_call_fails_the_run_naming_the_call() {
    let (c, run) = kill_the_driver_agent("diverge");
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "failed", "{run}\n{console}");
    assert!(console.contains("replay diverged at call 0"), "{console}");
    let error = run["error"].as_str().unwrap_or("");
    assert!(error.starts_with("driver driver failed"), "{run}");
    assert!(
        console.contains("now calls component cube"),
        "the error names both calls: {console}"
    );
    assert!(steps_named(&run, "cube").is_empty(), "{run}");
}

/// The lines of `console` that the case's callbacks printed must include each of `lines`.
fn assert_lines(console: &str, lines: &[&str]) {
    for line in lines {
        assert!(console.contains(line), "no {line:?} in:\n{console}");
    }
}

#[test]
fn component_callbacks_run_in_the_driver_and_a_declined_call_gives_none() {
    let c = cluster(2);
    let run = submit_and_wait(&c, &["watched"]);
    let id = run_id(&run);
    let console = log(&c, id, "driver");
    assert_eq!(run["status"], "succeeded", "{run}\n{console}");
    assert_lines(
        &console,
        &[
            "pre watched_double {'kwargs/x': 1} watched",
            "pre watched_double_1 {'kwargs/x': 3} watched",
            "status watched_double_1 pending -> skipped",
            &format!("post watched_double completed {id}/watched_double"),
            // the declined call and the one depending on it give None, as in ClearML
            "values 2 None None",
        ],
    );
    assert!(!console.contains("post watched_double_1"), "{console}");
    let declined = Cluster::step(&run, "watched_double_1");
    assert_eq!(declined["status"], "skipped", "{declined}");
    let why = declined["message"].as_str().unwrap_or("");
    assert!(
        why.contains("pre_execute_callback returned False"),
        "{declined}"
    );
    assert_eq!(Cluster::step(&run, "square")["status"], "skipped", "{run}");
    assert_eq!(
        Cluster::step(&run, "watched_double")["status"],
        "succeeded",
        "{run}"
    );
}

#[test]
fn a_raising_component_callback_fails_the_driver_and_the_run() {
    let c = cluster(1);
    let run = submit_and_wait(&c, &["raising_callback"]);
    let console = log(&c, run_id(&run), "driver");
    assert_eq!(run["status"], "failed", "{run}\n{console}");
    assert_eq!(Cluster::step(&run, "driver")["status"], "failed", "{run}");
    assert!(
        console.contains("RuntimeError: the callback of badly_watched broke"),
        "{console}"
    );
    assert_ne!(
        Cluster::step(&run, "badly_watched")["status"],
        "succeeded",
        "{run}"
    );
}

#[test]
fn component_callbacks_run_in_the_calling_process_under_run_locally() {
    let c = cluster(1);
    let out = c.python(&[SCRIPT, "watched_local"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let id = stdout
        .split("recorded as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no recorded run in {stdout}"))
        .trim()
        .to_string();
    assert_lines(
        &stdout,
        &[
            "pre watched_double {'kwargs/x': 1} watched",
            "pre watched_double_1 {'kwargs/x': 3} watched",
            "status watched_double pending -> running",
            "status watched_double running -> completed",
            "status watched_double_1 pending -> skipped",
            &format!("post watched_double completed {id}/watched_double"),
            "values 2 None None",
        ],
    );
    assert!(!stdout.contains("post watched_double_1"), "{stdout}");
    let run = c.json(&["status", &id, "--json"]);
    assert_eq!(run["status"], "succeeded", "{run}");
    let declined = Cluster::step(&run, "watched_double_1");
    assert_eq!(declined["status"], "skipped", "{declined}");
    assert!(
        declined["message"]
            .as_str()
            .unwrap_or("")
            .contains("pre_execute_callback returned False"),
        "{declined}"
    );
}
