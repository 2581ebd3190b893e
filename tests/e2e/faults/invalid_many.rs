//! A hundred generated invalid pipelines, every one rejected with a clear error and
//! nothing queued.

use crate::harness::{Cluster, text};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::Cell;

/// A valid three-step pipeline, as lines, that one mutation makes invalid.
fn valid() -> Vec<String> {
    [
        "[pipeline]",
        "name = \"gen\"",
        "[parameters]",
        "p = { default = \"x\" }",
        "[[step]]",
        "name = \"a\"",
        "command = [\"echo\", \"${pipeline.p}\"]",
        "outputs = { o = \"o.txt\" }",
        "[[step]]",
        "name = \"b\"",
        "command = [\"cat\", \"${a.o}\"]",
        "[[step]]",
        "name = \"c\"",
        "command = [\"true\"]",
        "parents = [\"b\"]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One way to break the pipeline, with text the error must contain.
fn mutation() -> impl Strategy<Value = (Vec<String>, String)> {
    let name = "[a-z]{1,8}";
    prop_oneof![
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"{n}\"\ncommand = [\"cat\", \"${{ghost_{n}.out}}\"]")], format!("ghost_{n}"))),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"{n}\"\ncommand = [\"echo\", \"${{pipeline.nope_{n}}}\"]")], format!("nope_{n}"))),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"x{n}\"\ncommand = [\"cat\", \"${{a.missing_{n}}}\"]")], format!("missing_{n}"))),
        Just((vec!["[[step]]\nname = \"a\"\ncommand = [\"true\"]".to_string()], "duplicate step name \"a\"".to_string())),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"e{n}\"\ncommand = []")], "empty command".to_string())),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"y{n}\"\ncommand = [\"true\"]\nparents = [\"z{n}\"]\n[[step]]\nname = \"z{n}\"\ncommand = [\"true\"]\nparents = [\"y{n}\"]")], " -> ".to_string())),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"o{n}\"\ncommand = [\"true\"]\noutputs = {{ \"../{n}\" = \"x\" }}")], "invalid output name".to_string())),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"t{n}\"\ncommand = [\"true\"]\ntiemout = \"1s\"")], "tiemout".to_string())),
        name.prop_map(|n| (vec![format!("[[step]\nname = \"{n}\"")], "line".to_string())),
        name.prop_map(|n| (vec![format!("[[step]]\nname = \"bad/{n}\"\ncommand = [\"true\"]")], format!("bad/{n}"))),
    ]
}

#[test]
fn a_hundred_generated_invalid_pipelines_are_all_rejected() {
    let c = Cluster::up(1, &["default"]);
    let mut runner = TestRunner::new(Config {
        cases: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let n = Cell::new(0);
    runner
        .run(&mutation(), |(extra, expected)| {
            n.set(n.get() + 1);
            let mut lines = valid();
            lines.extend(extra);
            let file = c.pipeline("gen.toml", &lines.join("\n"));
            let out = c.drover(&["run", file.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            prop_assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            prop_assert!(
                err.contains(&expected),
                "wanted {:?} in:\n{}",
                expected,
                err
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(n.get(), 100);
    let runs = c.json(&["runs", "--json"]);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
    let queues = c.json(&["queues", "--json"]);
    let queued: u64 = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["messages"].as_u64())
        .sum();
    assert_eq!(queued, 0, "{queues}");
}
