//! Recording that an attempt's complete log is kept in the artifact store.

use super::{ArchivedLog, Effects, State};
use drover_protocol::{AttemptNo, RunId, StepName};

/// Records `archived` on attempt `attempt` of `step`; nothing changes when the run, step or
/// attempt is unknown or the same archive is recorded already (an archive made twice).
pub fn log_archived(
    state: &mut State,
    run: &RunId,
    step: &StepName,
    attempt: AttemptNo,
    archived: ArchivedLog,
) -> Effects {
    let mut fx = Effects::default();
    let Some(record) = state.runs.get_mut(run) else {
        return fx;
    };
    let Some(i) = record.step_index(step) else {
        return fx;
    };
    let Some(a) = record.steps[i]
        .attempts
        .iter_mut()
        .find(|a| a.attempt == attempt)
    else {
        return fx;
    };
    if a.log_archive.as_ref() == Some(&archived) {
        return fx;
    }
    a.log_archive = Some(archived);
    fx.changed_steps(run, [i]);
    fx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{jobs, new_state, run_job, submit_toml};
    use drover_protocol::Digest;
    use drover_protocol::message::Outcome;

    #[test]
    fn an_archived_log_is_recorded_once_on_its_attempt_only() {
        let mut st = new_state();
        let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n";
        let (run, fx) = submit_toml(&mut st, steps, 0);
        let job = jobs(&fx).remove(0);
        run_job(&mut st, &job, "w", Outcome::Succeeded, 1);
        let archived = ArchivedLog {
            digest: Digest::of_bytes(b"hello\n"),
            size: 6,
        };

        let fx = log_archived(&mut st, &run, &job.step, job.attempt, archived.clone());
        assert_eq!(fx.steps[&run], [0].into());
        let record = &st.runs[&run].steps[0].attempts[0];
        assert_eq!(record.log_archive.as_ref(), Some(&archived));

        // Made twice, or for an attempt that never was: nothing to write.
        let again = log_archived(&mut st, &run, &job.step, job.attempt, archived.clone());
        assert!(again.is_empty());
        let unknown = log_archived(&mut st, &run, &job.step, AttemptNo(7), archived);
        assert!(unknown.is_empty());
    }
}
