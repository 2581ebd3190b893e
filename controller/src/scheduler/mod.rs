//! The DAG scheduler: a pure function of `(state, event, now)` that updates the state and says
//! which actions follow. No I/O, no clock: the owning task persists the changed records and then
//! carries out the actions.

mod archive;
mod callbacks;
mod dynamic;
mod external;
mod progress;
mod resolve;
mod state;
#[cfg(test)]
mod tests;

pub use archive::log_archived;
pub use callbacks::answer_callback;
pub use dynamic::add_step;
pub use external::report;
use progress::{
    advance, advance_from, end_step, fail_attempt, hand_back, job_inputs, lose_attempt,
    lose_external, step_job,
};
pub use state::{
    AgentRecord, ArchivedLog, AttemptOutcome, AttemptRecord, CachedOutputs, PendingReason,
    RunRecord, RunStatus, SchedulerConfig, State, StepCall, StepIndex, StepRecord, StepStatus,
};

use drover_protocol::message::{
    Abort, Cancel, Claimed, Finished, Heartbeat, JobKind, Outcome, Revoke, RevokedStep, StepJob,
    Submit,
};
use drover_protocol::validate::{Step, validate};
use drover_protocol::{AgentId, AttemptNo, Names, QueueName, RunId, StepName};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Tell every agent that jobs still queued must not run.
    Revoke(Revoke),
    /// Persist a cache entry (already in `State::cache`).
    CacheInsert { key: String, outputs: CachedOutputs },
}

/// The records an event changed and the actions that follow from it.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// Every run the events changed.
    pub runs: BTreeSet<RunId>,
    /// For the runs of `runs` whose changes are known step by step: the positions of the steps
    /// that changed (besides the run's header). A run of `runs` without an entry may have
    /// changed anywhere. Only [`Effects::changed`] and [`Effects::changed_steps`] add to the
    /// two, so a change anywhere is never mistaken for a change of a few steps.
    pub steps: BTreeMap<RunId, BTreeSet<usize>>,
    pub agents: BTreeSet<AgentId>,
    pub actions: Vec<Action>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.agents.is_empty() && self.actions.is_empty()
    }

    /// Run `run` changed, possibly anywhere.
    pub fn changed(&mut self, run: RunId) {
        self.steps.remove(&run);
        self.runs.insert(run);
    }

    /// Run `run` changed in its header and in the steps at `steps` (unless it already changed
    /// anywhere).
    pub fn changed_steps(&mut self, run: &RunId, steps: impl IntoIterator<Item = usize>) {
        if self.runs.insert(run.clone()) {
            self.steps.insert(run.clone(), steps.into_iter().collect());
        } else if let Some(known) = self.steps.get_mut(run) {
            known.extend(steps);
        }
    }

    /// Adds the effects of a later event: records changed by either, actions in order.
    pub fn merge(&mut self, mut later: Effects) {
        for run in later.runs {
            match later.steps.remove(&run) {
                Some(steps) => self.changed_steps(&run, steps),
                None => self.changed(run),
            }
        }
        self.agents.extend(later.agents);
        self.actions.extend(later.actions);
    }
}

/// What every handler needs besides the run it works on.
struct Ctx<'a> {
    config: &'a SchedulerConfig,
    /// The namespace's names, to refuse steps on its own queues.
    names: &'a Names,
    cache: &'a mut BTreeMap<String, CachedOutputs>,
    now: u64,
    fx: Effects,
    /// Steps each limited queue may still take now; `None` when no queue is limited.
    room: Option<BTreeMap<QueueName, u32>>,
    /// Lost attempts a step is dispatched again after.
    max_lost_attempts: u32,
}

