//! Dynamic runs: steps added by the running driver (names, replays, divergence, who may add)
//! and how the driver's end decides the run's.

use super::*;
use drover_api::{AddStep, CallKey};
use drover_protocol::spec::StepSpec;

const DRIVER: &str = r#"
[[step]]
name = "pipe"
driver = true
function = { source = "def main():\n    pass\n", entry = "main" }
"#;

/// A submitted dynamic run whose driver runs on agent `d1`; returns the run and its job.
fn started(st: &mut State) -> (RunId, StepJob) {
    let (run, fx) = submit_toml(st, DRIVER, 0);
    let (queue, job) = match &fx.actions[..] {
        [Action::Dispatch { queue, job }] => (queue.clone(), (**job).clone()),
        other => panic!("the driver alone is dispatched: {other:?}"),
    };
    assert_eq!(queue, QueueName::drivers());
    claim(st, &job, "d1", 10);
    (run, job)
}

/// A command step `base`, writing output `out` when `outputs`, after the steps it names.
fn component(base: &str, argv: &[&str], outputs: bool) -> StepSpec {
    StepSpec {
        name: base.into(),
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        outputs: if outputs {
            BTreeMap::from([("out".to_string(), "out.txt".to_string())])
        } else {
            BTreeMap::new()
        },
        ..StepSpec::default()
    }
}

fn request(attempt: u32, seq: u32, digest: &str, step: StepSpec) -> AddStep {
    AddStep {
        caller: super::step("pipe"),
        attempt: AttemptNo(attempt),
        call: CallKey {
            seq,
            component: step.name.clone(),
            digest: digest.into(),
        },
        step,
    }
}

fn add(
    st: &mut State,
    run: &RunId,
    req: AddStep,
    now: u64,
) -> Result<(drover_api::StepAdded, Effects), String> {
    add_step(st, req, run, now)
}

fn names(st: &State, run: &RunId) -> Vec<String> {
    st.runs[run]
        .steps
        .iter()
        .map(|s| s.name.to_string())
        .collect()
}

#[test]
fn calls_of_the_same_component_are_named_like_clearml_and_dispatched_at_once() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    for (seq, want) in [(0, "c"), (1, "c_1"), (2, "c_2")] {
        let req = request(1, seq, &format!("d{seq}"), component("c", &["true"], false));
        let (added, fx) = add(&mut st, &run, req, 100).unwrap();
        assert_eq!(added.step.as_str(), want);
        assert!(!added.existing);
        assert_eq!(added.run_id, run);
        assert_eq!(job_names(&fx), [want]);
        assert!(fx.runs.contains(&run));
    }
    assert_eq!(names(&st, &run), ["pipe", "c", "c_1", "c_2"]);
    let c1 = st.runs[&run].step(&step("c_1")).unwrap();
    assert_eq!(c1.status, StepStatus::Queued);
    let call = c1.call.as_ref().unwrap();
    assert_eq!((call.caller.as_str(), call.seq), ("pipe", 1));
    assert_eq!(call.added_at, 100);
    assert_eq!(st.runs[&run].pipeline.as_ref().unwrap().steps.len(), 4);
}

#[test]
fn an_added_step_waits_for_its_inputs_and_is_dispatched_with_them() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("make", &["true"], true)),
        20,
    )
    .unwrap();
    let make = jobs(&fx).pop().unwrap();
    let uses = component("use", &["cat", "${make.out}"], false);
    let (added, fx) = add(&mut st, &run, request(1, 1, "b", uses), 30).unwrap();
    assert!(jobs(&fx).is_empty(), "use must wait for make: {fx:?}");
    assert_eq!(status(&st, &run, added.step.as_str()), StepStatus::Pending);
    let fx = run_job(&mut st, &make, "w1", Outcome::Succeeded, 40);
    let used = jobs(&fx)
        .pop()
        .expect("use is dispatched once make is done");
    assert_eq!(used.step.as_str(), "use");
    assert_eq!(
        used.job.inputs[0].digest,
        artifact("make.out", "out.txt").digest
    );
}

#[test]
fn a_lost_driver_is_dispatched_again_and_its_replay_gets_the_same_steps() {
    let mut st = new_state();
    let (run, first) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "x", component("c", &["true"], false)),
        20,
    )
    .unwrap();
    let c = jobs(&fx).pop().unwrap();
    claim(&mut st, &c, "w1", 30);
    // The driver's agent goes silent; the component's keeps beating.
    heartbeat(&mut st, "w1", &[&c], LEASE);
    let fx = handle(&mut st, Event::Tick, LEASE + 10);
    let again = jobs(&fx)
        .pop()
        .expect("the lost driver is dispatched again");
    assert_eq!((again.step.as_str(), again.attempt), ("pipe", AttemptNo(2)));
    assert_eq!(first.attempt, AttemptNo(1));
    assert_eq!(status(&st, &run, "c"), StepStatus::Running);
    claim(&mut st, &again, "d2", LEASE + 20);

    let (added, fx) = add(
        &mut st,
        &run,
        request(2, 0, "x", component("c", &["true"], false)),
        LEASE + 30,
    )
    .unwrap();
    assert_eq!(added.step.as_str(), "c");
    assert!(added.existing);
    assert!(
        fx.actions.is_empty(),
        "a replayed call dispatches nothing: {fx:?}"
    );
    assert_eq!(names(&st, &run), ["pipe", "c"]);
    // The next call is new.
    let (added, _) = add(
        &mut st,
        &run,
        request(2, 1, "y", component("c", &["true"], false)),
        LEASE + 40,
    )
    .unwrap();
    assert_eq!((added.step.as_str(), added.existing), ("c_1", false));
}

