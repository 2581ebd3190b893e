//! How a run moves forward: readiness, cache hits, dispatch, failed attempts and retries,
//! and the run's end. Called by the event handlers in the parent module.

use super::resolve;
use super::state::StepIndex;
use super::{
    Action, AttemptOutcome, AttemptRecord, Ctx, PendingReason, RunRecord, RunStatus,
    SchedulerConfig, StepRecord, StepStatus,
};
use crate::cache::cache_key;
use drover_protocol::message::{JobInput, JobSpec, StepJob};
use drover_protocol::validate::Step;
use drover_protocol::{AgentId, AttemptNo, RunId};
use std::collections::BTreeSet;
use std::time::Duration;

/// The lease ran out: the agent is presumed gone. That is not the step's failure: it is
/// dispatched again without counting against `retries`, unless it was lost more than
/// `max_lost` times (then it fails, naming the agents). An abort in flight ends as aborted.
pub(super) fn lose_attempt(step: &mut StepRecord, lease_ms: u64, max_lost: u32, now: u64) {
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
        return;
    }
    let lost = step.lost_attempts().count();
    if lost > max_lost as usize {
        let mut agents: Vec<String> = Vec::new();
        for a in step.lost_attempts() {
            let name = a.agent.as_ref().map_or("?", AgentId::as_str).to_string();
            if !agents.contains(&name) {
                agents.push(name);
            }
        }
        let why = format!(
            "lost {lost} attempts, more than --max-lost-attempts {max_lost}: agent(s) {} \
             sent no heartbeat within the lease",
            agents.join(", ")
        );
        end_step(step, StepStatus::Failed, Some(why), now);
    } else {
        hand_back(
            step,
            &format!("lost: {why}; dispatched again (lost {lost} of at most {max_lost})"),
        );
    }
}

/// The lease of an attempt of an `external` run ran out, or its queued attempt was not taken
/// within a lease: the submitting process that runs the run's steps is presumed gone, and
/// nobody else can run the step, so it fails saying so (a driver's failure then ends the run).
pub(super) fn lose_external(step: &mut StepRecord, lease_ms: u64, now: u64) {
    let lease = humantime::format_duration(Duration::from_millis(lease_ms));
    let attempt = step.attempt;
    let why = match (step.status, step.agent.as_ref()) {
        (StepStatus::Running, Some(runner)) => format!(
            "the submitting process {runner} that runs this step locally sent no report for \
             attempt {attempt} within the lease ({lease}); presumed gone"
        ),
        _ => format!(
            "the submitting process did not start attempt {attempt} within the lease ({lease}); \
             presumed gone"
        ),
    };
    if let Some(a) = step.current_mut() {
        a.ended_at = Some(now);
        a.outcome = Some(AttemptOutcome::Lost);
        a.message = Some(why.clone());
    }
    let status = if step.abort_requested {
        StepStatus::Aborted
    } else {
        StepStatus::Failed
    };
    end_step(step, status, Some(why), now);
}

/// The attempt ended through no fault of the step (agent lost or drained): the step waits for
/// its next attempt, dispatched by the next `advance`, and `failures` stays as it was.
pub(super) fn hand_back(step: &mut StepRecord, why: &str) {
    step.status = StepStatus::Pending;
    step.retry_at = None;
    step.lease_until = None;
    step.agent = None;
    step.message = Some(format!("attempt {} {why}", step.attempt));
}

