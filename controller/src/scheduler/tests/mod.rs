//! Scheduler tests: whole runs driven event by event, no broker, time passed in by hand.
//! Helpers here; `flow` covers runs moving forward, `fencing` leases, stale events and aborts,
//! `skips` the shared failure-and-skip cases the SDK's local runs follow too; `handback` lost and
//! released attempts; `dynamic` steps added by a running driver; `external` runs executed by
//! their submitter; `changes` what each event reports it changed.

mod changes;
mod dynamic;
mod external;
mod fencing;
mod flow;
mod handback;
mod skips;

use crate::scheduler::*;
use drover_protocol::Digest;
use drover_protocol::message::{AgentInfo, ArtifactRef, AttemptRef};
use drover_protocol::spec::PipelineSpec;

pub(super) const LEASE: u64 = 3_000;

pub(super) fn new_state() -> State {
    State::new(SchedulerConfig {
        controller_url: "http://controller.test".into(),
        lease_ms: LEASE,
        artifact_store: None,
        epoch: 0,
        inline_outputs: 0,
    })
}

pub(super) fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub(super) fn step(name: &str) -> StepName {
    StepName::new(name).unwrap()
}

/// Submits `steps`, checks the run was rejected with nothing dispatched, and returns why.
pub(super) fn rejection(state: &mut State, steps: &str, now: u64) -> String {
    let (run, fx) = submit_toml(state, steps, now);
    assert!(fx.actions.is_empty());
    let r = &state.runs[&run];
    assert_eq!(r.status, RunStatus::Rejected);
    r.error.clone().unwrap()
}

pub(super) fn submit_toml(state: &mut State, steps: &str, now: u64) -> (RunId, Effects) {
    let text = format!("[pipeline]\nname = \"p\"\nproject = \"tests\"\n{steps}");
    let spec = PipelineSpec::from_toml(&text).unwrap();
    let run_id = RunId::generate();
    let fx = handle(
        state,
        Event::Submit(Submit {
            run_id: run_id.clone(),
            spec,
            params: BTreeMap::new(),
            submitted_by: None,
            external: false,
        }),
        now,
    );
    (run_id, fx)
}

pub(super) fn jobs(fx: &Effects) -> Vec<StepJob> {
    fx.actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { job, .. } => Some((**job).clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn job_names(fx: &Effects) -> Vec<String> {
    let mut names: Vec<String> = jobs(fx).iter().map(|j| j.step.to_string()).collect();
    names.sort();
    names
}

pub(super) fn cancels(fx: &Effects) -> Vec<(AgentId, Cancel)> {
    fx.actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { agent, cancel } => Some((agent.clone(), cancel.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn revokes(fx: &Effects) -> Vec<Revoke> {
    fx.actions
        .iter()
        .filter_map(|a| match a {
            Action::Revoke(revoke) => Some(revoke.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn claim(state: &mut State, job: &StepJob, by: &str, now: u64) -> Effects {
    handle(
        state,
        Event::Claimed(Claimed {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent(by),
        }),
        now,
    )
}

/// A `Finished` for `job`; on success every declared output gets content naming the step.
pub(super) fn finished_msg(
    job: &StepJob,
    by: &str,
    outcome: Outcome,
    exit_code: Option<i32>,
) -> Finished {
    let outputs = if outcome == Outcome::Succeeded {
        job.job
            .outputs
            .iter()
            .map(|(name, path)| {
                (
                    name.clone(),
                    artifact(&format!("{}.{name}", job.step), path),
                )
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    Finished {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent(by),
        outcome,
        exit_code,
        outputs,
        message: None,
        started_at: 0,
        ended_at: 0,
        log_delays: Vec::new(),
        start: None,
        log_size: None,
        inline: Default::default(),
    }
}

pub(super) fn artifact(content: &str, file_name: &str) -> ArtifactRef {
    ArtifactRef {
        digest: Digest::of_bytes(content.as_bytes()),
        size: content.len() as u64,
        file_name: drover_protocol::FileName::from(file_name.to_string()),
    }
}

/// Claims and finishes `job` with `outcome` on agent `by`.
pub(super) fn run_job(
    state: &mut State,
    job: &StepJob,
    by: &str,
    outcome: Outcome,
    now: u64,
) -> Effects {
    claim(state, job, by, now);
    let exit = if outcome == Outcome::Succeeded { 0 } else { 3 };
    handle(
        state,
        Event::Finished(finished_msg(job, by, outcome, Some(exit))),
        now,
    )
}

pub(super) fn status(state: &State, run: &RunId, name: &str) -> StepStatus {
    state.runs[run].step(&step(name)).unwrap().status
}

pub(super) fn heartbeat(state: &mut State, by: &str, running: &[&StepJob], now: u64) -> Effects {
    let info = AgentInfo {
        id: agent(by),
        host: "host".into(),
        pid: 1,
        version: "0".into(),
        queues: vec![QueueName::new("default").unwrap()],
        slots: 2,
        busy: running.len() as u32,
        draining: false,
        cpus: 2,
        memory_mib: 4096,
        installer: None,
        warm_parents: Default::default(),
        refused_stale: 0,
        revoked_dropped: 0,
    };
    let running = running
        .iter()
        .map(|j| AttemptRef {
            run_id: j.run_id.clone(),
            step: j.step.clone(),
            attempt: j.attempt,
        })
        .collect();
    handle(
        state,
        Event::Heartbeat(Heartbeat {
            agent: info,
            running,
        }),
        now,
    )
}
