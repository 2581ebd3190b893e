//! The DAG scheduler: a pure function of `(state, event, now)` that updates the state and says
//! which actions follow. No I/O, no clock: the owning task persists the changed records and then
//! carries out the actions.

mod state;
#[cfg(test)]
mod tests;

pub use state::{
    AgentRecord, AttemptOutcome, AttemptRecord, CachedOutputs, RunRecord, RunStatus,
    SchedulerConfig, State, StepRecord, StepStatus,
};

use crate::cache::cache_key;
use drover_protocol::message::{
    Abort, Cancel, Claimed, Finished, Heartbeat, JobInput, JobSpec, Outcome, StepJob, Submit,
};
use drover_protocol::validate::{Step, validate};
use drover_protocol::{AgentId, AttemptNo, QueueName, RunId, StepName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Everything that can happen to the scheduler's state.
#[derive(Debug, Clone)]
pub enum Event {
    Submit(Submit),
    Abort(Abort),
    Claimed(Claimed),
    Heartbeat(Heartbeat),
    Finished(Finished),
    /// Time passed: expire leases, fire due retries.
    Tick,
}

/// What the owning task must do once the changed records are durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish a job on a user queue.
    Dispatch { queue: QueueName, job: Box<StepJob> },
    /// Tell one agent to stop an attempt.
    Cancel { agent: AgentId, cancel: Cancel },
    /// Persist a cache entry (already in `State::cache`).
    CacheInsert { key: String, outputs: CachedOutputs },
}

/// The records an event changed and the actions that follow from it.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    pub runs: BTreeSet<RunId>,
    pub agents: BTreeSet<AgentId>,
    pub actions: Vec<Action>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.agents.is_empty() && self.actions.is_empty()
    }
}

/// What every handler needs besides the run it works on.
struct Ctx<'a> {
    config: &'a SchedulerConfig,
    cache: &'a mut BTreeMap<String, CachedOutputs>,
    now: u64,
    fx: Effects,
}

impl Ctx<'_> {
    fn cancel(
        &mut self,
        agent: &AgentId,
        run_id: &RunId,
        step: &StepName,
        attempt: AttemptNo,
        reason: String,
    ) {
        self.fx.actions.push(Action::Cancel {
            agent: agent.clone(),
            cancel: Cancel {
                run_id: run_id.clone(),
                step: step.clone(),
                attempt,
                reason,
            },
        });
    }
}

/// Applies one event at time `now` (ms since the epoch).
pub fn handle(state: &mut State, event: Event, now: u64) -> Effects {
    let mut ctx = Ctx {
        config: &state.config,
        cache: &mut state.cache,
        now,
        fx: Effects::default(),
    };
    let runs = &mut state.runs;
    match event {
        Event::Submit(s) => submit(runs, s, &mut ctx),
        Event::Abort(a) => abort(runs, a, &mut ctx),
        Event::Claimed(c) => claimed(runs, c, &mut ctx),
        Event::Heartbeat(h) => {
            ctx.fx.agents.insert(h.agent.id.clone());
            heartbeat(runs, &h, &mut ctx);
            state.agents.insert(
                h.agent.id.clone(),
                AgentRecord {
                    info: h.agent,
                    last_seen: now,
                },
            );
        }
        Event::Finished(f) => finished(runs, f, &mut ctx),
        Event::Tick => tick(runs, &mut ctx),
    }
    ctx.fx
}

/// After a restart: fresh leases for running attempts, queued jobs published again (same
/// attempt; a duplicate is fenced when claimed), and every run advanced as far as it can go.
pub fn resume(state: &mut State, now: u64) -> Effects {
    let mut ctx = Ctx {
        config: &state.config,
        cache: &mut state.cache,
        now,
        fx: Effects::default(),
    };
    for run in state.runs.values_mut().filter(|r| !r.status.is_terminal()) {
        let Some(pipeline) = run.pipeline.as_ref() else {
            continue;
        };
        for (i, spec) in pipeline.steps.iter().enumerate() {
            match run.steps[i].status {
                StepStatus::Running => run.steps[i].lease_until = Some(now + ctx.config.lease_ms),
                StepStatus::Queued => match job_inputs(spec, &run.steps) {
                    Ok(inputs) => {
                        let job =
                            step_job(&run.run_id, spec, run.steps[i].attempt, inputs, ctx.config);
                        ctx.fx.actions.push(Action::Dispatch {
                            queue: spec.queue.clone(),
                            job,
                        });
                    }
                    Err(why) => {
                        end_step(&mut run.steps[i], StepStatus::Failed, Some(why), now);
                        ctx.fx.runs.insert(run.run_id.clone());
                    }
                },
                _ => {}
            }
        }
        if advance(run, &mut ctx) {
            ctx.fx.runs.insert(run.run_id.clone());
        }
    }
    ctx.fx
}

