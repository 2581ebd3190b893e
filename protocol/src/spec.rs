//! The pipeline spec as users write it (TOML) and as it travels in a `Submit` (msgpack).
//!
//! This is the unchecked form; [`crate::validate`] turns it into a [`crate::validate::Pipeline`].
//! Unknown fields are rejected so a typo (`tiemout`) is an error, not a silently ignored setting.

use crate::message::ArtifactRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole pipeline: metadata, parameters and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub pipeline: PipelineMeta,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
    #[serde(default, rename = "step")]
    pub steps: Vec<StepSpec>,
}

/// Name, project and version, as in ClearML's `PipelineController(name, project, version)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineMeta {
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub version: String,
    #[serde(default = "default_queue")]
    pub default_queue: String,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_queue() -> String {
    "default".to_string()
}

/// A pipeline parameter; without a default it must be given at submit time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub param_type: Option<String>,
}

/// One step: either a `command` (argv) or a Python `function`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub function: Option<FunctionSpec>,
    /// Output name -> path relative to the step's workdir (command steps).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A duration such as `90s` or `10m`.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: u32,
    /// Delay before the first retry, doubled for each further one (default `1s`).
    #[serde(default)]
    pub retry_backoff: Option<String>,
    #[serde(default)]
    pub cache: bool,
    #[serde(default)]
    pub continue_on_fail: bool,
    /// 0 (default) to 9: among the jobs waiting on a queue, higher priorities are taken first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// The pipeline's driver: the function step that runs a decorator pipeline's function and
    /// adds the component steps while it runs. At most one per pipeline; it runs on the
    /// reserved `drivers` queue and has no parents. A pipeline with a driver is dynamic.
    #[serde(default, skip_serializing_if = "is_false")]
    pub driver: bool,
    /// Once its parents are done the step waits, "waiting for callback", until the process
    /// running the pipeline's logic lets it run or skips it (its `pre_execute_callback`),
    /// through `POST /api/v1/runs/{run}/steps/{step}/callback`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub await_callback: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A Python function step, shipped as source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Source of the function and its helper functions.
    pub source: String,
    /// Name of the function to call.
    pub entry: String,
    /// Keyword arguments as JSON text. A JSON string may hold references: exactly
    /// `"${STEP.OUTPUT}"` passes the unpickled artifact, `${pipeline.P}` is substituted.
    #[serde(default)]
    pub kwargs: BTreeMap<String, String>,
    /// Names of the return values; each becomes an output artifact (pickled).
    #[serde(default)]
    pub returns: Vec<String>,
    /// pip requirement specifiers, e.g. `pandas==2.3.3`.
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Python version wanted, e.g. `3.11`; the agent's own when unset.
    #[serde(default)]
    pub python: Option<String>,
    /// Keyword arguments passed as stored blobs (pickled by the caller and uploaded before the
    /// step was added): the function receives the unpickled value. A name is in `kwargs` or
    /// here, never both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blobs: BTreeMap<String, ArtifactRef>,
    /// `false`: the step always starts in a new interpreter, never forked from an agent's warm
    /// parent (for a step that must not share anything its libraries did at import time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prewarm: Option<bool>,
}

/// A TOML document that is not a pipeline spec.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl PipelineSpec {
    /// Parses a pipeline file; the error carries toml's line/column and a pointer to the culprit.
    pub fn from_toml(text: &str) -> Result<Self, ParseError> {
        toml::from_str(text).map_err(|e| ParseError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
[pipeline]
name = "hello"
project = "examples"
version = "1.0"

[parameters]
who = { default = "world", description = "who to greet" }

[[step]]
name = "greet"
command = ["sh", "-c", "echo hello ${pipeline.who} > greeting.txt"]
outputs = { greeting = "greeting.txt" }
retries = 2
"#;

    #[test]
    fn parses_the_documented_format() {
        let spec = PipelineSpec::from_toml(HELLO).unwrap();
        assert_eq!(spec.pipeline.default_queue, "default");
        assert_eq!(spec.parameters["who"].default.as_deref(), Some("world"));
        assert_eq!(spec.steps[0].outputs["greeting"], "greeting.txt");
        assert_eq!(spec.steps[0].retries, 2);
    }

    #[test]
    fn malformed_toml_says_where() {
        let err = PipelineSpec::from_toml("[pipeline]\nname = \"x\"\n[[step]\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn typos_are_rejected() {
        let err = PipelineSpec::from_toml(
            "[pipeline]\nname = \"x\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\ntiemout = \"1s\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tiemout"), "{err}");
    }
}
