//! Submit-time validation: turns a [`PipelineSpec`] plus parameter overrides into a checked DAG,
//! or into every problem found, each naming its culprit.

use crate::ids::{IdError, OutputName, QueueName, StepName};
use crate::message::JobKind;
use crate::refs::{self, Reference};
use crate::spec::{FunctionSpec, PipelineMeta, PipelineSpec, StepSpec};
use declared::{Declaration, Declared};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

mod declared;
mod requirement;
pub use requirement::{MAX_REQUIREMENT_LEN, check_requirement};

/// Directory (relative to the workdir) where function steps write their pickled return values.
pub const FUNCTION_OUTPUT_DIR: &str = "_outputs";

/// Default delay before the first retry.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1_000;

/// A validated pipeline; steps are in a topological order (parents first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub meta: PipelineMeta,
    /// Every parameter's effective value (default or override).
    pub params: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

/// A validated step with parameters substituted; `${STEP.OUTPUT}` references remain for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: StepName,
    pub kind: JobKind,
    pub queue: QueueName,
    /// Explicit parents plus every step referenced.
    pub parents: BTreeSet<StepName>,
    /// Artifacts consumed: (producer step, output name).
    pub inputs: BTreeSet<(StepName, OutputName)>,
    /// Output name -> path relative to the workdir.
    pub outputs: BTreeMap<OutputName, String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub cache: bool,
    pub continue_on_fail: bool,
    /// 0..=[`MAX_PRIORITY`]; the job is published with it.
    #[serde(default)]
    pub priority: u8,
    /// The run's driver (see [`crate::spec::StepSpec::driver`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub driver: bool,
    /// Held before dispatch until its callback is answered (see
    /// [`crate::spec::StepSpec::await_callback`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub await_callback: bool,
}

impl Pipeline {
    /// The driver step, when this is a dynamic (decorator) pipeline.
    pub fn driver(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.driver)
    }
}

/// The highest step priority; user queues are declared with it as `x-max-priority`.
pub const MAX_PRIORITY: u8 = 9;

/// One problem with a pipeline. `code` is stable for scripts; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SpecError {
    #[error("the pipeline has no name: set [pipeline] name = \"...\"")]
    EmptyPipelineName,
    #[error("the pipeline has no steps: add at least one [[step]]")]
    NoSteps,
    #[error("{message}")]
    InvalidName { message: String },
    #[error("duplicate step name {step:?}: step names must be unique")]
    DuplicateStep { step: String },
    #[error("step {step:?} has neither `command` nor `function`")]
    NoCommand { step: String },
    #[error("step {step:?} has both `command` and `function`; keep one")]
    CommandAndFunction { step: String },
    #[error("step {step:?} has an empty command")]
    EmptyCommand { step: String },
    #[error("step {step:?}: function steps declare outputs with `returns`, not `outputs`")]
    OutputsOnFunction { step: String },
    #[error("step {step:?} output {output:?}: path {path:?} {reason}")]
    BadOutputPath {
        step: String,
        output: String,
        path: String,
        reason: String,
    },
    #[error("step {step:?} lists unknown parent {parent:?}")]
    UnknownParent { step: String, parent: String },
    #[error("step {step:?} references unknown step in {reference}")]
    UnknownStep { step: String, reference: String },
    #[error(
        "step {step:?} references unknown parameter in {reference}; declare it under [parameters]"
    )]
    UnknownParam { step: String, reference: String },
    #[error(
        "step {step:?} references unknown output in {reference}; that step's outputs are: {available:?}"
    )]
    UnknownOutput {
        step: String,
        reference: String,
        available: Vec<String>,
    },
    #[error("step {step:?} references its own output in {reference}")]
    SelfReference { step: String, reference: String },
    #[error("parameter {name:?} has no default and no value: pass --param {name}=VALUE")]
    MissingParam { name: String },
    #[error("--param {name:?} is not a parameter of this pipeline (known: {known:?})")]
    UnknownOverride { name: String, known: Vec<String> },
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error(
        "step {step:?}: {field} {value:?} is not a duration ({error}); write e.g. \"90s\" or \"10m\""
    )]
    BadDuration {
        step: String,
        field: String,
        value: String,
        error: String,
    },
    #[error("step {step:?}: keyword argument {name:?} is not valid JSON ({error})")]
    BadKwarg {
        step: String,
        name: String,
        error: String,
    },
    #[error("step {step:?}: environment variable name {name:?} is not valid")]
    BadEnvName { step: String, name: String },
    #[error(
        "step {step:?}: priority {priority} is out of range; use 0 (lowest) to {max} (highest)"
    )]
    BadPriority { step: String, priority: u8, max: u8 },
    #[error(
        "step {step:?}: requirement {requirement:?} {reason}; give PEP 508 specifiers such as \"pandas==2.3.3\" or \"name @ https://...\", never installer options"
    )]
    BadRequirement {
        step: String,
        requirement: String,
        reason: String,
    },
    #[error(
        "step {step:?}: queue {queue:?} is reserved for drover itself (submissions and pipeline drivers); pick another queue"
    )]
    ReservedQueue { step: String, queue: String },
    #[error("step {step:?}: {reason}")]
    BadDriver { step: String, reason: String },
    #[error("the pipeline has more than one driver step: {steps:?}")]
    SeveralDrivers { steps: Vec<String> },
    #[error("step {step:?}: keyword argument {name:?} is given both as JSON and as a blob")]
    KwargTwice { step: String, name: String },
}

