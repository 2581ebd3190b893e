//! A controller restarted on the same data dir still lists and serves finished runs.

use crate::harness::{Cluster, text};

#[test]
fn restarted_controller_serves_finished_runs() {
    let mut c = Cluster::up(1, &["default"]);
    let file = c.pipeline(
        "one.toml",
        "[pipeline]\nname = \"one\"\n[[step]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"echo kept > k.txt; echo logged\"]\noutputs = { k = \"k.txt\" }\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap().to_string();

    c.kill("up");
    c.start_controller_with(&["controller".to_string()]);

    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str(), "{runs}");
    assert_eq!(runs["runs"][0]["status"], "succeeded", "{runs}");
    let out = c.drover(&["artifacts", "get", &run_id, "a", "k", "-o", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\n",
        "{}",
        text(&out)
    );
    let out = c.drover(&["logs", &run_id, "a"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "logged\n",
        "{}",
        text(&out)
    );
}