/// Counts a failed attempt: a retry after the backoff while retries remain, else the step fails.
pub(super) fn fail_attempt(step: &mut StepRecord, spec: &Step, why: String, now: u64) {
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

pub(super) fn end_step(
    step: &mut StepRecord,
    status: StepStatus,
    message: Option<String>,
    now: u64,
) {
    step.status = status;
    step.message = message;
    step.pending_reason = None;
    step.lease_until = None;
    step.retry_at = None;
    step.ended_at = Some(now);
}

/// Moves every pending step whose parents are all done to cached or queued, skips those
/// under a failed parent, and ends the run when every step is terminal. Returns whether
/// anything changed.
pub(super) fn advance(run: &mut RunRecord, ctx: &mut Ctx) -> bool {
    let mut changed = end_after_driver(run, ctx);
    run.reindex();
    let RunRecord {
        run_id,
        pipeline,
        steps,
        external,
        index,
        ..
    } = run;
    let Some(pipeline) = pipeline.as_ref() else {
        return changed;
    };
    // Parents come first, so one pass settles chains of cache hits and skips.
    for i in 0..pipeline.steps.len() {
        changed |= settle(run_id, &pipeline.steps[i], steps, index, i, *external, ctx);
    }
    finish_if_done(run, ctx.now) || changed
}

/// What [`advance`] does after an event that changed step `i` alone (its attempt ended): only
/// `i` and the steps below it that this settles are looked at, so the cost follows what
/// changed, not the size of the run. Returns the positions of the steps that changed, or `None`
/// when it had to advance the whole run instead: a limited queue (room freed by this step may
/// let a held step of any queue go), a run without a full step index, or a failed driver
/// (which ends every other step).
///
/// The two agree because every other event leaves the run advanced: no pending step with its
/// parents done is left waiting, except for a retry's backoff, a callback or room on a queue.
pub(super) fn advance_from(
    run: &mut RunRecord,
    i: usize,
    ctx: &mut Ctx,
) -> Option<BTreeSet<usize>> {
    run.reindex();
    if ctx.room.is_some() || !run.indexed() || end_after_driver(run, ctx) {
        advance(run, ctx);
        return None;
    }
    let mut changed = BTreeSet::new();
    let RunRecord {
        run_id,
        pipeline,
        steps,
        external,
        index,
        ..
    } = run;
    let pipeline = pipeline.as_ref()?;
    // Children come after their parents, so taking the lowest position first settles each step
    // after every parent this event changed, as the full pass does.
    let mut todo = BTreeSet::from([i]);
    while let Some(j) = todo.pop_first() {
        if settle(run_id, &pipeline.steps[j], steps, index, j, *external, ctx) {
            changed.insert(j);
        }
        if steps[j].status.is_terminal() && (j == i || changed.contains(&j)) {
            todo.extend(index.children(j).unwrap_or_default());
        }
    }
    finish_if_done(run, ctx.now);
    Some(changed)
}

/// Settles step `i` if it is pending with nothing to wait for but its parents: skipped under
/// a parent that did not succeed, held for its callback, or made ready once every parent is
/// done. Returns whether it changed.
fn settle(
    run_id: &RunId,
    spec: &Step,
    steps: &mut [StepRecord],
    index: &StepIndex,
    i: usize,
    external: bool,
    ctx: &mut Ctx,
) -> bool {
    if steps[i].status != StepStatus::Pending || steps[i].retry_at.is_some() {
        return false;
    }
    let parents = || index.parent_records(spec, steps, i);
    let blocked = parents()
        .find(|p| p.status.is_terminal() && !p.status.is_done())
        .map(|p| format!("parent {} {}", p.name, p.status.as_str()));
    if let Some(why) = blocked {
        end_step(&mut steps[i], StepStatus::Skipped, Some(why), ctx.now);
        true
    } else if parents().all(|p| p.status.is_done()) {
        match (spec.await_callback, steps[i].callback) {
            (true, None) => hold(&mut steps[i], PendingReason::WaitingForCallback),
            (true, Some(false)) => {
                let why = "skipped: its pre_execute_callback returned False".to_string();
                end_step(&mut steps[i], StepStatus::Skipped, Some(why), ctx.now);
                true
            }
            _ => make_ready(run_id, spec, steps, index, i, external, ctx),
        }
    } else {
        false
    }
}

/// Why the run's driver takes the run down: it ended in anything but success. `None` for runs
/// without a driver and while the driver runs or after it succeeded.
pub(super) fn driver_failure(run: &RunRecord) -> Option<String> {
    let driver = run.driver()?;
    let step = run.step(&driver.name)?;
    let failed = step.status.is_terminal() && !step.status.is_done();
    failed.then(|| {
        let why = step.message.as_deref().unwrap_or("no message");
        let mut text = format!("driver {} {}: {why}", step.name, step.status.as_str());
        // A driver usually fails because a component it used failed: name those steps, since
        // the driver's own message is only how its process ended.
        let components: Vec<&str> = run
            .steps
            .iter()
            .filter(|s| s.name != driver.name && s.status == StepStatus::Failed)
            .map(|s| s.name.as_str())
            .collect();
        if !components.is_empty() {
            text.push_str(&format!("; failed step(s): {}", components.join(", ")));
        }
        text
    })
}

/// Once the driver has failed, nothing else in the run has a caller left to use its result:
/// every other unfinished step is aborted (running attempts are told to stop, queued jobs are
/// revoked) and the run's error names the driver. A run being aborted on request is left to that. Returns whether
/// anything changed.
fn end_after_driver(run: &mut RunRecord, ctx: &mut Ctx) -> bool {
    if run.status.is_terminal() || run.abort_requested {
        return false;
    }
    let Some(why) = driver_failure(run) else {
        return false;
    };
    let mut changed = false;
    if run.error.as_deref() != Some(why.as_str()) {
        run.error = Some(why.clone());
        changed = true;
    }
    let (at, mut queued) = (ctx.fx.actions.len(), false);
    for step in run.steps.iter_mut() {
        if step.status.is_terminal() || step.abort_requested {
            continue;
        }
        queued |= super::abort_step(&run.run_id, step, &why, ctx);
        changed = true;
    }
    if queued && !run.external {
        ctx.revoke(at, &run.run_id, None, &why);
    }
    changed
}

/// A step whose parents are done: a cache hit ends it at once, otherwise its next attempt is
/// queued, unless its queue is at its limit (it then waits, and a later tick tries again).
/// A step of an `external` run is queued for its submitter: no queue limit, no job.
/// Returns whether the step changed.
pub(super) fn make_ready(
    run_id: &RunId,
    spec: &Step,
    steps: &mut [StepRecord],
    index: &StepIndex,
    i: usize,
    external: bool,
    ctx: &mut Ctx,
) -> bool {
    let ready = job_inputs(spec, steps, index).and_then(|inputs| {
        let job = resolve::for_job(run_id, spec, steps, &ctx.config.controller_url)?;
        let keyed = resolve::for_key(spec, steps)?;
        Ok((inputs, job, keyed))
    });
    let (inputs, job_spec, keyed) = match ready {
        Ok(ready) => ready,
        Err(why) => {
            end_step(&mut steps[i], StepStatus::Failed, Some(why), ctx.now);
            return true;
        }
    };
    let step = &mut steps[i];
    if spec.cache && end_from_cache(step, &keyed, &inputs, ctx) {
        return true;
    }
    let room = ctx.room.as_mut().filter(|_| !external);
    if let Some(left) = room.and_then(|r| r.get_mut(&spec.queue)) {
        if *left == 0 {
            return hold(
                step,
                PendingReason::QueueFull {
                    queue: spec.queue.clone(),
                },
            );
        }
        *left -= 1;
    }
    if step.pending_reason.take().is_some() {
        step.message = None;
    }
    dispatch(run_id, &job_spec, step, inputs, external, ctx);
    true
}

/// Records the step's cache key and, on a hit, ends it with the cached outputs. Returns whether
/// the step ended (a hit, or a key that cannot be computed).
fn end_from_cache(step: &mut StepRecord, spec: &Step, inputs: &[JobInput], ctx: &Ctx) -> bool {
    let key = match cache_key(spec, inputs) {
        Ok(key) => key,
        Err(e) => {
            let why = format!("cannot compute the cache key: {e}");
            end_step(step, StepStatus::Failed, Some(why), ctx.now);
            return true;
        }
    };
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
        return true;
    }
    step.cache_key = Some(key);
    false
}