impl From<IdError> for SpecError {
    fn from(e: IdError) -> Self {
        SpecError::InvalidName {
            message: e.to_string(),
        }
    }
}

/// Every problem found in one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid pipeline ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Validates a spec with parameter overrides.
pub fn validate(
    spec: &PipelineSpec,
    overrides: &BTreeMap<String, String>,
) -> Result<Pipeline, SpecErrors> {
    let mut errors = Vec::new();
    if spec.pipeline.name.trim().is_empty() {
        errors.push(SpecError::EmptyPipelineName);
    }
    if spec.steps.is_empty() {
        errors.push(SpecError::NoSteps);
    }
    let params = resolve_params(spec, overrides, &mut errors);
    let default_queue = QueueName::new(&spec.pipeline.default_queue)
        .map_err(|e| errors.push(e.into()))
        .ok();

    // First pass: names, positions and declared outputs, so references can be checked in any
    // order.
    let mut declared = Declared::with_capacity(spec.steps.len());
    for step in &spec.steps {
        if !declared.push(Declaration::Spec(step)) {
            errors.push(SpecError::DuplicateStep {
                step: step.name.clone(),
            });
        }
    }

    let drivers: Vec<String> = spec
        .steps
        .iter()
        .filter(|s| s.driver)
        .map(|s| s.name.clone())
        .collect();
    if drivers.len() > 1 {
        errors.push(SpecError::SeveralDrivers { steps: drivers });
    }

    let mut steps = Vec::with_capacity(spec.steps.len());
    let mut in_order = true;
    for (position, step) in spec.steps.iter().enumerate() {
        let (checked, parents_before) = check_step(
            step,
            position,
            &params,
            &declared,
            default_queue.as_ref(),
            &mut errors,
        );
        in_order &= parents_before;
        steps.extend(checked);
    }
    if errors.is_empty() {
        let ordered = match in_order {
            true => Ok(steps),
            false => topological_order(steps),
        };
        match ordered {
            Ok(steps) => {
                return Ok(Pipeline {
                    meta: spec.pipeline.clone(),
                    params,
                    steps,
                });
            }
            Err(cycle) => errors.push(cycle),
        }
    }
    Err(SpecErrors(errors))
}

