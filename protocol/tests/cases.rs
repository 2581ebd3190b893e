//! The shared cases in `golden/cases/`: references, names and validation as the controller
//! sees them. The Python SDK runs the same files (`sdk/python/tests/test_cases.py`), so both
//! sides keep one contract; a case changed here changes it for both.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

use drover_protocol::Names;
use drover_protocol::ids::{OutputName, QueueName, StepName};
use drover_protocol::refs::{self, Part, Reference};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::validate::{self, SpecError};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cases")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cases<'a>(file: &'a Value, key: &str) -> &'a Vec<Value> {
    let list = file[key].as_array().unwrap();
    assert!(!list.is_empty(), "no cases under {key:?}");
    list
}

fn reference_json(r: &Reference) -> Value {
    match r {
        Reference::Param(name) => json!({ "param": name }),
        Reference::Output { step, output } => json!({ "step": step, "output": output }),
        Reference::StepId { step } => json!({ "step": step, "id": true }),
        Reference::ArtifactUrl { step, artifact } => {
            json!({ "step": step, "artifact_url": artifact })
        }
    }
}

#[test]
fn references_parse() {
    let file = load("refs.json");
    for case in cases(&file, "parse") {
        let input = case["input"].as_str().unwrap();
        let parts: Vec<Value> = refs::parse(input)
            .iter()
            .map(|part| match part {
                Part::Text(text) => json!({ "text": text }),
                Part::Ref(r) => reference_json(r),
            })
            .collect();
        assert_eq!(Value::from(parts), case["parts"], "parse({input:?})");
    }
}

fn value_of<'a>(values: &'a serde_json::Map<String, Value>, r: &Reference) -> Option<&'a str> {
    let key = match r {
        Reference::Param(name) => format!("pipeline.{name}"),
        Reference::Output { step, output } => format!("{step}.{output}"),
        Reference::StepId { step } => format!("{step}.id"),
        Reference::ArtifactUrl { step, artifact } => format!("{step}.artifacts.{artifact}.url"),
    };
    values.get(&key).map(|v| v.as_str().unwrap())
}

#[test]
fn references_render() {
    let file = load("refs.json");
    for case in cases(&file, "render") {
        let input = case["input"].as_str().unwrap();
        let values = case["values"].as_object().unwrap();
        let rendered = refs::render(input, |r| value_of(values, r).map(String::from));
        assert_eq!(
            rendered,
            case["output"].as_str().unwrap(),
            "render({input:?})"
        );
    }
}

#[test]
fn references_render_partially() {
    let file = load("refs.json");
    for case in cases(&file, "partial") {
        let input = case["input"].as_str().unwrap();
        let values = case["values"].as_object().unwrap();
        let rendered = refs::render_partial(input, |r| value_of(values, r).map(String::from));
        assert_eq!(
            rendered,
            case["output"].as_str().unwrap(),
            "partial({input:?})"
        );
    }
}

/// A kwarg that is exactly one `${STEP.OUTPUT}` and nothing else receives the value itself.
#[test]
fn whole_output_references() {
    let file = load("refs.json");
    for case in cases(&file, "whole") {
        let input = case["input"].as_str().unwrap();
        let whole = match refs::parse(input).as_slice() {
            [Part::Ref(Reference::Output { step, output })] => json!([step, output]),
            _ => Value::Null,
        };
        assert_eq!(whole, case["output"], "whole({input:?})");
    }
}

#[test]
fn names() {
    let file = load("names.json");
    for case in cases(&file, "cases") {
        let kind = case["kind"].as_str().unwrap();
        let value = case["value"].as_str().unwrap();
        let result = match kind {
            "step name" => StepName::new(value).map(|_| ()),
            "output name" => OutputName::new(value).map(|_| ()),
            "queue name" => QueueName::new(value).map(|_| ()),
            "namespace" => Names::new(value).map(|_| ()),
            other => panic!("unknown kind of name {other:?}"),
        };
        match (result, case["valid"].as_bool().unwrap()) {
            (Ok(()), true) => {}
            (Err(e), false) => {
                assert_eq!((e.kind, e.value.as_str()), (kind, value), "{e}");
            }
            (Ok(()), false) => panic!("{kind} {value:?} was accepted"),
            (Err(e), true) => panic!("{kind} {value:?} was refused: {e}"),
        }
    }
}

/// An error as the cases write it: its code and the names it blames, without prose. An
/// `invalid_name` carries only a message, so it is matched against the expected kind and value.
fn error_json(error: &SpecError, expected: &[Value]) -> Value {
    let mut value = serde_json::to_value(error).unwrap();
    let object = value.as_object_mut().unwrap();
    if let SpecError::InvalidName { message } = error {
        return expected
            .iter()
            .find(|e| {
                e["code"] == "invalid_name"
                    && message.starts_with(&format!(
                        "invalid {} {:?}:",
                        e["kind"].as_str().unwrap(),
                        e["name"].as_str().unwrap()
                    ))
            })
            .cloned()
            .unwrap_or_else(|| json!({ "code": "invalid_name", "message": message }));
    }
    for prose in ["error", "reason", "message"] {
        object.remove(prose);
    }
    value
}

fn sorted(values: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut list: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    list.sort();
    list
}

#[test]
fn validation() {
    let file = load("validate.json");
    for case in cases(&file, "cases") {
        let name = case["name"].as_str().unwrap();
        let spec: PipelineSpec = serde_json::from_value(case["spec"].clone()).unwrap();
        let overrides: BTreeMap<String, String> =
            serde_json::from_value(case["overrides"].clone()).unwrap();
        match (validate::validate(&spec, &overrides), case.get("ok")) {
            (Ok(pipeline), Some(ok)) => {
                let order: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(json!(order), ok["order"], "{name}: order");
                for step in &pipeline.steps {
                    let parents: Vec<&str> = step.parents.iter().map(StepName::as_str).collect();
                    let inputs: Vec<[&str; 2]> = step
                        .inputs
                        .iter()
                        .map(|(s, o)| [s.as_str(), o.as_str()])
                        .collect();
                    let step_name = step.name.as_str();
                    assert_eq!(json!(parents), ok["parents"][step_name], "{name}: parents");
                    assert_eq!(json!(inputs), ok["inputs"][step_name], "{name}: inputs");
                }
            }
            (Err(errors), None) => {
                let expected = case["errors"].as_array().unwrap();
                let actual = errors.0.iter().map(|e| error_json(e, expected));
                assert_eq!(
                    sorted(actual),
                    sorted(expected.iter().cloned()),
                    "{name}: {errors}"
                );
            }
            (Ok(_), None) => panic!("{name}: accepted, but the case expects errors"),
            (Err(errors), Some(_)) => panic!("{name}: {errors}"),
        }
    }
}
