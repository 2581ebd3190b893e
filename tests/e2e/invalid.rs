//! Invalid pipelines are rejected before anything is queued, naming the culprit.

use crate::harness::{Cluster, text};

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
