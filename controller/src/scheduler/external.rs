//! Runs executed by their submitter (`RunRecord::external`): the submitting process takes each
//! queued attempt, keeps its lease and ends it with reports over HTTP, in place of an agent's
//! `Claimed`, `Heartbeat` and `Finished`. Nothing of such a run is dispatched; when its
//! submitter goes silent for a lease, the steps it ran fail (see `progress::lose_external`).

use super::progress::{advance, end_step};
use super::{Effects, State, StepRecord, StepStatus, finished, run_mut, split, take_attempt};
use drover_api::{Report, StepReport, StepReported};
use drover_protocol::message::Finished;
use drover_protocol::{AttemptNo, RunId, StepName};

/// Applies one report about step `step` of the external run `run_id` at time `now`; the answer
/// says where the step stands. The error is why the report is refused, for the runner to read
/// (it then stops the attempt).
pub fn report(
    state: &mut State,
    run_id: &RunId,
    step: &StepName,
    report: StepReport,
    now: u64,
) -> Result<(StepReported, Effects), String> {
    let (mut ctx, runs, _) = split(state, now);
    let run = run_mut(runs, run_id)?;
    if !run.external {
        return Err(format!(
            "run {run_id} is run by agents, not by its submitter: its steps take no reports"
        ));
    }
    let i = run
        .step_index(step)
        .ok_or_else(|| format!("run {run_id} has no step {step}"))?;
    let StepReport { runner, report } = report;
    match report {
        Report::Started => {
            let current = &mut run.steps[i];
            let mine =
                current.status == StepStatus::Running && current.agent == Some(runner.clone());
            if current.status == StepStatus::Queued || mine {
                let attempt = current.attempt;
                if let Some(why) = take_attempt(current, &runner, attempt, &ctx) {
                    return Err(why);
                }
                ctx.fx.changed(run_id.clone());
            } else if current.status == StepStatus::Running {
                return Err(format!(
                    "step {step} already runs for {}",
                    current.agent.as_ref().map_or("?", |a| a.as_str())
                ));
            }
            // Pending (parents, a retry's backoff) or ended (a cache hit, skipped, aborted):
            // answered as it is.
        }
        Report::Alive { attempt } => {
            if run.status.is_terminal() {
                return Err(format!("run {run_id} is {}", run.status.as_str()));
            }
            if let Some(why) = take_attempt(&mut run.steps[i], &runner, attempt, &ctx) {
                return Err(why);
            }
        }
        Report::Skipped { reason } => {
            let current = &mut run.steps[i];
            if !matches!(current.status, StepStatus::Pending | StepStatus::Queued) {
                return Err(format!(
                    "step {step} is {}: only a step that has not started can be skipped",
                    current.status.as_str()
                ));
            }
            // A queued attempt that never ran is withdrawn, not counted.
            if current.status == StepStatus::Queued && current.attempts.pop().is_some() {
                current.attempt = AttemptNo(current.attempt.0.saturating_sub(1));
            }
            let why = format!("skipped by {runner}: {reason}");
            end_step(current, StepStatus::Skipped, Some(why), now);
            advance(run, &mut ctx);
            ctx.fx.changed(run_id.clone());
        }
        Report::Finished {
            attempt,
            outcome,
            exit_code,
            message,
            outputs,
        } => {
            let current = &run.steps[i];
            let owner = current.status == StepStatus::Running
                && current.agent.as_ref() == Some(&runner)
                && current.attempt == attempt;
            if run.status.is_terminal() || !owner {
                return Err(format!(
                    "attempt {attempt} of step {step} is not running for {runner}: the step is {} \
                     (attempt {})",
                    current.status.as_str(),
                    current.attempt
                ));
            }
            let started_at = current.current().and_then(|a| a.started_at).unwrap_or(now);
            let result = Finished {
                run_id: run_id.clone(),
                step: step.clone(),
                attempt,
                agent: runner,
                outcome,
                exit_code,
                outputs,
                message,
                started_at,
                ended_at: now,
                log_delays: Vec::new(),
                start: None,
                log_size: None,
                inline: Default::default(),
            };
            finished(runs, result, &mut ctx);
        }
    }
    let run = run_mut(runs, run_id)?;
    let current = &run.steps[i];
    let answer = StepReported {
        run_id: run_id.clone(),
        step: step.clone(),
        attempt: current.attempt,
        status: current.status,
        lease_ms: ctx.config.lease_ms,
        abort_requested: current.abort_requested || run.abort_requested,
        outputs: current.outputs.clone(),
    };
    Ok((answer, ctx.fx))
}

/// A queued attempt of an external run that its submitter has not taken within a lease.
pub(super) fn unclaimed(step: &StepRecord, lease_ms: u64, now: u64) -> bool {
    step.status == StepStatus::Queued
        && step
            .current()
            .is_some_and(|a| a.queued_at.saturating_add(lease_ms) <= now)
}