/// How many more steps each limited queue may take: its limit minus its steps queued or
/// running in every unfinished run.
fn room_left(
    limits: &BTreeMap<QueueName, u32>,
    runs: &BTreeMap<RunId, RunRecord>,
) -> Option<BTreeMap<QueueName, u32>> {
    if limits.is_empty() {
        return None;
    }
    let mut room = limits.clone();
    for run in runs
        .values()
        .filter(|r| !r.status.is_terminal() && !r.external)
    {
        for step in &run.steps {
            let busy = matches!(step.status, StepStatus::Queued | StepStatus::Running);
            if let (true, Some(left)) = (busy, room.get_mut(&step.queue)) {
                *left = left.saturating_sub(1);
            }
        }
    }
    Some(room)
}

impl Ctx<'_> {
    /// Revokes the jobs of run `run_id` still on their queues: all of them, or `step`'s. The
    /// notice goes at position `at` of the actions, ahead of the cancels the same abort added
    /// after it: an agent whose running step a cancel stops has the notice before it takes the
    /// next job (its control queue keeps their order).
    fn revoke(&mut self, at: usize, run_id: &RunId, step: Option<RevokedStep>, reason: &str) {
        let revoke = Action::Revoke(Revoke {
            run_id: run_id.clone(),
            step,
            reason: reason.to_string(),
            epoch: self.config.epoch,
        });
        self.fx.actions.insert(at, revoke);
    }

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
                epoch: self.config.epoch,
            },
        });
    }
}

/// Every run the scheduler knows, by id.
type Runs = BTreeMap<RunId, RunRecord>;

/// What one state change at `now` works with, borrowed apart: its context (each limited
/// queue's room counted from the runs as they are), the runs and the agents.
fn split(state: &mut State, now: u64) -> (Ctx<'_>, &mut Runs, &mut BTreeMap<AgentId, AgentRecord>) {
    let ctx = Ctx {
        config: &state.config,
        names: &state.names,
        cache: &mut state.cache,
        now,
        fx: Effects::default(),
        room: room_left(&state.queue_limits, &state.runs),
        max_lost_attempts: state.max_lost_attempts,
    };
    (ctx, &mut state.runs, &mut state.agents)
}

/// The run `run_id` of `runs`, or why there is none.
fn run_mut<'a>(runs: &'a mut Runs, run_id: &RunId) -> Result<&'a mut RunRecord, String> {
    runs.get_mut(run_id)
        .ok_or_else(|| format!("no run {run_id}"))
}

