//! Invalid pipelines are rejected before anything is queued, naming the culprit; so are steps
//! and agents on a queue the namespace uses itself.

use crate::harness::{Cluster, text};
use std::process::Stdio;
use std::time::{Duration, Instant};

const HEADER: &str = "[pipeline]\nname = \"bad\"\n";

fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "cycle",
            format!(
                "{HEADER}[[step]]\nname = \"a\"\ncommand = [\"true\"]\nparents = [\"b\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\nparents = [\"a\"]\n"
            ),
            " -> ",
        ),
        (
            "unknown step",
            format!("{HEADER}[[step]]\nname = \"a\"\ncommand = [\"cat\", \"${{ghost.out}}\"]\n"),
            "${ghost.out}",
        ),
        (
            "unknown parameter",
            format!(
                "{HEADER}[[step]]\nname = \"a\"\ncommand = [\"echo\", \"${{pipeline.nope}}\"]\n"
            ),
            "${pipeline.nope}",
        ),
        (
            "unknown output",
            format!(
                "{HEADER}[[step]]\nname = \"a\"\ncommand = [\"true\"]\noutputs = {{ x = \"x\" }}\n[[step]]\nname = \"b\"\ncommand = [\"cat\", \"${{a.y}}\"]\n"
            ),
            "${a.y}",
        ),
        (
            "duplicate step",
            format!(
                "{HEADER}[[step]]\nname = \"a\"\ncommand = [\"true\"]\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n"
            ),
            "duplicate step name \"a\"",
        ),
        (
            "missing parameter",
            format!(
                "{HEADER}[parameters]\nneeded = {{}}\n[[step]]\nname = \"a\"\ncommand = [\"echo\", \"${{pipeline.needed}}\"]\n"
            ),
            "--param needed=",
        ),
        (
            "empty command",
            format!("{HEADER}[[step]]\nname = \"a\"\ncommand = []\n"),
            "empty command",
        ),
        (
            "escaping output",
            format!(
                "{HEADER}[[step]]\nname = \"a\"\ncommand = [\"true\"]\noutputs = {{ \"..\" = \"x\" }}\n"
            ),
            "invalid output name \"..\"",
        ),
        (
            "a requirement that is an installer option",
            format!(
                "{HEADER}[[step]]\nname = \"f\"\nfunction = {{ source = \"def f():\\n    return None\\n\", entry = \"f\", requirements = [\"six\", \"--index-url=https://evil.example/simple\"] }}\n"
            ),
            "requirement \"--index-url=https://evil.example/simple\" starts with '-'",
        ),
        (
            "malformed toml",
            format!("{HEADER}[[step]\nname = \"a\"\n"),
            "line 3",
        ),
    ]
}

#[test]
fn invalid_pipelines_are_rejected_with_the_culprit_and_nothing_is_queued() {
    let c = Cluster::up(1, &["default"]);
    for (what, toml, culprit) in cases() {
        let file = c.pipeline("bad.toml", &toml);
        let out = c.drover(&["run", file.to_str().unwrap(), "--wait"]);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {shown}");
        assert!(
            shown.contains(culprit),
            "{what}: expected {culprit:?} in\n{shown}"
        );
    }
    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
    let queues = c.json(&["queues", "--json"]);
    let services = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "services")
        .cloned()
        .unwrap_or_default();
    assert_eq!(services["messages"], 0, "{queues}");
}

#[test]
fn a_queue_the_namespace_uses_itself_is_refused_at_submit_and_at_start() {
    let mut c = Cluster::up(1, &["default"]);
    let events = format!("{}.events", c.ns);

    let toml =
        format!("{HEADER}[[step]]\nname = \"a\"\ncommand = [\"true\"]\nqueue = \"events\"\n");
    let file = c.pipeline("own.toml", &toml);
    let (out, run) = c.run_wait(&file, &[]);
    assert_eq!(run["status"], "rejected", "{}", text(&out));
    let status = c.json(&["status", run["run_id"].as_str().unwrap(), "--json"]);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("step a: queue \"events\"") && error.contains(&events),
        "{status}"
    );

    // An agent serving it stops at start, saying why.
    c.start_agent("own", &["events"]);
    let exit = c.wait_exit("own", Duration::from_secs(30));
    let log = c.process_log("own");
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains("--queue events") && log.contains(&events),
        "{log}"
    );

    // So does `drover up`, before its controller starts.
    let data = c.dir.path().join("own-up");
    let mut up = c
        .command()
        .args(["up", "--queue", "events", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drover up");
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.try_wait().expect("wait for drover up").is_none() {
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("drover up --queue events still runs after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = up.wait_with_output().expect("drover up output");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("--queue events") && said.contains(&events),
        "{said}"
    );
    assert!(
        !data.exists(),
        "drover up made its data dir before refusing: {said}"
    );
}