/// Validates one step added to a running dynamic pipeline, against the steps it already has:
/// the same checks as at submit (names, references, queues). The added step may reference only
/// steps that exist, so the pipeline stays in topological order with it appended. A driver
/// cannot be added.
pub fn validate_added(pipeline: &Pipeline, spec: &StepSpec) -> Result<Step, SpecErrors> {
    let mut errors = Vec::new();
    let mut declared = Declared::with_capacity(pipeline.steps.len() + 1);
    for step in &pipeline.steps {
        declared.push(Declaration::Step(step));
    }
    let position = pipeline.steps.len();
    if !declared.push(Declaration::Spec(spec)) {
        errors.push(SpecError::DuplicateStep {
            step: spec.name.clone(),
        });
    }
    if spec.driver {
        errors.push(SpecError::BadDriver {
            step: spec.name.clone(),
            reason: "a running pipeline cannot gain a driver".into(),
        });
    }
    let default_queue = QueueName::new(&pipeline.meta.default_queue)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let (step, _) = check_step(
        spec,
        position,
        &pipeline.params,
        &declared,
        default_queue.as_ref(),
        &mut errors,
    );
    match step {
        Some(step) if errors.is_empty() => Ok(step),
        _ => Err(SpecErrors(errors)),
    }
}

fn resolve_params(
    spec: &PipelineSpec,
    overrides: &BTreeMap<String, String>,
    errors: &mut Vec<SpecError>,
) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for name in overrides.keys() {
        if !spec.parameters.contains_key(name) {
            errors.push(SpecError::UnknownOverride {
                name: name.clone(),
                known: spec.parameters.keys().cloned().collect(),
            });
        }
    }
    for (name, p) in &spec.parameters {
        match overrides.get(name).or(p.default.as_ref()) {
            Some(value) => {
                params.insert(name.clone(), value.clone());
            }
            None => errors.push(SpecError::MissingParam { name: name.clone() }),
        }
    }
    params
}

/// Collects the references of one template string, recording parents, inputs and errors.
struct RefChecker<'a> {
    step: &'a str,
    params: &'a BTreeMap<String, String>,
    declared: &'a Declared<'a>,
    /// The checked step's position among the pipeline's steps.
    position: usize,
    /// Whether every parent found so far comes before the checked step.
    parents_before: bool,
    parents: BTreeSet<StepName>,
    inputs: BTreeSet<(StepName, OutputName)>,
    errors: Vec<SpecError>,
}

impl<'a> RefChecker<'a> {
    fn new(
        step: &'a str,
        params: &'a BTreeMap<String, String>,
        declared: &'a Declared<'a>,
        position: usize,
    ) -> Self {
        Self {
            step,
            params,
            declared,
            position,
            parents_before: true,
            parents: BTreeSet::new(),
            inputs: BTreeSet::new(),
            errors: Vec::new(),
        }
    }

    /// Records the explicit parents; each must be a step of the pipeline.
    fn check_parents(&mut self, parents: &[String]) {
        for parent in parents {
            if self.find(parent).is_none() {
                self.errors.push(SpecError::UnknownParent {
                    step: self.step.to_string(),
                    parent: parent.clone(),
                });
            } else if let Ok(p) = StepName::new(parent) {
                self.parents.insert(p);
            }
        }
    }

    /// The step named `other`, which the checked one depends on, noting whether it comes
    /// before it in the pipeline.
    fn find(&mut self, other: &str) -> Option<Declaration<'a>> {
        let (position, declared) = self.declared.get(other)?;
        self.parents_before &= position < self.position;
        Some(declared)
    }

    fn check(&mut self, template: &str) {
        for r in refs::references(template) {
            self.check_one(&r);
        }
    }

    fn check_one(&mut self, r: &Reference) {
        let reference = r.to_string();
        let step = self.step.to_string();
        match r {
            Reference::Param(name) => {
                if !self.params.contains_key(name) {
                    self.errors
                        .push(SpecError::UnknownParam { step, reference });
                }
            }
            Reference::Output {
                step: other,
                output,
            } => {
                if other == self.step {
                    self.errors
                        .push(SpecError::SelfReference { step, reference });
                    return;
                }
                let Some(known) = self.find(other) else {
                    self.errors.push(SpecError::UnknownStep { step, reference });
                    return;
                };
                if !known.has_output(output) {
                    self.errors.push(SpecError::UnknownOutput {
                        step,
                        reference,
                        available: known.output_names(),
                    });
                    return;
                }
                // Names were checked when the producer was declared; skip silently if invalid.
                if let (Ok(s), Ok(o)) = (StepName::new(other), OutputName::new(output)) {
                    self.parents.insert(s.clone());
                    self.inputs.insert((s, o));
                }
            }
            // An id always exists; an artifact may be uploaded while its step runs, so it is
            // looked up when this step is dispatched. Either makes the step a parent.
            Reference::StepId { step: other } | Reference::ArtifactUrl { step: other, .. } => {
                if other == self.step {
                    self.errors
                        .push(SpecError::SelfReference { step, reference });
                    return;
                }
                if self.find(other).is_none() {
                    self.errors.push(SpecError::UnknownStep { step, reference });
                    return;
                }
                if let Ok(s) = StepName::new(other) {
                    self.parents.insert(s);
                }
            }
        }
    }

    /// Substitutes parameters, leaving output references for the agent.
    fn render(&self, template: &str) -> String {
        refs::render_partial(template, |r| match r {
            Reference::Param(name) => self.params.get(name).cloned(),
            _ => None,
        })
    }
}