#[test]
fn a_diverging_replay_is_refused_naming_the_call() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    add(
        &mut st,
        &run,
        request(1, 0, "d1", component("c", &["true"], false)),
        20,
    )
    .unwrap();
    let other = add(
        &mut st,
        &run,
        request(1, 0, "d1", component("e", &["true"], false)),
        30,
    );
    assert_eq!(
        other.unwrap_err(),
        "replay diverged at call 0 of pipe: it made step c from component c with arguments d1, \
         and now calls component e with arguments d1; a pipeline function must make the same \
         calls in the same order"
    );
    let args = add(
        &mut st,
        &run,
        request(1, 0, "d2", component("c", &["true"], false)),
        30,
    );
    let why = args.unwrap_err();
    assert!(
        why.contains("now calls component c with arguments d2"),
        "{why}"
    );
    assert_eq!(names(&st, &run), ["pipe", "c"]);
}

#[test]
fn only_the_current_attempt_of_a_running_step_adds_steps() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    let stale = add(
        &mut st,
        &run,
        request(2, 0, "a", component("c", &["true"], false)),
        20,
    );
    let why = stale.unwrap_err();
    assert!(
        why.contains("attempt 2 of step pipe cannot add steps"),
        "{why}"
    );
    assert!(why.contains("its current attempt is 1"), "{why}");

    let mut nobody = request(1, 0, "a", component("c", &["true"], false));
    nobody.caller = step("ghost");
    let why = add(&mut st, &run, nobody, 20).unwrap_err();
    assert_eq!(
        why,
        format!("run {run} has no step ghost to add steps from")
    );

    // A finished component cannot add steps either.
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("c", &["true"], false)),
        20,
    )
    .unwrap();
    let c = jobs(&fx).pop().unwrap();
    run_job(&mut st, &c, "w1", Outcome::Succeeded, 30);
    let mut late = request(1, 0, "b", component("n", &["true"], false));
    late.caller = step("c");
    let why = add(&mut st, &run, late, 40).unwrap_err();
    assert!(why.contains("the step is succeeded"), "{why}");
    assert_eq!(names(&st, &run), ["pipe", "c"]);
}

#[test]
fn a_running_component_adds_nested_steps() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("outer", &["true"], false)),
        20,
    )
    .unwrap();
    let outer = jobs(&fx).pop().unwrap();
    claim(&mut st, &outer, "w1", 30);
    let mut nested = request(1, 0, "b", component("inner", &["true"], false));
    nested.caller = step("outer");
    let (added, fx) = add(&mut st, &run, nested, 40).unwrap();
    assert_eq!(added.step.as_str(), "inner");
    assert_eq!(job_names(&fx), ["inner"]);
}

#[test]
fn runs_without_a_driver_and_ended_runs_take_no_steps() {
    let mut st = new_state();
    let (plain, fx) = submit_toml(&mut st, "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n", 0);
    let a = jobs(&fx).pop().unwrap();
    claim(&mut st, &a, "w1", 10);
    let mut req = request(1, 0, "x", component("c", &["true"], false));
    req.caller = step("a");
    let why = add(&mut st, &plain, req, 20).unwrap_err();
    assert_eq!(
        why,
        format!("run {plain} is not a dynamic run (it has no driver)")
    );

    let (run, driver) = started(&mut st);
    run_job(&mut st, &driver, "d1", Outcome::Succeeded, 30);
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
    let why = add(
        &mut st,
        &run,
        request(1, 0, "x", component("c", &["true"], false)),
        40,
    )
    .unwrap_err();
    assert_eq!(
        why,
        format!("run {run} is succeeded: it takes no more steps")
    );
}

