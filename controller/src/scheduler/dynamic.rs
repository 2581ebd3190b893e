//! Dynamic runs: a running step of a run with a driver adds a step. The call is identified by
//! `(caller, seq)`, so a replay after the caller restarted gets the step it made before instead
//! of a new one, and a replay that calls something else is refused, naming the call.

use super::progress::advance;
use super::{
    Effects, RunRecord, RunStatus, State, StepCall, StepRecord, StepStatus, run_mut, split,
};
use drover_api::{AddStep, CallKey, StepAdded};
use drover_protocol::validate::validate_added;
use drover_protocol::{RunId, StepName};

/// Adds `request.step` to run `run_id` at time `now`, or finds the step an earlier attempt of
/// the caller made with the same call. The error is the reason the request is refused, for
/// the caller to read.
pub fn add_step(
    state: &mut State,
    request: AddStep,
    run_id: &RunId,
    now: u64,
) -> Result<(StepAdded, Effects), String> {
    let max_steps = state.max_steps;
    let step_priorities = state.step_priorities;
    let (mut ctx, runs, _) = split(state, now);
    let run = run_mut(runs, run_id)?;
    check_caller(run, &request)?;
    let AddStep {
        caller, call, step, ..
    } = request;
    if let Some(existing) = made_before(run, &caller, &call)? {
        // Nothing changed, but written again: the first answer may have been a failed write.
        ctx.fx.changed(run_id.clone());
        let added = StepAdded {
            run_id: run_id.clone(),
            step: existing,
            existing: true,
        };
        return Ok((added, ctx.fx));
    }
    if run.steps.len() >= max_steps {
        return Err(format!(
            "run {run_id} has {} steps; this controller accepts at most {max_steps} per pipeline \
             (--max-steps)",
            run.steps.len()
        ));
    }
    let mut spec = step;
    let name = free_name(run, &spec.name)?;
    spec.name = name.to_string();
    let pipeline = run
        .pipeline
        .as_mut()
        .ok_or_else(|| format!("run {run_id} was rejected"))?;
    let step = validate_added(pipeline, &spec)
        .map_err(|e| format!("step {name} (call {} of {caller}): {e}", call.seq))?;
    super::refuse_priority(&step, step_priorities)?;
    super::refuse_own_queue(&step, ctx.names)?;
    let mut record = StepRecord::new(&step);
    record.call = Some(StepCall {
        caller,
        seq: call.seq,
        component: call.component,
        digest: call.digest,
        added_at: now,
    });
    pipeline.steps.push(step);
    run.steps.push(record);
    advance(run, &mut ctx);
    ctx.fx.changed(run_id.clone());
    let added = StepAdded {
        run_id: run_id.clone(),
        step: name,
        existing: false,
    };
    Ok((added, ctx.fx))
}

/// Only the current attempt of a running step of a running run with a driver may add steps.
fn check_caller(run: &RunRecord, request: &AddStep) -> Result<(), String> {
    let id = &run.run_id;
    if run.pipeline.as_ref().and_then(|p| p.driver()).is_none() {
        return Err(format!("run {id} is not a dynamic run (it has no driver)"));
    }
    if run.status != RunStatus::Running {
        return Err(format!(
            "run {id} is {}: it takes no more steps",
            run.status.as_str()
        ));
    }
    let caller = &request.caller;
    let step = run
        .step(caller)
        .ok_or_else(|| format!("run {id} has no step {caller} to add steps from"))?;
    // Queued counts too: the caller's claim may reach the controller after its first call.
    let active = matches!(step.status, StepStatus::Running | StepStatus::Queued);
    if !active || step.attempt != request.attempt {
        return Err(format!(
            "attempt {} of step {caller} cannot add steps: the step is {} and its current \
             attempt is {}; only the current attempt of a running step can",
            request.attempt,
            step.status.as_str(),
            step.attempt
        ));
    }
    if step.abort_requested {
        return Err(format!(
            "step {caller} is being aborted: it cannot add steps"
        ));
    }
    Ok(())
}

/// The step this call made before (a replay), or an error naming the call when the replay
/// calls another component or passes other arguments than the first time.
fn made_before(
    run: &RunRecord,
    caller: &StepName,
    call: &CallKey,
) -> Result<Option<StepName>, String> {
    let found = run.steps.iter().find_map(|s| {
        let c = s.call.as_ref()?;
        (&c.caller == caller && c.seq == call.seq).then_some((s, c))
    });
    let Some((step, before)) = found else {
        return Ok(None);
    };
    if before.component == call.component && before.digest == call.digest {
        return Ok(Some(step.name.clone()));
    }
    Err(format!(
        "replay diverged at call {} of {caller}: it made step {} from component {} with \
         arguments {}, and now calls component {} with arguments {}; a pipeline function must \
         make the same calls in the same order",
        call.seq, step.name, before.component, before.digest, call.component, call.digest
    ))
}

/// `base` when no step has that name, else the first free `base_1`, `base_2`, ...
fn free_name(run: &RunRecord, base: &str) -> Result<StepName, String> {
    let taken = |name: &str| run.steps.iter().any(|s| s.name.as_str() == name);
    let name = if taken(base) {
        (1u32..)
            .map(|n| format!("{base}_{n}"))
            .find(|n| !taken(n))
            .unwrap_or_default()
    } else {
        base.to_string()
    };
    StepName::new(name.as_str()).map_err(|e| format!("bad step name {name:?}: {e}"))
}
