//! The seed: ClearML's "Pipeline from Functions" script, only its import changed, on `drover up`
//! with real per-requirements virtualenvs; then the all-cached re-run.

use crate::harness::{Cluster, text};
use serde_json::Value;
use std::time::Instant;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn run_seed(c: &Cluster) -> (Value, f64) {
    let start = Instant::now();
    let out = c.python(&[&format!("{EXAMPLES}/pipeline_from_functions.py")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pipeline completed"),
        "{}",
        text(&out)
    );
    let out = c.drover(&["wait", "latest", "--json"]);
    let elapsed = start.elapsed().as_secs_f64();
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "{}\nup log:\n{}",
        text(&out),
        c.process_log("up")
    );
    (run, elapsed)
}

#[test]
fn seed_pipeline_runs_then_reruns_from_cache() {
    let c = Cluster::up_with(1, &["default"], &["--python-env", "venv"]);
    let out = c.python(&[&format!("{EXAMPLES}/make_iris_pickle.py")]);
    assert!(out.status.success(), "{}", text(&out));

    let (run, first) = run_seed(&c);
    assert_eq!(run["status"], "succeeded", "{run}");
    for step in ["step_one", "step_two", "step_three"] {
        assert_eq!(run["steps"][step], "succeeded", "{run}");
    }
    let run_id = run["run_id"].as_str().unwrap();
    let model = c.dir.path().join("model.pkl");
    let out = c.drover(&[
        "artifacts",
        "get",
        run_id,
        "step_three",
        "model",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let check = format!(
        "import pickle\nfrom sklearn.datasets import load_iris\nm = pickle.load(open({:?}, 'rb'))\n\
         iris = load_iris()\nprint(round((m.predict(iris.data) == iris.target).mean(), 2))",
        model.display().to_string()
    );
    let out = c.python(&["-c", &check]);
    assert!(out.status.success(), "{}", text(&out));
    let accuracy: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(accuracy > 0.9, "accuracy {accuracy}");

    let (rerun, cached) = run_seed(&c);
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    assert_ne!(rerun["run_id"], run["run_id"]);
    for step in ["step_one", "step_two", "step_three"] {
        assert_eq!(rerun["steps"][step], "cached", "{rerun}");
    }
    eprintln!(
        "seed: first run {first:.2}s, all-cached re-run {cached:.2}s (script start to `drover wait` end)"
    );
}