#[test]
fn an_added_step_is_validated_like_a_submitted_one() {
    let mut st = new_state();
    let (run, _) = started(&mut st);
    let mut reserved = component("c", &["true"], false);
    reserved.queue = Some("services".into());
    let why = add(&mut st, &run, request(1, 0, "a", reserved), 20).unwrap_err();
    assert!(why.starts_with("step c (call 0 of pipe): "), "{why}");
    assert!(why.contains("reserved"), "{why}");
    let mut own = component("c", &["true"], false);
    own.queue = Some("drover.agent.x".into());
    let why = add(&mut st, &run, request(1, 0, "a", own), 20).unwrap_err();
    assert!(why.contains("drover.agent.*"), "{why}");
    let dangling = component("c", &["cat", "${nothing.out}"], false);
    let why = add(&mut st, &run, request(1, 0, "a", dangling), 20).unwrap_err();
    assert!(why.contains("nothing"), "{why}");
    assert_eq!(names(&st, &run), ["pipe"]);
}

#[test]
fn a_driver_that_succeeds_leaves_the_run_running_until_its_steps_end() {
    let mut st = new_state();
    let (run, driver) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("c", &["true"], false)),
        20,
    )
    .unwrap();
    let c = jobs(&fx).pop().unwrap();
    claim(&mut st, &c, "w1", 30);
    run_job(&mut st, &driver, "d1", Outcome::Succeeded, 40);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    handle(
        &mut st,
        Event::Finished(finished_msg(&c, "w1", Outcome::Succeeded, Some(0))),
        50,
    );
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
    assert_eq!(st.runs[&run].ended_at, Some(50));
}

#[test]
fn a_failed_driver_aborts_the_other_steps_and_fails_the_run() {
    let mut st = new_state();
    let (run, driver) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("c", &["true"], true)),
        20,
    )
    .unwrap();
    let c = jobs(&fx).pop().unwrap();
    claim(&mut st, &c, "w1", 30);
    let waits = component("d", &["cat", "${c.out}"], false);
    add(&mut st, &run, request(1, 1, "b", waits), 35).unwrap();

    let mut failed = finished_msg(&driver, "d1", Outcome::Failed, Some(1));
    failed.message = Some("ValueError: bad input".into());
    let fx = handle(&mut st, Event::Finished(failed), 40);
    let told = cancels(&fx);
    assert_eq!(told.len(), 1, "{fx:?}");
    assert_eq!((told[0].0.as_str(), told[0].1.step.as_str()), ("w1", "c"));
    let error = "driver pipe failed: exit code 1: ValueError: bad input";
    assert_eq!(told[0].1.reason, error);
    assert_eq!(status(&st, &run, "d"), StepStatus::Aborted);
    assert_eq!(
        st.runs[&run].status,
        RunStatus::Running,
        "c has not stopped yet"
    );
    assert!(jobs(&fx).is_empty());

    let mut stopped = finished_msg(&c, "w1", Outcome::Aborted, None);
    stopped.message = Some("cancelled".into());
    handle(&mut st, Event::Finished(stopped), 50);
    assert_eq!(status(&st, &run, "c"), StepStatus::Aborted);
    assert_eq!(st.runs[&run].status, RunStatus::Failed);
    assert_eq!(st.runs[&run].error.as_deref(), Some(error));
}

#[test]
fn a_run_aborted_on_request_ends_aborted_not_failed_by_its_driver() {
    let mut st = new_state();
    let (run, driver) = started(&mut st);
    handle(
        &mut st,
        Event::Abort(Abort {
            run_id: run.clone(),
            step: None,
            reason: None,
        }),
        20,
    );
    handle(
        &mut st,
        Event::Finished(finished_msg(&driver, "d1", Outcome::Aborted, None)),
        30,
    );
    assert_eq!(st.runs[&run].status, RunStatus::Aborted);
    assert_eq!(
        st.runs[&run].error.as_deref(),
        Some("aborted: aborted on request")
    );
}

#[test]
fn a_driver_failing_after_a_component_failed_names_that_component() {
    let mut st = new_state();
    let (run, driver) = started(&mut st);
    let (_, fx) = add(
        &mut st,
        &run,
        request(1, 0, "a", component("c", &["false"], false)),
        20,
    )
    .unwrap();
    let c = jobs(&fx).pop().unwrap();
    claim(&mut st, &c, "w1", 30);
    run_job(&mut st, &c, "w1", Outcome::Failed, 40);
    let mut failed = finished_msg(&driver, "d1", Outcome::Failed, Some(1));
    failed.message = None;
    handle(&mut st, Event::Finished(failed), 50);
    let record = &st.runs[&run];
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("driver pipe failed: "), "{error}");
    assert!(error.ends_with("; failed step(s): c"), "{error}");
}

#[test]
fn added_steps_count_against_the_step_limit() {
    let mut st = new_state();
    st.max_steps = 2;
    let (run, _) = started(&mut st);
    add(
        &mut st,
        &run,
        request(1, 0, "a", component("c", &["true"], false)),
        20,
    )
    .unwrap();
    let refused = add(
        &mut st,
        &run,
        request(1, 1, "b", component("c", &["true"], false)),
        30,
    )
    .unwrap_err();
    assert!(
        refused.contains("at most 2 per pipeline (--max-steps)"),
        "{refused}"
    );
    assert_eq!(names(&st, &run), ["pipe", "c"]);
}