fn submit(runs: &mut BTreeMap<RunId, RunRecord>, s: Submit, ctx: &mut Ctx) {
    if runs.contains_key(&s.run_id) {
        return; // a redelivered submission
    }
    let meta = &s.spec.pipeline;
    let mut run = RunRecord {
        run_id: s.run_id.clone(),
        name: meta.name.clone(),
        project: meta.project.clone(),
        version: meta.version.clone(),
        pipeline: None,
        params: s.params.clone(),
        submitted_by: s.submitted_by.clone(),
        status: RunStatus::Running,
        error: None,
        abort_requested: false,
        created_at: ctx.now,
        started_at: None,
        ended_at: None,
        steps: Vec::new(),
    };
    match validate(&s.spec, &s.params) {
        Err(errors) => {
            run.status = RunStatus::Rejected;
            run.error = Some(errors.to_string());
            run.ended_at = Some(ctx.now);
        }
        Ok(pipeline) => {
            run.steps = pipeline.steps.iter().map(StepRecord::new).collect();
            run.params = pipeline.params.clone();
            run.pipeline = Some(pipeline);
            run.started_at = Some(ctx.now);
            advance(&mut run, ctx);
        }
    }
    ctx.fx.runs.insert(run.run_id.clone());
    runs.insert(run.run_id.clone(), run);
}

fn abort(runs: &mut BTreeMap<RunId, RunRecord>, a: Abort, ctx: &mut Ctx) {
    let Some(run) = runs.get_mut(&a.run_id) else {
        return;
    };
    if run.status.is_terminal() {
        return;
    }
    let reason = a.reason.unwrap_or_else(|| "aborted on request".to_string());
    match &a.step {
        None => {
            run.abort_requested = true;
            run.error = Some(format!("aborted: {reason}"));
            for i in 0..run.steps.len() {
                abort_step(&run.run_id, &mut run.steps[i], &reason, ctx);
            }
        }
        Some(name) => {
            let Some(i) = run.step_index(name) else {
                return;
            };
            abort_step(&run.run_id, &mut run.steps[i], &reason, ctx);
        }
    }
    advance(run, ctx);
    ctx.fx.runs.insert(run.run_id.clone());
}

/// Waiting steps end as aborted at once; a running one is told to stop and ends when it reports.
fn abort_step(run_id: &RunId, step: &mut StepRecord, reason: &str, ctx: &mut Ctx) {
    match step.status {
        StepStatus::Pending | StepStatus::Queued => {
            if let Some(a) = step.current_mut().filter(|a| a.outcome.is_none()) {
                a.outcome = Some(AttemptOutcome::Aborted);
                a.ended_at = Some(ctx.now);
            }
            end_step(step, StepStatus::Aborted, Some(reason.to_string()), ctx.now);
        }
        StepStatus::Running => {
            step.abort_requested = true;
            if let Some(agent) = step.agent.clone() {
                ctx.cancel(&agent, run_id, &step.name, step.attempt, reason.to_string());
            }
        }
        _ => {}
    }
}

fn claimed(runs: &mut BTreeMap<RunId, RunRecord>, c: Claimed, ctx: &mut Ctx) {
    let step = runs
        .get_mut(&c.run_id)
        .and_then(|run| run.step_index(&c.step).map(|i| &mut run.steps[i]));
    let Some(step) = step else {
        let why = format!("run {} has no step {}", c.run_id, c.step);
        ctx.cancel(&c.agent, &c.run_id, &c.step, c.attempt, why);
        return;
    };
    if let Some(why) = take_attempt(step, &c.agent, c.attempt, ctx) {
        ctx.cancel(&c.agent, &c.run_id, &c.step, c.attempt, why);
    } else if step.status == StepStatus::Running {
        ctx.fx.runs.insert(c.run_id.clone());
    }
}

