//! Step callbacks: a step with `await_callback` waits, once its parents are done, until the
//! process running its pipeline's logic answers its `pre_execute_callback`: run it, or skip it
//! (and so its descendants).

use super::progress::advance;
use super::{Effects, PendingReason, State, StepStatus, run_mut, split};
use drover_protocol::{RunId, StepName};

/// Records the answer to step `step`'s callback at time `now` and moves the run on; the step's
/// status afterwards. The error is why the answer is refused.
pub fn answer_callback(
    state: &mut State,
    run_id: &RunId,
    step: &StepName,
    proceed: bool,
    now: u64,
) -> Result<(StepStatus, Effects), String> {
    let (mut ctx, runs, _) = split(state, now);
    let run = run_mut(runs, run_id)?;
    if run.status.is_terminal() {
        return Err(format!("run {run_id} is {}", run.status.as_str()));
    }
    let i = run
        .step_index(step)
        .ok_or_else(|| format!("run {run_id} has no step {step}"))?;
    let awaits = run.step_spec(step).is_some_and(|s| s.await_callback);
    if !awaits {
        return Err(format!("step {step} has no callback to answer"));
    }
    let current = &mut run.steps[i];
    if current.callback.is_some() || current.status != StepStatus::Pending {
        return Err(format!(
            "the callback of step {step} was answered already (the step is {})",
            current.status.as_str()
        ));
    }
    current.callback = Some(proceed);
    if current.pending_reason == Some(PendingReason::WaitingForCallback) {
        current.pending_reason = None;
        current.message = None;
    }
    advance(run, &mut ctx);
    ctx.fx.changed(run_id.clone());
    Ok((run.steps[i].status, ctx.fx))
}
