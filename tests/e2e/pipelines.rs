//! Pipelines that run: the diamond example, failures, raw logs, queues served by different agents.

use crate::harness::{Cluster, text, wait_until};
use serde_json::Value;
use std::time::Duration;

fn hello_toml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.toml"))
        .expect("examples/hello.toml")
}

fn step_status<'a>(run: &'a Value, step: &str) -> &'a str {
    run["steps"][step].as_str().unwrap_or("missing")
}

#[test]
fn hello_diamond_runs_and_serves_artifacts_and_logs() {
    hello_diamond(&Cluster::up(2, &["default"]));
}

/// The diamond example with artifacts flowing, `drover artifacts get`, logs and listings; also
/// run on an S3 store (`artifacts.rs`). Returns the run id.
pub(crate) fn hello_diamond(c: &Cluster) -> String {
    let file = c.pipeline("hello.toml", &hello_toml());
    let (out, run) = c.run_wait(&file, &["--param", "who=drover"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(run["status"], "succeeded", "{run}");
    for step in ["greet", "upper", "count", "report"] {
        assert_eq!(step_status(&run, step), "succeeded", "{run}");
    }
    let run_id = run["run_id"].as_str().expect("run id");
    assert!(
        run["url"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("/runs/{run_id}"))
    );

    let report = c.dir.path().join("report.txt");
    let out = c.drover(&[
        "artifacts",
        "get",
        run_id,
        "report",
        "report",
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "HELLO DROVER (13 bytes)\n"
    );

    let out = c.drover(&["logs", run_id, "greet"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("greeting drover"),
        "{}",
        text(&out)
    );

    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"][0]["run_id"], run_id, "{runs}");
    let status = c.json(&["status", run_id, "--json"]);
    let names: Vec<&str> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"greet"));
    assert_eq!(names.last(), Some(&"report"));

    let page = c.drover(&["artifacts", "get", run_id, "report", "nope"]);
    assert!(!page.status.success());
    assert!(
        String::from_utf8_lossy(&page.stderr).contains("no artifact"),
        "{}",
        text(&page)
    );
    run_id.to_string()
}

const FAILING: &str = r#"
[pipeline]
name = "failing"
[[step]]
name = "a"
command = ["sh", "-c", "echo a > a.txt"]
outputs = { out = "a.txt" }
[[step]]
name = "bad"
command = ["sh", "-c", "echo boom-from-bad; cat ${a.out}; exit 3"]
outputs = { out = "never.txt" }
[[step]]
name = "after_bad"
command = ["cat", "${bad.out}"]
[[step]]
name = "good"
command = ["sh", "-c", "sleep 0.5; cat ${a.out}"]
"#;
// `good` sleeps as its workload: the other branch is still running when `bad` fails.

#[test]
fn failing_step_fails_run_skips_descendants_and_finishes_other_branch() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline("failing.toml", FAILING);
    let out = c.drover(&["run", file.to_str().unwrap(), "--wait"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("step bad failed"), "{shown}");
    assert!(shown.contains("exit code 3"), "{shown}");
    assert!(shown.contains("boom-from-bad"), "log tail missing: {shown}");
    assert!(shown.contains("skipped: after_bad"), "{shown}");

    let runs = c.json(&["runs", "--json"]);
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let status = c.json(&["status", &run_id, "--json"]);
    assert_eq!(status["status"], "failed");
    let by_name = |n: &str| {
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(by_name("bad"), "failed");
    assert_eq!(by_name("after_bad"), "skipped");
    assert_eq!(by_name("good"), "succeeded");
}

#[test]
fn logs_keep_raw_bytes() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline(
        "raw.toml",
        r#"
[pipeline]
name = "raw"
[[step]]
name = "noisy"
command = ["sh", "-c", '''printf '10%%\r50%%\r100%%\n\377\376 not utf-8\n'; printf 'to stderr\n' >&2''']
"#,
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    let out = c.drover(&["logs", run_id, "noisy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stdout
            .starts_with(b"10%\r50%\r100%\n\xff\xfe not utf-8\n"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.ends_with(b"to stderr\n"));
    let followed = c.drover(&["logs", run_id, "noisy", "--follow"]);
    assert_eq!(followed.stdout, out.stdout);
}

#[test]
fn steps_run_on_the_agents_serving_their_queues() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("agent-one", &["q1"]);
    c.start_agent("agent-two", &["q2"]);
    let file = c.pipeline(
        "two.toml",
        r#"
[pipeline]
name = "two-queues"
[[step]]
name = "first"
queue = "q1"
command = ["sh", "-c", "echo one > one.txt"]
outputs = { one = "one.txt" }
[[step]]
name = "second"
queue = "q2"
command = ["cat", "${first.one}"]
"#,
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(
        out.status.success(),
        "{}\nagent-one: {}",
        text(&out),
        c.process_log("agent-one")
    );
    let run_id = run["run_id"].as_str().unwrap();
    let status = c.json(&["status", run_id, "--json"]);
    let agent_of = |i: usize| {
        status["steps"][i]["attempts"][0]["agent"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(agent_of(0), "agent-one", "{status}");
    assert_eq!(agent_of(1), "agent-two", "{status}");

    let agents = c.json(&["agents", "--json"]);
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"agent-one") && ids.contains(&"agent-two"),
        "{agents}"
    );

    // A step on a queue nobody serves waits, and `drover queues` says so.
    let lonely = c.pipeline(
        "lonely.toml",
        "[pipeline]\nname = \"lonely\"\n[[step]]\nname = \"waits\"\nqueue = \"nobody\"\ncommand = [\"true\"]\n",
    );
    c.queues.push("nobody".into());
    let out = c.drover(&["run", lonely.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let queue = wait_until("the idle queue warning", Duration::from_secs(20), || {
        let doc = c.json(&["queues", "--json"]);
        doc["queues"]
            .as_array()?
            .iter()
            .find(|q| q["name"] == "nobody" && q["waiting_steps"] == 1)
            .cloned()
    });
    assert_eq!(queue["consumers"], 0, "{queue}");
    assert!(
        queue["warning"].as_str().unwrap_or("").contains("nobody"),
        "{queue}"
    );
    let out = c.drover(&["queues"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("warning"),
        "{}",
        text(&out)
    );
}