fn parse_duration_ms(
    step: &str,
    field: &str,
    value: Option<&String>,
    errors: &mut Vec<SpecError>,
) -> Option<u64> {
    let value = value?;
    match humantime::parse_duration(value) {
        Ok(d) => Some(d.as_millis() as u64),
        Err(e) => {
            errors.push(SpecError::BadDuration {
                step: step.to_string(),
                field: field.to_string(),
                value: value.clone(),
                error: e.to_string(),
            });
            None
        }
    }
}

fn check_output_path(step: &str, output: &str, path: &str) -> Result<(), SpecError> {
    let bad = |reason: &str| SpecError::BadOutputPath {
        step: step.to_string(),
        output: output.to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return Err(bad("must be relative to the step's workdir"));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("must not contain '..'"));
    }
    Ok(())
}

/// Checks one step, the one at `position` in its pipeline, and builds it; every problem found
/// goes to `errors`, and `None` means the step is not valid. Also says whether every parent it
/// names comes before it (then nothing needs reordering).
fn check_step(
    spec: &StepSpec,
    position: usize,
    params: &BTreeMap<String, String>,
    declared: &Declared<'_>,
    default_queue: Option<&QueueName>,
    errors: &mut Vec<SpecError>,
) -> (Option<Step>, bool) {
    let step_name = spec.name.as_str();
    let name = StepName::new(step_name)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let queue = if spec.driver {
        check_driver(spec, errors);
        Some(QueueName::drivers())
    } else {
        match &spec.queue {
            Some(q) => QueueName::new(q).map_err(|e| errors.push(e.into())).ok(),
            None => default_queue.cloned(),
        }
        .filter(|q| {
            let ok = !q.is_reserved();
            if !ok {
                errors.push(SpecError::ReservedQueue {
                    step: step_name.to_string(),
                    queue: q.to_string(),
                });
            }
            ok
        })
    };
    let mut checker = RefChecker::new(step_name, params, declared, position);
    checker.check_parents(&spec.parents);
    let kind = check_kind(spec, &mut checker);
    let env = check_env(spec, &mut checker);
    let timeout_ms = parse_duration_ms(step_name, "timeout", spec.timeout.as_ref(), errors);
    let retry_backoff_ms = parse_duration_ms(
        step_name,
        "retry_backoff",
        spec.retry_backoff.as_ref(),
        errors,
    )
    .unwrap_or(DEFAULT_RETRY_BACKOFF_MS);
    let priority = check_priority(spec, errors);

    let RefChecker {
        parents,
        inputs,
        errors: step_errors,
        parents_before,
        ..
    } = checker;
    let ok = step_errors.is_empty();
    errors.extend(step_errors);
    let step = match (kind, name, queue) {
        (Some((kind, outputs)), Some(name), Some(queue)) => Some(Step {
            name,
            kind,
            queue,
            parents,
            inputs,
            outputs,
            env,
            timeout_ms,
            retries: spec.retries,
            retry_backoff_ms,
            cache: spec.cache,
            continue_on_fail: spec.continue_on_fail,
            priority,
            driver: spec.driver,
            await_callback: spec.await_callback,
        }),
        _ => None,
    };
    (
        step.filter(|_| ok && priority <= MAX_PRIORITY),
        parents_before,
    )
}

