//! Validation tests: every rejection names its culprit.

use super::*;

fn spec(steps: &str) -> PipelineSpec {
    PipelineSpec::from_toml(&format!(
        "[pipeline]\nname = \"p\"\n[parameters]\nwho = {{ default = \"world\" }}\nneeded = {{}}\n{steps}"
    ))
    .unwrap()
}

fn with_needed() -> BTreeMap<String, String> {
    BTreeMap::from([("needed".to_string(), "x".to_string())])
}

fn errors(steps: &str) -> Vec<SpecError> {
    validate(&spec(steps), &with_needed()).unwrap_err().0
}

const DIAMOND: &str = r#"
[[step]]
name = "d"
command = ["sh", "-c", "cat ${b.out} ${c.out}"]
[[step]]
name = "b"
command = ["cp", "${a.out}", "b.txt"]
outputs = { out = "b.txt" }
[[step]]
name = "c"
command = ["cp", "${a.out}", "c.txt"]
outputs = { out = "c.txt" }
[[step]]
name = "a"
command = ["sh", "-c", "echo ${pipeline.who} > a.txt"]
outputs = { out = "a.txt" }
"#;

#[test]
fn diamond_is_ordered_parents_first() {
    let p = validate(&spec(DIAMOND), &with_needed()).unwrap();
    let order: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    let d = &p.steps[3];
    assert_eq!(d.parents.len(), 2);
    assert_eq!(d.inputs.len(), 2);
    assert_eq!(d.queue.as_str(), "default");
    let JobKind::Command { argv } = &p.steps[0].kind else {
        panic!("command expected")
    };
    assert_eq!(argv[2], "echo world > a.txt");
}

#[test]
fn steps_listed_after_their_parents_keep_their_order() {
    let steps = r#"
[[step]]
name = "a"
command = ["true"]
[[step]]
name = "b"
command = ["true"]
[[step]]
name = "c"
command = ["true"]
parents = ["a"]
[[step]]
name = "d"
command = ["true"]
parents = ["c", "b"]
"#;
    let p = validate(&spec(steps), &with_needed()).unwrap();
    let order: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
}

#[test]
fn a_step_that_is_its_own_parent_is_a_cycle() {
    let found = errors("[[step]]\nname = \"a\"\ncommand = [\"true\"]\nparents = [\"a\"]\n");
    assert_eq!(
        found,
        [SpecError::Cycle {
            path: vec!["a".into(), "a".into()]
        }]
    );
}

#[test]
fn overrides_replace_defaults() {
    let mut params = with_needed();
    params.insert("who".into(), "me".into());
    let p = validate(&spec(DIAMOND), &params).unwrap();
    assert_eq!(p.params["who"], "me");
}

#[test]
fn missing_and_unknown_params() {
    let errs = validate(&spec(DIAMOND), &BTreeMap::new()).unwrap_err().0;
    assert!(errs.contains(&SpecError::MissingParam {
        name: "needed".into()
    }));
    let mut params = with_needed();
    params.insert("nope".into(), "1".into());
    let err = validate(&spec(DIAMOND), &params).unwrap_err().to_string();
    assert!(err.contains("\"nope\" is not a parameter"), "{err}");
}

#[test]
fn cycle_is_reported_with_its_path() {
    let errs = errors(
        r#"
[[step]]
name = "a"
command = ["true"]
parents = ["c"]
[[step]]
name = "b"
command = ["true"]
parents = ["a"]
[[step]]
name = "c"
command = ["true"]
parents = ["b"]
"#,
    );
    let [SpecError::Cycle { path }] = errs.as_slice() else {
        panic!("{errs:?}")
    };
    assert_eq!(path.len(), 4);
    assert_eq!(path.first(), path.last());
    let msg = errs[0].to_string();
    assert!(
        msg.contains("a -> b -> c -> a")
            || msg.contains("b -> c -> a -> b")
            || msg.contains("c -> a -> b -> c"),
        "{msg}"
    );
}

#[test]
fn unknown_references_name_the_culprit() {
    let errs = errors(
        r#"
[[step]]
name = "a"
command = ["echo", "${ghost.out}", "${pipeline.nope}", "${b.missing}"]
[[step]]
name = "b"
command = ["true"]
outputs = { out = "o.txt" }
"#,
    );
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("${ghost.out}") && t.contains("unknown step")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("${pipeline.nope}")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("${b.missing}") && t.contains("[\"out\"]")),
        "{text:?}"
    );
}

