//! Runs executed by their submitter: nothing is dispatched, the submitter's reports move the
//! steps, and a silent submitter fails the steps it held instead of handing them back.

use super::*;
use drover_api::{Report, StepReport};
use drover_protocol::OutputName;

const TWO: &str = r#"
[[step]]
name = "a"
command = ["true"]
outputs = { out = "out.txt" }

[[step]]
name = "b"
command = ["cat", "${a.out}"]
"#;

const RUNNER: &str = "local-laptop-42";

fn submit_external(st: &mut State, steps: &str, now: u64) -> (RunId, Effects) {
    let text = format!("[pipeline]\nname = \"p\"\n{steps}");
    let spec = PipelineSpec::from_toml(&text).unwrap();
    let run_id = RunId::generate();
    let submit = Submit {
        run_id: run_id.clone(),
        spec,
        params: BTreeMap::new(),
        submitted_by: None,
        external: true,
    };
    let fx = handle(st, Event::Submit(submit), now);
    (run_id, fx)
}

fn send(
    st: &mut State,
    run: &RunId,
    name: &str,
    report: Report,
    now: u64,
) -> Result<(drover_api::StepReported, Effects), String> {
    let report = StepReport {
        runner: agent(RUNNER),
        report,
    };
    super::report(st, run, &step(name), report, now)
}

fn finished(attempt: u32, outcome: Outcome, outputs: BTreeMap<OutputName, ArtifactRef>) -> Report {
    Report::Finished {
        attempt: AttemptNo(attempt),
        outcome,
        exit_code: Some(0),
        message: None,
        outputs,
    }
}

fn out(content: &str) -> BTreeMap<OutputName, ArtifactRef> {
    BTreeMap::from([(
        OutputName::new("out").unwrap(),
        artifact(content, "out.txt"),
    )])
}