/// A driver is a function step without parents whose queue, when given, is `drivers`.
fn check_driver(spec: &StepSpec, errors: &mut Vec<SpecError>) {
    let bad = |reason: &str| SpecError::BadDriver {
        step: spec.name.clone(),
        reason: reason.to_string(),
    };
    if spec.function.is_none() {
        errors.push(bad("a driver must be a function step"));
    }
    if !spec.parents.is_empty() {
        errors.push(bad("a driver has no parents"));
    }
    if spec
        .queue
        .as_deref()
        .is_some_and(|q| q != crate::names::DRIVERS_QUEUE)
    {
        errors.push(bad(
            "a driver runs on the `drivers` queue; leave `queue` unset",
        ));
    }
}

/// What the step runs and the outputs it declares; `None` when it has no command and no
/// function, or both.
fn check_kind(
    spec: &StepSpec,
    checker: &mut RefChecker<'_>,
) -> Option<(JobKind, BTreeMap<OutputName, String>)> {
    let step = spec.name.clone();
    match (&spec.command, &spec.function) {
        (None, None) => {
            checker.errors.push(SpecError::NoCommand { step });
            None
        }
        (Some(_), Some(_)) => {
            checker.errors.push(SpecError::CommandAndFunction { step });
            None
        }
        (Some(argv), None) => Some(command_kind(spec, argv, checker)),
        (None, Some(f)) => Some(function_kind(spec, f, checker)),
    }
}

/// A command step: its argv with parameters substituted, and its declared output paths.
fn command_kind(
    spec: &StepSpec,
    argv: &[String],
    checker: &mut RefChecker<'_>,
) -> (JobKind, BTreeMap<OutputName, String>) {
    let step_name = checker.step;
    if argv.is_empty() || argv[0].trim().is_empty() {
        checker.errors.push(SpecError::EmptyCommand {
            step: step_name.to_string(),
        });
    }
    let mut outputs = BTreeMap::new();
    for (out, path) in &spec.outputs {
        match OutputName::new(out) {
            Ok(o) => match check_output_path(step_name, out, path) {
                Ok(()) => {
                    outputs.insert(o, path.clone());
                }
                Err(e) => checker.errors.push(e),
            },
            Err(e) => checker.errors.push(e.into()),
        }
    }
    argv.iter().for_each(|a| checker.check(a));
    let argv = argv.iter().map(|a| checker.render(a)).collect();
    (JobKind::Command { argv }, outputs)
}

/// A function step: its call with parameters substituted, and one pickled output per return.
fn function_kind(
    spec: &StepSpec,
    f: &FunctionSpec,
    checker: &mut RefChecker<'_>,
) -> (JobKind, BTreeMap<OutputName, String>) {
    if !spec.outputs.is_empty() {
        checker.errors.push(SpecError::OutputsOnFunction {
            step: checker.step.to_string(),
        });
    }
    let mut outputs = BTreeMap::new();
    let mut returns = Vec::new();
    for r in &f.returns {
        match OutputName::new(r) {
            Ok(o) => {
                outputs.insert(o.clone(), format!("{FUNCTION_OUTPUT_DIR}/{o}.pkl"));
                returns.push(o);
            }
            Err(e) => checker.errors.push(e.into()),
        }
    }
    for r in &f.requirements {
        if let Err(reason) = check_requirement(r) {
            checker.errors.push(SpecError::BadRequirement {
                step: checker.step.to_string(),
                requirement: r.clone(),
                reason,
            });
        }
    }
    let kind = JobKind::Function {
        source: f.source.clone(),
        entry: f.entry.clone(),
        kwargs: check_kwargs(f, checker),
        returns,
        requirements: f.requirements.clone(),
        python: f.python.clone(),
        blobs: f.blobs.clone(),
        prewarm: f.prewarm,
    };
    for name in f.blobs.keys().filter(|n| f.kwargs.contains_key(*n)) {
        checker.errors.push(SpecError::KwargTwice {
            step: checker.step.to_string(),
            name: name.clone(),
        });
    }
    (kind, outputs)
}