/// Gives the current, queued attempt to `agent`, or renews its lease when it already runs it.
/// Returns why the agent must stop instead.
fn take_attempt(
    step: &mut StepRecord,
    agent: &AgentId,
    attempt: AttemptNo,
    ctx: &Ctx,
) -> Option<String> {
    if step.attempt != attempt {
        return Some(format!(
            "attempt {attempt} is stale: the current attempt of step {} is {}",
            step.name, step.attempt
        ));
    }
    let lease = Some(ctx.now + ctx.config.lease_ms);
    match step.status {
        StepStatus::Queued => {
            step.status = StepStatus::Running;
            step.agent = Some(agent.clone());
            step.lease_until = lease;
            step.started_at.get_or_insert(ctx.now);
            if let Some(a) = step.current_mut() {
                a.agent = Some(agent.clone());
                a.started_at = Some(ctx.now);
            }
            None
        }
        StepStatus::Running if step.agent.as_ref() == Some(agent) => {
            step.lease_until = lease;
            None
        }
        StepStatus::Running => Some(format!(
            "attempt {attempt} of step {} already runs on agent {}",
            step.name,
            step.agent.as_ref().map(AgentId::as_str).unwrap_or("?")
        )),
        other => Some(format!("step {} is {}", step.name, other.as_str())),
    }
}

fn heartbeat(runs: &mut BTreeMap<RunId, RunRecord>, h: &Heartbeat, ctx: &mut Ctx) {
    let agent = &h.agent.id;
    for r in &h.running {
        let step = runs
            .get_mut(&r.run_id)
            .and_then(|run| run.step_index(&r.step).map(|i| &mut run.steps[i]));
        let Some(step) = step else {
            let why = format!("run {} has no step {}", r.run_id, r.step);
            ctx.cancel(agent, &r.run_id, &r.step, r.attempt, why);
            continue;
        };
        let was_queued = step.status == StepStatus::Queued;
        match take_attempt(step, agent, r.attempt, ctx) {
            Some(why) => ctx.cancel(agent, &r.run_id, &r.step, r.attempt, why),
            // A heartbeat that overtook its `Claimed` counts as the claim.
            None if was_queued => {
                ctx.fx.runs.insert(r.run_id.clone());
            }
            None => {}
        }
    }
}

fn finished(runs: &mut BTreeMap<RunId, RunRecord>, f: Finished, ctx: &mut Ctx) {
    let Some(run) = runs.get_mut(&f.run_id) else {
        return;
    };
    let (Some(i), Some(spec)) = (run.step_index(&f.step), run.step_spec(&f.step).cloned()) else {
        return;
    };
    let step = &mut run.steps[i];
    let owner = match step.status {
        StepStatus::Queued => true,
        StepStatus::Running => step.agent.as_ref() == Some(&f.agent),
        _ => false,
    };
    if run.status.is_terminal() || step.attempt != f.attempt || !owner {
        return; // fenced: not the current attempt, or not from the agent that holds it
    }
    let now = ctx.now;
    step.agent = Some(f.agent.clone());
    step.lease_until = None;
    step.started_at.get_or_insert(f.started_at);
    if let Some(a) = step.current_mut() {
        a.agent = Some(f.agent.clone());
        a.started_at.get_or_insert(f.started_at);
        a.ended_at = Some(now);
        a.exit_code = f.exit_code;
        a.outcome = Some(f.outcome.into());
        a.message = f.message.clone();
    }
    let missing: Vec<String> = spec
        .outputs
        .keys()
        .filter(|o| !f.outputs.contains_key(*o))
        .map(ToString::to_string)
        .collect();
    match f.outcome {
        Outcome::Succeeded if missing.is_empty() => {
            step.outputs = f
                .outputs
                .into_iter()
                .filter(|(name, _)| spec.outputs.contains_key(name))
                .collect();
            if let (true, Some(key)) = (spec.cache, step.cache_key.clone()) {
                ctx.cache.insert(key.clone(), step.outputs.clone());
                ctx.fx.actions.push(Action::CacheInsert {
                    key,
                    outputs: step.outputs.clone(),
                });
            }
            end_step(step, StepStatus::Succeeded, None, now);
        }
        Outcome::Succeeded => {
            let why = format!("declared output(s) not reported: {}", missing.join(", "));
            fail_attempt(step, &spec, why, now);
        }
        Outcome::Aborted => {
            let why = f.message.unwrap_or_else(|| "aborted".to_string());
            end_step(step, StepStatus::Aborted, Some(why), now);
        }
        Outcome::Failed | Outcome::TimedOut | Outcome::Error => {
            fail_attempt(step, &spec, failure_text(&f), now);
        }
    }
    advance(run, ctx);
    ctx.fx.runs.insert(run.run_id.clone());
}