#[test]
fn an_external_run_is_queued_for_its_submitter_and_dispatches_nothing() {
    let mut st = new_state();
    let (run, fx) = submit_external(&mut st, TWO, 0);
    assert!(jobs(&fx).is_empty(), "{fx:?}");
    assert_eq!(st.runs[&run].steps[0].status, StepStatus::Queued);
    let (answer, fx) = send(&mut st, &run, "a", Report::Started, 10).unwrap();
    assert_eq!(answer.status, StepStatus::Running);
    assert_eq!(answer.attempt, AttemptNo(1));
    assert_eq!(answer.lease_ms, LEASE);
    assert!(fx.actions.is_empty());
    // b is still waiting on a: answered as it is, not taken.
    let (answer, _) = send(&mut st, &run, "b", Report::Started, 20).unwrap();
    assert_eq!(answer.status, StepStatus::Pending);
    let (answer, fx) = send(
        &mut st,
        &run,
        "a",
        finished(1, Outcome::Succeeded, out("a")),
        30,
    )
    .unwrap();
    assert_eq!(answer.status, StepStatus::Succeeded);
    assert!(jobs(&fx).is_empty(), "{fx:?}");
    assert_eq!(st.runs[&run].steps[1].status, StepStatus::Queued);
    send(&mut st, &run, "b", Report::Started, 40).unwrap();
    let step_b = &st.runs[&run].steps[1];
    assert_eq!(step_b.agent, Some(agent(RUNNER)));
    send(
        &mut st,
        &run,
        "b",
        finished(1, Outcome::Succeeded, BTreeMap::new()),
        50,
    )
    .unwrap();
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn a_failed_attempt_with_retries_left_comes_back_for_the_next_started() {
    let mut st = new_state();
    let steps =
        "[[step]]\nname = \"a\"\ncommand = [\"false\"]\nretries = 1\nretry_backoff = \"1s\"\n";
    let (run, _) = submit_external(&mut st, steps, 0);
    send(&mut st, &run, "a", Report::Started, 10).unwrap();
    let (answer, _) = send(
        &mut st,
        &run,
        "a",
        finished(1, Outcome::Failed, BTreeMap::new()),
        20,
    )
    .unwrap();
    assert_eq!(answer.status, StepStatus::Pending);
    let (answer, _) = send(&mut st, &run, "a", Report::Started, 30).unwrap();
    assert_eq!(answer.status, StepStatus::Pending, "still in its backoff");
    handle(&mut st, Event::Tick, 1_100);
    let (answer, _) = send(&mut st, &run, "a", Report::Started, 1_200).unwrap();
    assert_eq!(
        (answer.status, answer.attempt),
        (StepStatus::Running, AttemptNo(2))
    );
}

#[test]
fn a_silent_submitter_fails_the_step_it_ran_after_the_lease() {
    let mut st = new_state();
    let (run, _) = submit_external(&mut st, TWO, 0);
    send(&mut st, &run, "a", Report::Started, 10).unwrap();
    send(
        &mut st,
        &run,
        "a",
        Report::Alive {
            attempt: AttemptNo(1),
        },
        2_000,
    )
    .unwrap();
    handle(&mut st, Event::Tick, 4_000);
    assert_eq!(
        st.runs[&run].steps[0].status,
        StepStatus::Running,
        "the lease was renewed"
    );
    let fx = handle(&mut st, Event::Tick, 5_001);
    assert!(jobs(&fx).is_empty(), "{fx:?}");
    let r = &st.runs[&run];
    assert_eq!(r.steps[0].status, StepStatus::Failed);
    let why = r.steps[0].message.clone().unwrap_or_default();
    assert!(
        why.contains(RUNNER) && why.contains("presumed gone"),
        "{why}"
    );
    assert_eq!(r.steps[1].status, StepStatus::Skipped);
    assert_eq!(r.status, RunStatus::Failed);
    // A late report of the lost attempt changes nothing.
    let late = send(
        &mut st,
        &run,
        "a",
        finished(1, Outcome::Succeeded, out("a")),
        5_100,
    );
    assert!(late.is_err(), "{late:?}");
}

#[test]
fn a_queued_attempt_nobody_takes_fails_after_the_lease() {
    let mut st = new_state();
    let (run, _) = submit_external(&mut st, TWO, 0);
    handle(&mut st, Event::Tick, LEASE - 1);
    assert_eq!(st.runs[&run].steps[0].status, StepStatus::Queued);
    handle(&mut st, Event::Tick, LEASE);
    let r = &st.runs[&run];
    assert_eq!(r.steps[0].status, StepStatus::Failed);
    assert!(
        r.steps[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("did not start attempt 1")
    );
    assert_eq!(r.status, RunStatus::Failed);
}

#[test]
fn reports_are_refused_for_runs_that_agents_run_and_from_other_runners() {
    let mut st = new_state();
    let (run, _) = submit_toml(&mut st, TWO, 0);
    let refused = send(&mut st, &run, "a", Report::Started, 10).unwrap_err();
    assert!(refused.contains("not by its submitter"), "{refused}");
    let (external, _) = submit_external(&mut st, TWO, 0);
    send(&mut st, &external, "a", Report::Started, 10).unwrap();
    let other = StepReport {
        runner: agent("local-other-7"),
        report: Report::Alive {
            attempt: AttemptNo(1),
        },
    };
    let refused = super::report(&mut st, &external, &step("a"), other, 20).unwrap_err();
    assert!(refused.contains("already runs on agent"), "{refused}");
}

#[test]
fn an_abort_is_answered_to_the_next_report() {
    let mut st = new_state();
    let (run, _) = submit_external(&mut st, TWO, 0);
    send(&mut st, &run, "a", Report::Started, 10).unwrap();
    let abort = Abort {
        run_id: run.clone(),
        step: None,
        reason: None,
    };
    handle(&mut st, Event::Abort(abort), 20);
    let (answer, _) = send(
        &mut st,
        &run,
        "a",
        Report::Alive {
            attempt: AttemptNo(1),
        },
        30,
    )
    .unwrap();
    assert!(answer.abort_requested);
    send(
        &mut st,
        &run,
        "a",
        finished(1, Outcome::Aborted, BTreeMap::new()),
        40,
    )
    .unwrap();
    assert_eq!(st.runs[&run].status, RunStatus::Aborted);
}

#[test]
fn a_step_its_runner_skips_ends_skipped_with_its_descendants() {
    let mut st = new_state();
    let (run, _) = submit_external(&mut st, TWO, 0);
    let reason = "pre_execute_callback returned False".to_string();
    let (answer, _) = send(&mut st, &run, "a", Report::Skipped { reason }, 10).unwrap();
    assert_eq!(answer.status, StepStatus::Skipped);
    assert_eq!(
        answer.attempt,
        AttemptNo(0),
        "the queued attempt is withdrawn"
    );
    let r = &st.runs[&run];
    assert!(r.steps[0].attempts.is_empty());
    assert!(
        r.steps[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("pre_execute_callback")
    );
    assert_eq!(r.steps[1].status, StepStatus::Skipped);
    assert_eq!(r.status, RunStatus::Succeeded);
    let again = send(
        &mut st,
        &run,
        "a",
        Report::Skipped { reason: "x".into() },
        20,
    );
    assert!(again.is_err(), "{again:?}");
}

const AWAITING: &str = r#"
[[step]]
name = "a"
command = ["true"]
outputs = { out = "out.txt" }
await_callback = true

[[step]]
name = "b"
command = ["cat", "${a.out}"]
"#;

#[test]
fn a_step_awaiting_its_callback_waits_then_runs_or_is_skipped_as_answered() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, AWAITING, 0);
    assert!(jobs(&fx).is_empty(), "held: {fx:?}");
    let a = &st.runs[&run].steps[0];
    assert_eq!(a.status, StepStatus::Pending);
    assert_eq!(a.message.as_deref(), Some("waiting for callback"));
    assert_eq!(a.pending_reason, Some(PendingReason::WaitingForCallback));
    // Ticks keep it waiting and change nothing.
    assert!(handle(&mut st, Event::Tick, 100).runs.is_empty());
    let (status, fx) = answer_callback(&mut st, &run, &step("a"), true, 200).unwrap();
    assert_eq!(status, StepStatus::Queued);
    assert_eq!(job_names(&fx), vec!["a"]);
    assert_eq!(st.runs[&run].steps[0].message, None);
    assert_eq!(st.runs[&run].steps[0].pending_reason, None);
    let again = answer_callback(&mut st, &run, &step("a"), true, 300);
    assert!(again.is_err(), "{again:?}");
    let refused = answer_callback(&mut st, &run, &step("b"), true, 300).unwrap_err();
    assert!(refused.contains("no callback"), "{refused}");

    let (skipped_run, _) = submit_toml(&mut st, AWAITING, 0);
    let (status, fx) = answer_callback(&mut st, &skipped_run, &step("a"), false, 10).unwrap();
    assert_eq!(status, StepStatus::Skipped);
    assert!(jobs(&fx).is_empty());
    let r = &st.runs[&skipped_run];
    assert_eq!(r.steps[1].status, StepStatus::Skipped);
    assert_eq!(r.status, RunStatus::Succeeded);
}