/// Keyword arguments as JSON text; a string argument gets its parameters substituted.
fn check_kwargs(f: &FunctionSpec, checker: &mut RefChecker<'_>) -> BTreeMap<String, String> {
    let mut kwargs = BTreeMap::new();
    for (k, json) in &f.kwargs {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::String(s)) => {
                checker.check(&s);
                let rendered = serde_json::Value::String(checker.render(&s));
                kwargs.insert(k.clone(), rendered.to_string());
            }
            Ok(_) => {
                kwargs.insert(k.clone(), json.clone());
            }
            Err(e) => checker.errors.push(SpecError::BadKwarg {
                step: checker.step.to_string(),
                name: k.clone(),
                error: e.to_string(),
            }),
        }
    }
    kwargs
}

/// The step's environment with parameters substituted; names must be shell variable names.
fn check_env(spec: &StepSpec, checker: &mut RefChecker<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in &spec.env {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            checker.errors.push(SpecError::BadEnvName {
                step: checker.step.to_string(),
                name: k.clone(),
            });
        }
        checker.check(v);
        env.insert(k.clone(), checker.render(v));
    }
    env
}

/// The step's priority (0 unless given); one above [`MAX_PRIORITY`] is reported.
fn check_priority(spec: &StepSpec, errors: &mut Vec<SpecError>) -> u8 {
    let priority = spec.priority.unwrap_or(0);
    if priority > MAX_PRIORITY {
        errors.push(SpecError::BadPriority {
            step: spec.name.clone(),
            priority,
            max: MAX_PRIORITY,
        });
    }
    priority
}

/// Orders steps parents-first, or reports one cycle as a path. Steps that already come after
/// their parents keep the order they were given in, without being moved (nearly every pipeline:
/// a 100k-step run's steps are tens of megabytes); others are ordered by Kahn's algorithm.
fn topological_order(steps: Vec<Step>) -> Result<Vec<Step>, SpecError> {
    let Some(order) = parents_first(&steps)? else {
        return Ok(steps);
    };
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The positions of `steps` in an order that puts every step after its parents (Kahn's
/// algorithm); `None` when they already are in such an order.
fn parents_first(steps: &[Step]) -> Result<Option<Vec<usize>>, SpecError> {
    let index: HashMap<&str, usize> =
        HashMap::from_iter(steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)));
    let position = |p: &StepName| index[p.as_str()];
    let sorted = steps
        .iter()
        .enumerate()
        .all(|(i, s)| s.parents.iter().all(|p| position(p) < i));
    if sorted {
        return Ok(None);
    }
    let mut pending: Vec<usize> = steps.iter().map(|s| s.parents.len()).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for p in &s.parents {
            children[position(p)].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| pending[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in children[i].iter().rev() {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() < steps.len() {
        return Err(find_cycle(steps, &index, &pending));
    }
    Ok(Some(order))
}

/// Walks parent links among the steps left over by Kahn's algorithm until one repeats.
fn find_cycle(steps: &[Step], index: &HashMap<&str, usize>, pending: &[usize]) -> SpecError {
    let Some(start) = (0..steps.len()).find(|&i| pending[i] > 0) else {
        return SpecError::Cycle { path: Vec::new() };
    };
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut at = start;
    loop {
        if let Some(&pos) = seen.get(&at) {
            let mut cycle: Vec<String> = path[pos..]
                .iter()
                .map(|&i: &usize| steps[i].name.to_string())
                .collect();
            cycle.reverse();
            cycle.push(cycle[0].clone());
            return SpecError::Cycle { path: cycle };
        }
        seen.insert(at, path.len());
        path.push(at);
        // Every leftover step has a leftover parent, so this always finds one.
        match steps[at]
            .parents
            .iter()
            .map(|p| index[p.as_str()])
            .find(|&p| pending[p] > 0)
        {
            Some(p) => at = p,
            None => return SpecError::Cycle { path: Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests;