/// Keeps a ready step pending for `reason`, said in its message. Returns whether it changed.
fn hold(step: &mut StepRecord, reason: PendingReason) -> bool {
    if step.pending_reason.as_ref() == Some(&reason) {
        return false;
    }
    step.message = Some(reason.to_string());
    step.pending_reason = Some(reason);
    true
}

/// Queues the step's next attempt: records it and publishes its job (none for an `external`
/// run: its submitter takes the attempt over HTTP).
fn dispatch(
    run_id: &RunId,
    spec: &Step,
    step: &mut StepRecord,
    inputs: Vec<JobInput>,
    external: bool,
    ctx: &mut Ctx,
) {
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
        log_delays: Vec::new(),
        start: None,
        log_size: None,
        log_archive: None,
    });
    if external {
        return;
    }
    let job = step_job(run_id, spec, step.attempt, inputs, ctx.config);
    ctx.fx.actions.push(Action::Dispatch {
        queue: spec.queue.clone(),
        job,
    });
}

/// The artifacts a step consumes, from its parents' recorded outputs.
pub(super) fn job_inputs(
    spec: &Step,
    steps: &[StepRecord],
    index: &StepIndex,
) -> Result<Vec<JobInput>, String> {
    spec.inputs
        .iter()
        .map(|(producer, output)| {
            let artifact = index
                .find(steps, producer)
                .and_then(|s| s.outputs.get(output))
                .ok_or_else(|| format!("input ${{{producer}.{output}}} has no stored artifact"))?;
            Ok(JobInput {
                step: producer.clone(),
                output: output.clone(),
                digest: artifact.digest.clone(),
                size: artifact.size,
                file_name: artifact.file_name.clone(),
                content: None,
            })
        })
        .collect()
}