/// What people read about a failed attempt; always names the exit code when there is one.
fn failure_text(f: &Finished) -> String {
    let what = match f.outcome {
        Outcome::TimedOut => "timed out".to_string(),
        Outcome::Error => "could not run".to_string(),
        _ => match f.exit_code {
            Some(code) => format!("exit code {code}"),
            None => "failed".to_string(),
        },
    };
    match &f.message {
        Some(m) if !m.is_empty() => format!("{what}: {m}"),
        _ => what,
    }
}

fn tick(runs: &mut BTreeMap<RunId, RunRecord>, ctx: &mut Ctx) {
    let now = ctx.now;
    for run in runs.values_mut().filter(|r| !r.status.is_terminal()) {
        let Some(pipeline) = run.pipeline.as_ref() else {
            continue;
        };
        let mut changed = false;
        for (step, spec) in run.steps.iter_mut().zip(&pipeline.steps) {
            let expired =
                step.status == StepStatus::Running && step.lease_until.is_some_and(|t| t <= now);
            if expired {
                lose_attempt(step, spec, ctx.config.lease_ms, now);
                changed = true;
            }
            if step.status == StepStatus::Pending && step.retry_at.is_some_and(|t| t <= now) {
                step.retry_at = None;
                changed = true;
            }
        }
        if advance(run, ctx) || changed {
            ctx.fx.runs.insert(run.run_id.clone());
        }
    }
}

/// The lease ran out: the agent is presumed gone. An abort in flight ends as aborted, not retried.
fn lose_attempt(step: &mut StepRecord, spec: &Step, lease_ms: u64, now: u64) {
    let agent = step
        .agent
        .as_ref()
        .map(AgentId::to_string)
        .unwrap_or_default();
    let why = format!(
        "agent {agent} sent no heartbeat for attempt {} within the lease ({}); presumed gone",
        step.attempt,
        humantime::format_duration(Duration::from_millis(lease_ms))
    );
    step.lease_until = None;
    if let Some(a) = step.current_mut() {
        a.ended_at = Some(now);
        a.outcome = Some(AttemptOutcome::Lost);
        a.message = Some(why.clone());
    }
    if step.abort_requested {
        end_step(step, StepStatus::Aborted, Some(why), now);
    } else {
        fail_attempt(step, spec, why, now);
    }
}

/// Counts a failed attempt: a retry after the backoff while retries remain, else the step fails.
fn fail_attempt(step: &mut StepRecord, spec: &Step, why: String, now: u64) {
    if step.abort_requested {
        end_step(step, StepStatus::Aborted, Some(why), now);
        return;
    }
    step.failures += 1;
    if step.failures <= spec.retries {
        let factor = 1u64 << (step.failures - 1).min(20);
        let delay = spec.retry_backoff_ms.saturating_mul(factor);
        step.status = StepStatus::Pending;
        step.retry_at = Some(now.saturating_add(delay));
        step.agent = None;
        step.message = Some(format!(
            "attempt {} {why}; retry {} of {} in {}",
            step.attempt,
            step.failures,
            spec.retries,
            humantime::format_duration(Duration::from_millis(delay))
        ));
    } else {
        let why = if step.failures > 1 {
            format!("{why} (after {} attempts)", step.failures)
        } else {
            why
        };
        end_step(step, StepStatus::Failed, Some(why), now);
    }
}

fn end_step(step: &mut StepRecord, status: StepStatus, message: Option<String>, now: u64) {
    step.status = status;
    step.message = message;
    step.lease_until = None;
    step.retry_at = None;
    step.ended_at = Some(now);
}

/// Moves every pending step whose parents are all done to cached or queued, skips those
/// under a failed parent, and ends the run when every step is terminal. Returns whether
/// anything changed.
fn advance(run: &mut RunRecord, ctx: &mut Ctx) -> bool {
    let RunRecord {
        run_id,
        pipeline,
        steps,
        ..
    } = run;
    let Some(pipeline) = pipeline.as_ref() else {
        return false;
    };
    let mut changed = false;
    // Parents come first, so one pass settles chains of cache hits and skips.
    for (i, spec) in pipeline.steps.iter().enumerate() {
        if steps[i].status != StepStatus::Pending || steps[i].retry_at.is_some() {
            continue;
        }
        let parents: Vec<&StepRecord> = steps
            .iter()
            .filter(|s| spec.parents.contains(&s.name))
            .collect();
        if let Some(p) = parents
            .iter()
            .find(|p| p.status.is_terminal() && !p.status.is_done())
        {
            let why = format!("parent {} {}", p.name, p.status.as_str());
            end_step(&mut steps[i], StepStatus::Skipped, Some(why), ctx.now);
            changed = true;
        } else if parents.iter().all(|p| p.status.is_done()) {
            make_ready(run_id, spec, steps, i, ctx);
            changed = true;
        }
    }
    finish_if_done(run, ctx.now) || changed
}

