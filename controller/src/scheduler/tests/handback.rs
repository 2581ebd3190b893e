//! Attempts that end through no fault of the step: lost with their agent (lease expired) or
//! released by a draining agent. Neither counts against `retries`; lost ones have their own bound.

use super::*;

const ONE_SHOT: &str = "[[step]]\nname = \"x\"\ncommand = [\"sleep\", \"100\"]\nretries = 0\n";

fn record<'a>(st: &'a State, run: &RunId) -> &'a StepRecord {
    st.runs[run].step(&step("x")).unwrap()
}

#[test]
fn a_lost_attempt_is_dispatched_again_without_using_a_retry() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, ONE_SHOT, 0);
    let first = jobs(&fx).pop().unwrap();
    claim(&mut st, &first, "a1", 0);
    let fx = handle(&mut st, Event::Tick, LEASE);
    let second = jobs(&fx)
        .pop()
        .expect("the lost attempt is dispatched again");
    assert_eq!(second.attempt, AttemptNo(2));
    let x = record(&st, &run);
    assert_eq!(x.status, StepStatus::Queued);
    assert_eq!(x.failures, 0);
    assert_eq!(x.attempts[0].outcome, Some(AttemptOutcome::Lost));
    assert!(
        x.message
            .as_deref()
            .unwrap()
            .contains("dispatched again (lost 1 of at most 3)")
    );

    // A real failure still counts: with `retries = 0` the next one ends the step.
    run_job(&mut st, &second, "a2", Outcome::Failed, 4_000);
    assert_eq!(status(&st, &run, "x"), StepStatus::Failed);
    assert_eq!(record(&st, &run).failures, 1);
    assert_eq!(st.runs[&run].status, RunStatus::Failed);
}

#[test]
fn more_lost_attempts_than_the_bound_fail_the_step_naming_the_agents() {
    let mut st = new_state();
    st.max_lost_attempts = 2;
    let (run, fx) = submit_toml(&mut st, ONE_SHOT, 0);
    let mut job = jobs(&fx).pop().unwrap();
    let mut now = 0;
    for agent in ["a1", "a2"] {
        claim(&mut st, &job, agent, now);
        now += LEASE;
        job = jobs(&handle(&mut st, Event::Tick, now))
            .pop()
            .expect("dispatched again while within the bound");
    }
    claim(&mut st, &job, "a3", now);
    let fx = handle(&mut st, Event::Tick, now + LEASE);
    assert!(jobs(&fx).is_empty(), "{fx:?}");
    let x = record(&st, &run);
    assert_eq!(x.status, StepStatus::Failed);
    assert_eq!(x.failures, 0);
    assert_eq!(x.lost_attempts().count(), 3);
    let why = x.message.as_deref().unwrap();
    assert!(why.contains("lost 3 attempts"), "{why}");
    assert!(why.contains("--max-lost-attempts 2"), "{why}");
    assert!(why.contains("a1, a2, a3"), "{why}");
    assert_eq!(st.runs[&run].status, RunStatus::Failed);
}

#[test]
fn a_released_attempt_is_dispatched_again_at_once_and_counts_against_nothing() {
    let mut st = new_state();
    st.max_lost_attempts = 0;
    let (run, fx) = submit_toml(&mut st, ONE_SHOT, 0);
    let mut job = jobs(&fx).pop().unwrap();
    // Released more often than either bound would allow a failure or a loss.
    for (n, agent) in ["a1", "a2"].into_iter().enumerate() {
        claim(&mut st, &job, agent, 100);
        let fx = handle(
            &mut st,
            Event::Finished(finished_msg(&job, agent, Outcome::Released, None)),
            200,
        );
        job = jobs(&fx).pop().expect("dispatched again in the same step");
        assert_eq!(job.attempt, AttemptNo(n as u32 + 2));
        let x = record(&st, &run);
        assert_eq!(x.status, StepStatus::Queued);
        assert_eq!(x.attempts[n].outcome, Some(AttemptOutcome::Released));
        assert!(
            x.message
                .as_deref()
                .unwrap()
                .contains(&format!("released by agent {agent}"))
        );
    }
    let x = record(&st, &run);
    assert_eq!((x.failures, x.lost_attempts().count()), (0, 0));
    run_job(&mut st, &job, "a3", Outcome::Succeeded, 300);
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn a_released_attempt_of_an_aborted_step_ends_it_aborted() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, ONE_SHOT, 0);
    let job = jobs(&fx).pop().unwrap();
    claim(&mut st, &job, "a1", 0);
    let abort = Abort {
        run_id: run.clone(),
        step: None,
        reason: None,
    };
    assert_eq!(cancels(&handle(&mut st, Event::Abort(abort), 10)).len(), 1);
    let fx = handle(
        &mut st,
        Event::Finished(finished_msg(&job, "a1", Outcome::Released, None)),
        20,
    );
    assert!(jobs(&fx).is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Aborted);
    assert_eq!(st.runs[&run].status, RunStatus::Aborted);
}