pub(super) fn step_job(
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
            priority: spec.priority,
        },
        controller_url: config.controller_url.clone(),
        lease_ms: config.lease_ms,
        artifact_store: config.artifact_store.clone(),
        epoch: config.epoch,
        inline_outputs: config.inline_outputs,
        // This controller reads `Events` messages ([`crate::service`]'s consumer).
        event_batches: true,
    })
}

/// Ends the run once every step is terminal. Returns whether it ended now.
pub(super) fn finish_if_done(run: &mut RunRecord, now: u64) -> bool {
    if run.status.is_terminal() || !all_terminal(run) {
        return false;
    }
    let Some(pipeline) = run.pipeline.as_ref() else {
        return false;
    };
    let failed: Vec<String> = run
        .steps
        .iter()
        .zip(&pipeline.steps)
        .filter(|(s, spec)| s.status == StepStatus::Failed && !spec.continue_on_fail)
        .map(|(s, _)| s.name.to_string())
        .collect();
    let driver_failed = driver_failure(run);
    let any_aborted = run.steps.iter().any(|s| s.status == StepStatus::Aborted);
    run.status = if run.abort_requested {
        RunStatus::Aborted
    } else if let Some(why) = driver_failed {
        run.error = Some(why);
        RunStatus::Failed
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

/// Whether every step of the run is terminal. Steps mostly end in order, so the index keeps
/// how far the steps are known to be terminal and each call goes on from there; the run ends
/// only after a full check, so a step that left a terminal status is never missed.
fn all_terminal(run: &mut RunRecord) -> bool {
    let steps = &run.steps;
    let mut at = run.index.settled.min(steps.len());
    while at < steps.len() && steps[at].status.is_terminal() {
        at += 1;
    }
    run.index.settled = at;
    if at < steps.len() {
        return false;
    }
    let all = steps.iter().all(|s| s.status.is_terminal());
    if !all {
        run.index.settled = 0;
    }
    all
}