#[test]
fn duplicates_empty_commands_and_bad_paths() {
    let errs = errors(
        r#"
[[step]]
name = "a"
command = []
[[step]]
name = "a"
command = ["true"]
outputs = { "../x" = "x", y = "../../etc/passwd", z = "/abs" }
[[step]]
name = "n"
"#,
    );
    assert!(errs.contains(&SpecError::DuplicateStep { step: "a".into() }));
    assert!(errs.contains(&SpecError::EmptyCommand { step: "a".into() }));
    assert!(errs.contains(&SpecError::NoCommand { step: "n".into() }));
    assert_eq!(
        errs.iter()
            .filter(|e| matches!(
                e,
                SpecError::BadOutputPath { .. } | SpecError::InvalidName { .. }
            ))
            .count(),
        3,
        "{errs:?}"
    );
}

#[test]
fn bad_durations_queues_and_env() {
    let errs = errors(
        r#"
[[step]]
name = "a"
command = ["true"]
timeout = "soon"
queue = "a/b"
env = { "1X" = "v" }
"#,
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn function_steps_declare_outputs_by_return_name() {
    let mut s = spec("");
    s.steps.push(StepSpec {
        name: "one".into(),
        function: Some(crate::spec::FunctionSpec {
            source: "def f(url): return 1".into(),
            entry: "f".into(),
            kwargs: BTreeMap::from([("url".into(), "\"${pipeline.who}\"".into())]),
            returns: vec!["data_frame".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    s.steps.push(StepSpec {
        name: "two".into(),
        function: Some(crate::spec::FunctionSpec {
            source: "def g(df, n=1): return 2".into(),
            entry: "g".into(),
            kwargs: BTreeMap::from([
                ("df".into(), "\"${one.data_frame}\"".into()),
                ("n".into(), "0.2".into()),
            ]),
            returns: vec!["out".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let p = validate(&s, &with_needed()).unwrap();
    assert_eq!(p.steps[1].parents.iter().next().unwrap().as_str(), "one");
    assert_eq!(
        p.steps[0].outputs.values().next().unwrap(),
        "_outputs/data_frame.pkl"
    );
    let JobKind::Function { kwargs, .. } = &p.steps[0].kind else {
        panic!()
    };
    assert_eq!(kwargs["url"], "\"world\"");
}

#[test]
fn priority_is_kept_and_bounded() {
    let p = validate(
        &spec("[[step]]\nname = \"a\"\ncommand = [\"true\"]\npriority = 7\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n"),
        &with_needed(),
    )
    .unwrap();
    assert_eq!((p.steps[0].priority, p.steps[1].priority), (7, 0));
    let errs = errors("[[step]]\nname = \"a\"\ncommand = [\"true\"]\npriority = 10\n");
    assert_eq!(
        errs,
        [SpecError::BadPriority {
            step: "a".into(),
            priority: 10,
            max: MAX_PRIORITY
        }]
    );
    assert!(
        errs[0].to_string().contains("0 (lowest) to 9"),
        "{}",
        errs[0]
    );
}

#[test]
fn an_added_step_is_checked_against_the_steps_the_pipeline_has() {
    let pipeline = validate(&spec(DIAMOND), &with_needed()).unwrap();
    let added = |text: &str| {
        let step: StepSpec = toml::from_str(text).unwrap();
        validate_added(&pipeline, &step)
    };
    let ok = added("name = \"e\"\ncommand = [\"cat\", \"${c.out}\"]").unwrap();
    assert_eq!(ok.parents, BTreeSet::from([StepName::new("c").unwrap()]));
    let errs = added("name = \"b\"\ncommand = [\"true\"]").unwrap_err().0;
    assert_eq!(errs, vec![SpecError::DuplicateStep { step: "b".into() }]);
    let errs = added("name = \"e\"\ncommand = [\"cat\", \"${c.nope}\"]")
        .unwrap_err()
        .0;
    assert!(
        matches!(&errs[..], [SpecError::UnknownOutput { available, .. }] if available == &["out"]),
        "{errs:?}"
    );
}