/// A step whose parents are done: a cache hit ends it at once, otherwise its next attempt is queued.
fn make_ready(run_id: &RunId, spec: &Step, steps: &mut [StepRecord], i: usize, ctx: &mut Ctx) {
    let inputs = match job_inputs(spec, steps) {
        Ok(inputs) => inputs,
        Err(why) => {
            end_step(&mut steps[i], StepStatus::Failed, Some(why), ctx.now);
            return;
        }
    };
    let step = &mut steps[i];
    if spec.cache {
        let key = cache_key(spec, &inputs);
        let hit = ctx
            .cache
            .get(&key)
            .filter(|outputs| spec.outputs.keys().all(|o| outputs.contains_key(o)));
        if let Some(outputs) = hit {
            step.outputs = outputs.clone();
            step.cache_hit = true;
            step.started_at = Some(ctx.now);
            step.cache_key = Some(key);
            end_step(step, StepStatus::Cached, None, ctx.now);
            return;
        }
        step.cache_key = Some(key);
    }
    step.attempt = step.attempt.next();
    step.status = StepStatus::Queued;
    step.agent = None;
    step.lease_until = None;
    step.attempts.push(AttemptRecord {
        attempt: step.attempt,
        agent: None,
        queued_at: ctx.now,
        started_at: None,
        ended_at: None,
        exit_code: None,
        outcome: None,
        message: None,
    });
    let job = step_job(run_id, spec, step.attempt, inputs, ctx.config);
    ctx.fx.actions.push(Action::Dispatch {
        queue: spec.queue.clone(),
        job,
    });
}

/// The artifacts a step consumes, from its parents' recorded outputs.
fn job_inputs(spec: &Step, steps: &[StepRecord]) -> Result<Vec<JobInput>, String> {
    spec.inputs
        .iter()
        .map(|(producer, output)| {
            let artifact = steps
                .iter()
                .find(|s| &s.name == producer)
                .and_then(|s| s.outputs.get(output))
                .ok_or_else(|| format!("input ${{{producer}.{output}}} has no stored artifact"))?;
            Ok(JobInput {
                step: producer.clone(),
                output: output.clone(),
                digest: artifact.digest.clone(),
                size: artifact.size,
                file_name: artifact.file_name.clone(),
            })
        })
        .collect()
}

fn step_job(
    run_id: &RunId,
    spec: &Step,
    attempt: AttemptNo,
    inputs: Vec<JobInput>,
    config: &SchedulerConfig,
) -> Box<StepJob> {
    Box::new(StepJob {
        run_id: run_id.clone(),
        step: spec.name.clone(),
        attempt,
        job: JobSpec {
            kind: spec.kind.clone(),
            env: spec.env.clone(),
            inputs,
            outputs: spec.outputs.clone(),
            timeout_ms: spec.timeout_ms,
        },
        controller_url: config.controller_url.clone(),
        lease_ms: config.lease_ms,
    })
}

/// Ends the run once every step is terminal. Returns whether it ended now.
fn finish_if_done(run: &mut RunRecord, now: u64) -> bool {
    if run.status.is_terminal() || !run.steps.iter().all(|s| s.status.is_terminal()) {
        return false;
    }
    let Some(pipeline) = run.pipeline.as_ref() else {
        return false;
    };
    let failed: Vec<&str> = run
        .steps
        .iter()
        .zip(&pipeline.steps)
        .filter(|(s, spec)| s.status == StepStatus::Failed && !spec.continue_on_fail)
        .map(|(s, _)| s.name.as_str())
        .collect();
    let any_aborted = run.steps.iter().any(|s| s.status == StepStatus::Aborted);
    run.status = if run.abort_requested {
        RunStatus::Aborted
    } else if !failed.is_empty() {
        run.error = Some(format!("failed step(s): {}", failed.join(", ")));
        RunStatus::Failed
    } else if any_aborted {
        RunStatus::Aborted
    } else {
        RunStatus::Succeeded
    };
    run.ended_at = Some(now);
    true
}