/// Applies one event at time `now` (ms since the epoch).
pub fn handle(state: &mut State, event: Event, now: u64) -> Effects {
    let limits = Limits {
        max_steps: state.max_steps,
        step_priorities: state.step_priorities,
    };
    let (mut ctx, runs, agents) = split(state, now);
    match event {
        Event::Submit(s) => submit(runs, s, limits, &mut ctx),
        Event::Abort(a) => abort(runs, a, &mut ctx),
        Event::Claimed(c) => claimed(runs, c, &mut ctx),
        Event::Heartbeat(h) => {
            ctx.fx.agents.insert(h.agent.id.clone());
            heartbeat(runs, &h, &mut ctx);
            agents.insert(
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
    let (mut ctx, runs, _) = split(state, now);
    for run in runs.values_mut().filter(|r| !r.status.is_terminal()) {
        let Some(pipeline) = run.pipeline.as_ref() else {
            continue;
        };
        for (i, spec) in pipeline.steps.iter().enumerate() {
            match run.steps[i].status {
                StepStatus::Running => run.steps[i].lease_until = Some(now + ctx.config.lease_ms),
                // The submitter of an external run takes its queued attempts itself.
                StepStatus::Queued if run.external => {}
                StepStatus::Queued => {
                    match job_inputs(spec, &run.steps, &run.index).and_then(|inputs| {
                        let url = &ctx.config.controller_url;
                        Ok((
                            inputs,
                            resolve::for_job(&run.run_id, spec, &run.steps, url)?,
                        ))
                    }) {
                        Ok((inputs, job_spec)) => {
                            let attempt = run.steps[i].attempt;
                            let job = step_job(&run.run_id, &job_spec, attempt, inputs, ctx.config);
                            ctx.fx.actions.push(Action::Dispatch {
                                queue: spec.queue.clone(),
                                job,
                            });
                        }
                        Err(why) => {
                            end_step(&mut run.steps[i], StepStatus::Failed, Some(why), now);
                            ctx.fx.changed(run.run_id.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if advance(run, &mut ctx) {
            ctx.fx.changed(run.run_id.clone());
        }
    }
    ctx.fx
}

/// Extends every running attempt's lease to a full lease from `now`: after the controller could
/// not hear heartbeats (broker connection lost), silence says nothing about the agents.
pub fn renew_leases(state: &mut State, now: u64) {
    let until = now + state.config.lease_ms;
    for run in state.runs.values_mut().filter(|r| !r.status.is_terminal()) {
        for step in run.steps.iter_mut() {
            if step.status == StepStatus::Running {
                step.lease_until = Some(step.lease_until.map_or(until, |u| u.max(until)));
            }
        }
    }
}

/// What a submission is checked against besides the spec itself.
#[derive(Clone, Copy)]
struct Limits {
    max_steps: usize,
    step_priorities: bool,
}

/// A step's priority when the job queues keep none (quorum queues): an error saying what to do.
pub(crate) fn refuse_priority(step: &Step, step_priorities: bool) -> Result<(), String> {
    if step_priorities || step.priority == 0 {
        return Ok(());
    }
    Err(format!(
        "step {}: priority {} cannot be honoured: this controller's job queues are quorum queues \
         (--queue-type quorum), which keep no priorities; remove `priority` from the step, or \
         submit to a namespace served with --queue-type classic",
        step.name, step.priority
    ))
}

/// [`refuse_own_queue`] for each of `steps`, up to the first refused; each queue is looked at
/// once, for the first step on it.
pub fn refuse_own_queues<'a>(
    steps: impl IntoIterator<Item = &'a Step>,
    names: &Names,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    steps
        .into_iter()
        .filter(|step| seen.insert(&step.queue))
        .try_for_each(|step| refuse_own_queue(step, names))
}

/// A step whose queue is a name the namespace uses itself (its journal, its events queue, an
/// agent's control queue...): an error naming the step, the queue and what the name is for.
pub fn refuse_own_queue(step: &Step, names: &Names) -> Result<(), String> {
    match names.collision(&step.queue) {
        None => Ok(()),
        Some(collision) => Err(format!(
            "step {}: queue {:?} cannot hold jobs in namespace {names}: {collision}; pick another \
             queue name",
            step.name,
            step.queue.as_str()
        )),
    }
}

fn submit(runs: &mut BTreeMap<RunId, RunRecord>, s: Submit, limits: Limits, ctx: &mut Ctx) {
    let max_steps = limits.max_steps;
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
        external: s.external,
        index: Default::default(),
    };
    let checked = if s.spec.steps.len() > max_steps {
        Err(format!(
            "the pipeline has {} steps; this controller accepts at most {max_steps} per pipeline (--max-steps)",
            s.spec.steps.len()
        ))
    } else {
        validate(&s.spec, &s.params)
            .map_err(|errors| errors.to_string())
            .and_then(|pipeline| {
                // A queue's name is checked once, not once per step: most steps share a few.
                let mut queues = BTreeSet::new();
                for step in &pipeline.steps {
                    refuse_priority(step, limits.step_priorities)?;
                    if queues.insert(&step.queue) {
                        refuse_own_queue(step, ctx.names)?;
                    }
                }
                Ok(pipeline)
            })
    };
    match checked {
        Err(error) => {
            run.status = RunStatus::Rejected;
            run.error = Some(error);
            run.ended_at = Some(ctx.now);
        }
        Ok(pipeline) => {
            run.steps = pipeline.steps.iter().map(StepRecord::new).collect();
            run.params = pipeline.params.clone();
            run.pipeline = Some(pipeline);
            run.reindex();
            run.started_at = Some(ctx.now);
            advance(&mut run, ctx);
        }
    }
    ctx.fx.changed(run.run_id.clone());
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
            let (at, mut queued) = (ctx.fx.actions.len(), false);
            for i in 0..run.steps.len() {
                queued |= abort_step(&run.run_id, &mut run.steps[i], &reason, ctx);
            }
            if queued && !run.external {
                ctx.revoke(at, &run.run_id, None, &reason);
            }
        }
        Some(name) => {
            let Some(i) = run.step_index(name) else {
                return;
            };
            let (at, attempt) = (ctx.fx.actions.len(), run.steps[i].attempt);
            if abort_step(&run.run_id, &mut run.steps[i], &reason, ctx) && !run.external {
                let step = RevokedStep {
                    step: name.clone(),
                    attempt,
                };
                ctx.revoke(at, &run.run_id, Some(step), &reason);
            }
        }
    }
    advance(run, ctx);
    ctx.fx.changed(run.run_id.clone());
}

/// Waiting steps end as aborted at once; a running one is told to stop and ends when it reports.
/// Returns whether the step was queued: its job may still wait on its queue, and the caller
/// revokes it ([`Ctx::revoke`]), once for a whole run.
fn abort_step(run_id: &RunId, step: &mut StepRecord, reason: &str, ctx: &mut Ctx) -> bool {
    match step.status {
        StepStatus::Pending | StepStatus::Queued => {
            let queued = step.status == StepStatus::Queued;
            if let Some(a) = step.current_mut().filter(|a| a.outcome.is_none()) {
                a.outcome = Some(AttemptOutcome::Aborted);
                a.ended_at = Some(ctx.now);
            }
            end_step(step, StepStatus::Aborted, Some(reason.to_string()), ctx.now);
            queued
        }
        StepStatus::Running => {
            step.abort_requested = true;
            if let Some(agent) = step.agent.clone() {
                ctx.cancel(&agent, run_id, &step.name, step.attempt, reason.to_string());
            }
            false
        }
        _ => false,
    }
}

fn claimed(runs: &mut BTreeMap<RunId, RunRecord>, c: Claimed, ctx: &mut Ctx) {
    let Some((step, i)) = step_mut(runs, &c.run_id, &c.step) else {
        let why = format!("run {} has no step {}", c.run_id, c.step);
        ctx.cancel(&c.agent, &c.run_id, &c.step, c.attempt, why);
        return;
    };
    if let Some(why) = take_attempt(step, &c.agent, c.attempt, ctx) {
        ctx.cancel(&c.agent, &c.run_id, &c.step, c.attempt, why);
    } else if step.status == StepStatus::Running {
        ctx.fx.changed_steps(&c.run_id, [i]);
    }
}

/// Step `name` of run `run_id` and its position, found through the run's step index.
fn step_mut<'a>(
    runs: &'a mut Runs,
    run_id: &RunId,
    name: &StepName,
) -> Option<(&'a mut StepRecord, usize)> {
    let run = runs.get_mut(run_id)?;
    let i = run.step_index(name)?;
    Some((&mut run.steps[i], i))
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
        let Some((step, i)) = step_mut(runs, &r.run_id, &r.step) else {
            let why = format!("run {} has no step {}", r.run_id, r.step);
            ctx.cancel(agent, &r.run_id, &r.step, r.attempt, why);
            continue;
        };
        let was_queued = step.status == StepStatus::Queued;
        match take_attempt(step, agent, r.attempt, ctx) {
            Some(why) => ctx.cancel(agent, &r.run_id, &r.step, r.attempt, why),
            // A heartbeat that overtook its `Claimed` counts as the claim.
            None if was_queued => {
                ctx.fx.changed_steps(&r.run_id, [i]);
            }
            None => {}
        }
    }
}

fn finished(runs: &mut BTreeMap<RunId, RunRecord>, f: Finished, ctx: &mut Ctx) {
    let Some(run) = runs.get_mut(&f.run_id) else {
        return;
    };
    let Some(i) = run.step_index(&f.step) else {
        return;
    };
    let RunRecord {
        pipeline,
        steps,
        status,
        ..
    } = &mut *run;
    let (Some(spec), Some(step)) = (
        pipeline.as_ref().and_then(|p| p.steps.get(i)),
        steps.get_mut(i),
    ) else {
        return;
    };
    // Only the agent whose claim of this very attempt was taken may report it: a result for a
    // step still queued (never claimed) is refused too, so nobody but the claimant's report
    // reaches the step's outputs or the cache. An agent publishes `Claimed` before it starts a
    // job, on the same channel as its result, so an honest result never overtakes its claim.
    let owner = step.status == StepStatus::Running && step.agent.as_ref() == Some(&f.agent);
    if status.is_terminal() || step.attempt != f.attempt || !owner {
        tracing::debug!(
            "refusing the result of attempt {} of step {} of run {} from agent {}: the step is {} (attempt {}, agent {})",
            f.attempt,
            f.step,
            f.run_id,
            f.agent,
            step.status.as_str(),
            step.attempt,
            step.agent.as_ref().map(AgentId::as_str).unwrap_or("none")
        );
        return; // fenced: not the current attempt, or not from the agent that claimed it
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
        a.log_delays = f.log_delays.clone();
        a.start = f.start;
        a.log_size = f.log_size;
    }
    let missing: Vec<String> = spec
        .outputs
        .keys()
        .filter(|o| !f.outputs.contains_key(*o))
        .map(ToString::to_string)
        .collect();
    match f.outcome {
        Outcome::Succeeded if missing.is_empty() => {
            // Besides its declared outputs, a function step reports the artifacts it stored
            // itself (`Task.upload_artifact`); they are its outputs as well.
            step.outputs = f
                .outputs
                .into_iter()
                .filter(|(name, _)| {
                    spec.outputs.contains_key(name) || matches!(spec.kind, JobKind::Function { .. })
                })
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
            fail_attempt(step, spec, why, now);
        }
        Outcome::Aborted => {
            let why = f.message.unwrap_or_else(|| "aborted".to_string());
            end_step(step, StepStatus::Aborted, Some(why), now);
        }
        Outcome::Released if step.abort_requested => {
            let why = format!("aborted; agent {} released attempt {}", f.agent, f.attempt);
            end_step(step, StepStatus::Aborted, Some(why), now);
        }
        Outcome::Released => {
            let why = format!("released by agent {}", f.agent);
            let why = match &f.message {
                Some(m) if !m.is_empty() => format!("{why}: {m}"),
                _ => why,
            };
            hand_back(step, &why);
        }
        Outcome::Failed | Outcome::TimedOut | Outcome::Error => {
            fail_attempt(step, spec, failure_text(&f), now);
        }
    }
    // Step `i` itself changed above, whatever the advance changed besides.
    match advance_from(run, i, ctx) {
        Some(changed) => ctx
            .fx
            .changed_steps(&run.run_id, changed.into_iter().chain([i])),
        None => ctx.fx.changed(run.run_id.clone()),
    }
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
        if run.pipeline.is_none() {
            continue;
        }
        let mut changed = false;
        for step in run.steps.iter_mut() {
            let expired =
                step.status == StepStatus::Running && step.lease_until.is_some_and(|t| t <= now);
            if run.external && (expired || external::unclaimed(step, ctx.config.lease_ms, now)) {
                lose_external(step, ctx.config.lease_ms, now);
                changed = true;
            } else if expired {
                lose_attempt(step, ctx.config.lease_ms, ctx.max_lost_attempts, now);
                changed = true;
            }
            if step.status == StepStatus::Pending && step.retry_at.is_some_and(|t| t <= now) {
                step.retry_at = None;
                changed = true;
            }
        }
        if advance(run, ctx) || changed {
            ctx.fx.changed(run.run_id.clone());
        }
    }
}
