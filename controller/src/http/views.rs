//! The JSON shapes of runs and steps, built from the stored records (times in ms since epoch).

use crate::scheduler::{AgentRecord, AttemptRecord, RunRecord, StepRecord, StepStatus};
use drover_protocol::message::JobKind;
use drover_protocol::validate::Step;
use serde::Serialize;
use std::collections::BTreeMap;

/// A heartbeat older than this means the agent is gone (a few missed heartbeats).
pub const AGENT_ALIVE_MS: u64 = 15_000;

/// One line of `GET /api/v1/runs`.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub name: String,
    pub project: String,
    pub version: String,
    pub status: &'static str,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    /// Step status -> how many steps have it.
    pub steps: BTreeMap<&'static str, usize>,
    pub url: String,
}

/// `GET /api/v1/runs/{run}`.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub name: String,
    pub project: String,
    pub version: String,
    pub status: &'static str,
    pub params: BTreeMap<String, String>,
    pub submitted_by: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub error: Option<String>,
    pub url: String,
    /// In topological order.
    pub steps: Vec<StepView>,
}

/// A stored output.
#[derive(Debug, Serialize)]
pub struct OutputView {
    pub digest: String,
    pub size: u64,
    pub file_name: String,
}

/// A step within a [`RunView`].
#[derive(Debug, Serialize)]
pub struct StepView {
    pub name: String,
    pub status: &'static str,
    pub queue: String,
    pub parents: Vec<String>,
    /// `STEP.OUTPUT` of every artifact consumed.
    pub inputs: Vec<String>,
    pub outputs: BTreeMap<String, OutputView>,
    pub attempt: u32,
    pub attempts: Vec<AttemptRecord>,
    pub cache_key: Option<String>,
    pub cache_hit: bool,
    /// `command` or `function`.
    pub kind: &'static str,
    pub command: Option<Vec<String>>,
    pub function: Option<FunctionView>,
    /// Environment variables the step sets.
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub retries: u32,
    pub retry_at: Option<u64>,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

/// A function step's code.
#[derive(Debug, Serialize)]
pub struct FunctionView {
    pub entry: String,
    pub source: String,
    /// Keyword arguments as JSON text; `"${STEP.OUTPUT}"` values are artifacts (see `inputs`).
    pub kwargs: BTreeMap<String, String>,
    pub requirements: Vec<String>,
    pub python: Option<String>,
}

pub fn summary(run: &RunRecord, url: String) -> RunSummary {
    let mut steps = BTreeMap::new();
    for s in &run.steps {
        *steps.entry(s.status.as_str()).or_default() += 1;
    }
    RunSummary {
        run_id: run.run_id.to_string(),
        name: run.name.clone(),
        project: run.project.clone(),
        version: run.version.clone(),
        status: run.status.as_str(),
        created_at: run.created_at,
        started_at: run.started_at,
        ended_at: run.ended_at,
        steps,
        url,
    }
}

pub fn run_view(run: &RunRecord, url: String) -> RunView {
    let specs = run
        .pipeline
        .as_ref()
        .map(|p| p.steps.as_slice())
        .unwrap_or_default();
    RunView {
        run_id: run.run_id.to_string(),
        name: run.name.clone(),
        project: run.project.clone(),
        version: run.version.clone(),
        status: run.status.as_str(),
        params: run.params.clone(),
        submitted_by: run.submitted_by.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        ended_at: run.ended_at,
        error: run.error.clone(),
        url,
        steps: run
            .steps
            .iter()
            .zip(specs)
            .map(|(s, spec)| step_view(s, spec))
            .collect(),
    }
}

fn step_view(step: &StepRecord, spec: &Step) -> StepView {
    let (kind, command, function) = match &spec.kind {
        JobKind::Command { argv } => ("command", Some(argv.clone()), None),
        JobKind::Function {
            source,
            entry,
            kwargs,
            requirements,
            python,
            ..
        } => (
            "function",
            None,
            Some(FunctionView {
                entry: entry.clone(),
                source: source.clone(),
                kwargs: kwargs.clone(),
                requirements: requirements.clone(),
                python: python.clone(),
            }),
        ),
    };
    StepView {
        name: step.name.to_string(),
        status: step.status.as_str(),
        queue: step.queue.to_string(),
        parents: spec.parents.iter().map(ToString::to_string).collect(),
        inputs: spec
            .inputs
            .iter()
            .map(|(s, o)| format!("{s}.{o}"))
            .collect(),
        outputs: step
            .outputs
            .iter()
            .map(|(name, a)| {
                let view = OutputView {
                    digest: a.digest.to_string(),
                    size: a.size,
                    file_name: a.file_name.clone(),
                };
                (name.to_string(), view)
            })
            .collect(),
        attempt: step.attempt.0,
        attempts: step.attempts.clone(),
        cache_key: step.cache_key.clone(),
        cache_hit: step.cache_hit,
        kind,
        command,
        function,
        env: spec.env.clone(),
        timeout_ms: spec.timeout_ms,
        retries: spec.retries,
        retry_at: step.retry_at.filter(|_| step.status == StepStatus::Pending),
        started_at: step.started_at,
        ended_at: step.ended_at,
        exit_code: step.exit_code(),
        message: step.message.clone(),
    }
}

/// One agent of `GET /api/v1/agents`.
#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub queues: Vec<String>,
    pub slots: u32,
    pub busy: u32,
    pub draining: bool,
    pub cpus: u32,
    pub memory_mib: u64,
    pub last_seen: u64,
    pub alive: bool,
    /// Steps the controller believes this agent is running.
    pub current_steps: Vec<AgentStep>,
}

/// A step an agent is running.
#[derive(Debug, Serialize)]
pub struct AgentStep {
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
    pub started_at: Option<u64>,
}

/// The running steps of every run, by agent id.
pub fn running_by_agent(runs: &[RunRecord]) -> BTreeMap<String, Vec<AgentStep>> {
    let mut by_agent: BTreeMap<String, Vec<AgentStep>> = BTreeMap::new();
    for run in runs.iter().filter(|r| !r.status.is_terminal()) {
        for step in run.steps.iter().filter(|s| s.status == StepStatus::Running) {
            if let Some(agent) = &step.agent {
                by_agent
                    .entry(agent.to_string())
                    .or_default()
                    .push(AgentStep {
                        run_id: run.run_id.to_string(),
                        step: step.name.to_string(),
                        attempt: step.attempt.0,
                        started_at: step.current().and_then(|a| a.started_at),
                    });
            }
        }
    }
    by_agent
}

pub fn agent_view(agent: &AgentRecord, now: u64, current_steps: Vec<AgentStep>) -> AgentView {
    let info = &agent.info;
    AgentView {
        id: info.id.to_string(),
        host: info.host.clone(),
        pid: info.pid,
        version: info.version.clone(),
        queues: info.queues.iter().map(ToString::to_string).collect(),
        slots: info.slots,
        busy: info.busy,
        draining: info.draining,
        cpus: info.cpus,
        memory_mib: info.memory_mib,
        last_seen: agent.last_seen,
        alive: now.saturating_sub(agent.last_seen) < AGENT_ALIVE_MS,
        current_steps,
    }
}
