//! Builds the API's JSON documents ([`drover_api`]) from the stored records.

use crate::scheduler::{
    AgentRecord, AttemptRecord, PendingReason, RunRecord, StepRecord, StepStatus,
};
use drover_api::{
    AgentStep, AgentView, AttemptView, FunctionView, OutputView, RunSummary, RunView, StepKind,
    StepView,
};
use drover_protocol::message::JobKind;
use drover_protocol::validate::Step;
use std::collections::BTreeMap;

/// A heartbeat older than this drops the agent from the agents list and `/metrics`: agents
/// get a new id each start, so the gone ones of past restarts would pile up there forever.
pub const AGENT_FORGOTTEN_MS: u64 = 60 * 60 * 1000;

/// Whether the agent has been gone so long that it is no longer listed.
pub fn forgotten(agent: &AgentRecord, now: u64) -> bool {
    now.saturating_sub(agent.last_seen) >= AGENT_FORGOTTEN_MS
}

pub fn summary(run: &RunRecord, url: String) -> RunSummary {
    let mut steps = BTreeMap::new();
    for s in &run.steps {
        *steps.entry(s.status).or_default() += 1;
    }
    RunSummary {
        run_id: run.run_id.clone(),
        name: run.name.clone(),
        project: run.project.clone(),
        version: run.version.clone(),
        status: run.status,
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
        run_id: run.run_id.clone(),
        name: run.name.clone(),
        project: run.project.clone(),
        version: run.version.clone(),
        status: run.status,
        params: run.params.clone(),
        submitted_by: run.submitted_by.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        ended_at: run.ended_at,
        error: run.error.clone(),
        rerun_of: None,
        fired_by: None,
        url,
        external: run.external,
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
        JobKind::Command { argv } => (StepKind::Command, Some(argv.clone()), None),
        JobKind::Function {
            source,
            entry,
            kwargs,
            requirements,
            python,
            ..
        } => (
            StepKind::Function,
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
        name: step.name.clone(),
        status: step.status,
        queue: step.queue.clone(),
        parents: spec.parents.iter().cloned().collect(),
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
                    digest: a.digest.clone(),
                    size: a.size,
                    file_name: a.file_name.clone(),
                };
                (name.to_string(), view)
            })
            .collect(),
        attempt: step.attempt,
        attempts: step.attempts.iter().map(attempt_view).collect(),
        cache_key: step.cache_key.clone(),
        cache_hit: step.cache_hit,
        kind,
        command,
        function,
        driver: spec.driver,
        env: spec.env.clone(),
        timeout_ms: spec.timeout_ms,
        retries: spec.retries,
        retry_at: step.retry_at.filter(|_| step.status == StepStatus::Pending),
        started_at: step.started_at,
        ended_at: step.ended_at,
        exit_code: step.exit_code(),
        message: step.message.clone(),
        pending_reason: step
            .pending_reason
            .as_ref()
            .filter(|_| step.status == StepStatus::Pending)
            .map(pending_reason),
    }
}

fn pending_reason(reason: &PendingReason) -> drover_api::PendingReason {
    match reason {
        PendingReason::QueueFull { queue } => drover_api::PendingReason::QueueFull {
            queue: queue.clone(),
        },
        PendingReason::WaitingForCallback => drover_api::PendingReason::WaitingForCallback,
    }
}

fn attempt_view(a: &AttemptRecord) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        agent: a.agent.clone(),
        queued_at: a.queued_at,
        started_at: a.started_at,
        ended_at: a.ended_at,
        exit_code: a.exit_code,
        outcome: a.outcome,
        message: a.message.clone(),
        start: a.start,
        log_archive: a.log_archive.clone(),
    }
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
                        run_id: run.run_id.clone(),
                        step: step.name.clone(),
                        attempt: step.attempt,
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
        id: info.id.clone(),
        host: info.host.clone(),
        pid: info.pid,
        version: info.version.clone(),
        queues: info.queues.clone(),
        slots: info.slots,
        busy: info.busy,
        draining: info.draining,
        cpus: info.cpus,
        memory_mib: info.memory_mib,
        installer: info.installer.clone(),
        last_seen: agent.last_seen,
        alive: agent.alive(now),
        current_steps,
    }
}
