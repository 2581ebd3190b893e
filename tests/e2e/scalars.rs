//! Scalars from a Python function step (ClearML's `Logger.report_scalar`) through a real agent's
//! channel to the controller: readable while the step still runs, and `drover scalars` returns
//! exactly what was reported.

use crate::harness::{Cluster, text, wait_until};
use serde_json::Value;
use std::time::Duration;

/// `(title, series, [(iteration, value)])` of one series.
pub(crate) type Series = (String, String, Vec<(i64, f64)>);

pub(crate) const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/scalars.py");

/// `(title, series, [(iteration, value)])` as `tests/e2e/py/scalars.py` reports them, in the
/// order the controller lists them (title, then series).
pub(crate) fn reported() -> Vec<Series> {
    let mut all = Vec::new();
    for (t, title) in ["loss", "accuracy"].iter().enumerate() {
        for (s, series) in ["train", "test"].iter().enumerate() {
            let points = (0..5)
                .map(|i| (i, t as f64 * 10.0 + s as f64 + i as f64 * 0.25))
                .collect();
            all.push((title.to_string(), series.to_string(), points));
        }
    }
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

/// The series of a `ScalarList` document as `(title, series, points)`.
pub(crate) fn series_of(list: &Value) -> Vec<Series> {
    list["series"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| {
            let points = serde_json::from_value(s["points"].clone()).unwrap();
            (
                s["title"].as_str().unwrap().to_string(),
                s["series"].as_str().unwrap().to_string(),
                points,
            )
        })
        .collect()
}

/// Submits the scalars pipeline; its run id and the file that lets its step finish.
pub(crate) fn submit(c: &Cluster) -> (String, std::path::PathBuf) {
    let go = c.dir.path().join("go");
    let out = c.python(&[SCRIPT, go.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let runs = c.json(&["runs", "--json"]);
    let run = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    (run, go)
}

#[test]
fn a_steps_scalars_are_stored_live_and_listed_by_drover_scalars() {
    let c = Cluster::up(1, &["default"]);
    let (run, go) = submit(&c);

    // Live: every point is readable while the step waits for `go`.
    let live = wait_until(
        "the step's 20 points through the API",
        Duration::from_secs(90),
        || {
            let body = c.http_get(&format!("/api/v1/runs/{run}/scalars?step=report"));
            match serde_json::from_str::<Value>(&body) {
                Ok(list) if series_of(&list) == reported() => Ok(list),
                _ => Err(body),
            }
        },
    );
    let status = c.json(&["status", &run, "--json"]);
    let step = Cluster::step(&status, "report");
    assert_eq!(step["status"], "running", "read while running: {status}");
    for s in live["series"].as_array().unwrap() {
        assert_eq!(s["step"], "report", "{s}");
        assert_eq!(s["stride"], 1, "{s}");
        assert_eq!(s["count"], 5, "{s}");
    }

    std::fs::write(&go, b"").unwrap();
    let ended = c.json(&["wait", &run, "--json"]);
    assert_eq!(ended["status"], "succeeded", "{ended}");

    let listed = c.json(&["scalars", "latest", "report", "--json"]);
    assert_eq!(listed["run_id"], run.as_str(), "{listed}");
    assert_eq!(series_of(&listed), reported(), "{listed}");
    // The whole run's list holds the same, as there is one step.
    let all = c.json(&["scalars", &run, "--json"]);
    assert_eq!(series_of(&all), reported(), "{all}");

    let table = c.drover(&["scalars", &run, "report"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("loss") && l.contains("test"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["report", "loss", "test", "5", "4", "2"], "{table}");

    let missing = c.drover(&["scalars", &run, "nope"]);
    assert!(!missing.status.success(), "{}", text(&missing));
    assert!(text(&missing).contains("nope"), "{}", text(&missing));
}
