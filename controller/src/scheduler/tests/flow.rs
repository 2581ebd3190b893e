//! Runs moving forward: ordering, artifacts, failures, retries, the cache, rejection.

use super::*;

const DIAMOND: &str = r#"
[[step]]
name = "a"
command = ["sh", "-c", "echo a > a.txt"]
outputs = { out = "a.txt" }
[[step]]
name = "b"
command = ["cp", "${a.out}", "b.txt"]
outputs = { out = "b.txt" }
[[step]]
name = "c"
command = ["cp", "${a.out}", "c.txt"]
outputs = { out = "c.txt" }
[[step]]
name = "d"
command = ["sh", "-c", "cat ${b.out} ${c.out}"]
"#;

#[test]
fn diamond_runs_in_order_and_passes_artifacts_as_inputs() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, DIAMOND, 1_000);
    assert_eq!(job_names(&fx), ["a"]);
    assert_eq!(status(&st, &run, "b"), StepStatus::Pending);
    let a = &jobs(&fx)[0];
    assert_eq!(a.attempt, AttemptNo(1));
    assert_eq!(a.lease_ms, LEASE);
    assert_eq!(a.controller_url, "http://controller.test");
    assert_eq!(
        a.artifact_store, None,
        "a local store: through the controller"
    );

    let fx = claim(&mut st, a, "w1", 1_100);
    assert!(fx.actions.is_empty());
    assert_eq!(status(&st, &run, "a"), StepStatus::Running);
    let fx = handle(
        &mut st,
        Event::Finished(finished_msg(a, "w1", Outcome::Succeeded, Some(0))),
        1_200,
    );
    assert_eq!(job_names(&fx), ["b", "c"]);
    let b = jobs(&fx)
        .into_iter()
        .find(|j| j.step.as_str() == "b")
        .unwrap();
    assert_eq!(b.job.inputs.len(), 1);
    assert_eq!(b.job.inputs[0].digest, artifact("a.out", "a.txt").digest);
    assert_eq!(b.job.inputs[0].file_name.as_str(), "a.txt");
    let c = jobs(&fx)
        .into_iter()
        .find(|j| j.step.as_str() == "c")
        .unwrap();

    let fx = run_job(&mut st, &b, "w1", Outcome::Succeeded, 1_300);
    assert!(jobs(&fx).is_empty(), "d must wait for c");
    let fx = run_job(&mut st, &c, "w2", Outcome::Succeeded, 1_400);
    let d = jobs(&fx).pop().unwrap();
    assert_eq!(d.step.as_str(), "d");
    let inputs: Vec<(String, Digest)> = d
        .job
        .inputs
        .iter()
        .map(|i| (format!("{}.{}", i.step, i.output), i.digest.clone()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("b.out".to_string(), artifact("b.out", "").digest),
            ("c.out".to_string(), artifact("c.out", "").digest)
        ]
    );
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    let fx = run_job(&mut st, &d, "w2", Outcome::Succeeded, 1_500);
    assert!(fx.runs.contains(&run));
    let r = &st.runs[&run];
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.ended_at, Some(1_500));
    let attempt = r.step(&step("c")).unwrap().current().unwrap();
    assert_eq!(attempt.agent, Some(agent("w2")));
    assert_eq!(attempt.outcome, Some(AttemptOutcome::Succeeded));
}

const FAILING: &str = r#"
[[step]]
name = "a"
command = ["true"]
outputs = { out = "a.txt" }
[[step]]
name = "bad"
command = ["cat", "${a.out}"]
outputs = { out = "b.txt" }
[[step]]
name = "after_bad"
command = ["cat", "${bad.out}"]
[[step]]
name = "after_after"
command = ["true"]
parents = ["after_bad"]
[[step]]
name = "good"
command = ["cat", "${a.out}"]
"#;

#[test]
fn failure_skips_descendants_while_the_independent_branch_finishes() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, FAILING, 0);
    let fx2 = run_job(&mut st, &jobs(&fx)[0], "w", Outcome::Succeeded, 10);
    assert_eq!(job_names(&fx2), ["bad", "good"]);
    let all = jobs(&fx2);
    let bad = all.iter().find(|j| j.step.as_str() == "bad").unwrap();
    let good = all.iter().find(|j| j.step.as_str() == "good").unwrap();
    claim(&mut st, good, "w2", 20);

    let fx = run_job(&mut st, bad, "w", Outcome::Failed, 30);
    assert!(jobs(&fx).is_empty());
    assert_eq!(status(&st, &run, "bad"), StepStatus::Failed);
    assert_eq!(status(&st, &run, "after_bad"), StepStatus::Skipped);
    assert_eq!(status(&st, &run, "after_after"), StepStatus::Skipped);
    assert_eq!(status(&st, &run, "good"), StepStatus::Running);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    let message = st.runs[&run].step(&step("bad")).unwrap().message.clone();
    assert_eq!(message.as_deref(), Some("exit code 3"));

    handle(
        &mut st,
        Event::Finished(finished_msg(good, "w2", Outcome::Succeeded, Some(0))),
        40,
    );
    assert_eq!(status(&st, &run, "good"), StepStatus::Succeeded);
    let r = &st.runs[&run];
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.error.as_deref().unwrap().contains("bad"), "{:?}", r.error);
}

#[test]
fn continue_on_fail_does_not_fail_the_run() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"flaky\"\ncommand = [\"false\"]\ncontinue_on_fail = true\n[[step]]\nname = \"child\"\ncommand = [\"true\"]\nparents = [\"flaky\"]\n[[step]]\nname = \"other\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let all = jobs(&fx);
    run_job(&mut st, &all[0], "w", Outcome::Failed, 1);
    assert_eq!(status(&st, &run, "child"), StepStatus::Skipped);
    run_job(&mut st, &all[1], "w", Outcome::Succeeded, 2);
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn retries_back_off_then_fail() {
    let mut st = new_state();
    let steps =
        "[[step]]\nname = \"x\"\ncommand = [\"false\"]\nretries = 2\nretry_backoff = \"1s\"\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let first = jobs(&fx).pop().unwrap();
    run_job(&mut st, &first, "w", Outcome::Failed, 100);
    assert_eq!(status(&st, &run, "x"), StepStatus::Pending);
    assert!(jobs(&handle(&mut st, Event::Tick, 1_099)).is_empty());
    let second = jobs(&handle(&mut st, Event::Tick, 1_100)).pop().unwrap();
    assert_eq!(second.attempt, AttemptNo(2));

    run_job(&mut st, &second, "w", Outcome::TimedOut, 2_000);
    // The backoff doubles: 2 s after the second failure.
    assert!(jobs(&handle(&mut st, Event::Tick, 3_999)).is_empty());
    let third = jobs(&handle(&mut st, Event::Tick, 4_000)).pop().unwrap();
    assert_eq!(third.attempt, AttemptNo(3));

    let fx = run_job(&mut st, &third, "w", Outcome::Failed, 5_000);
    assert!(jobs(&fx).is_empty());
    let r = &st.runs[&run];
    assert_eq!(r.status, RunStatus::Failed);
    let x = r.step(&step("x")).unwrap();
    assert_eq!(x.status, StepStatus::Failed);
    assert_eq!(x.attempts.len(), 3);
    assert!(
        x.message.as_deref().unwrap().contains("after 3 attempts"),
        "{:?}",
        x.message
    );
    assert!(jobs(&handle(&mut st, Event::Tick, 60_000)).is_empty());
}

const CACHED: &str = r#"
[[step]]
name = "prep"
command = ["sh", "-c", "echo data > d.txt"]
outputs = { d = "d.txt" }
cache = true
[[step]]
name = "use"
command = ["cat", "${prep.d}"]
outputs = { r = "r.txt" }
cache = true
"#;

#[test]
fn cache_hits_dispatch_nothing_across_runs() {
    let mut st = new_state();
    let (first, fx) = submit_toml(&mut st, CACHED, 0);
    let prep = jobs(&fx).pop().unwrap();
    let fx = run_job(&mut st, &prep, "w", Outcome::Succeeded, 10);
    assert!(
        fx.actions
            .iter()
            .any(|a| matches!(a, Action::CacheInsert { .. }))
    );
    let usej = jobs(&fx).pop().unwrap();
    run_job(&mut st, &usej, "w", Outcome::Succeeded, 20);
    assert_eq!(st.runs[&first].status, RunStatus::Succeeded);
    assert_eq!(st.cache.len(), 2);

    let (second, fx) = submit_toml(&mut st, CACHED, 100);
    assert!(fx.actions.is_empty(), "{:?}", fx.actions);
    let r = &st.runs[&second];
    assert_eq!(r.status, RunStatus::Succeeded);
    for name in ["prep", "use"] {
        let s = r.step(&step(name)).unwrap();
        assert_eq!(s.status, StepStatus::Cached);
        assert!(s.cache_hit);
        assert!(s.attempts.is_empty());
        assert_eq!(
            s.outputs,
            st.runs[&first].step(&step(name)).unwrap().outputs
        );
    }
}

#[test]
fn a_changed_command_misses_the_cache_and_children_get_cached_inputs() {
    let mut st = new_state();
    let (_, fx) = submit_toml(&mut st, CACHED, 0);
    let prep = jobs(&fx).pop().unwrap();
    let fx = run_job(&mut st, &prep, "w", Outcome::Succeeded, 10);
    run_job(&mut st, &jobs(&fx)[0], "w", Outcome::Succeeded, 20);

    let changed = CACHED.replace("[\"cat\", \"${prep.d}\"]", "[\"wc\", \"${prep.d}\"]");
    let (run, fx) = submit_toml(&mut st, &changed, 100);
    assert_eq!(status(&st, &run, "prep"), StepStatus::Cached);
    let usej = jobs(&fx).pop().expect("the changed step runs");
    assert_eq!(usej.job.inputs[0].digest, artifact("prep.d", "").digest);
}

#[test]
fn invalid_pipeline_is_rejected_and_dispatches_nothing() {
    let mut st = new_state();
    let (run, fx) = submit_toml(
        &mut st,
        "[[step]]\nname = \"a\"\ncommand = [\"cat\", \"${ghost.out}\"]\n",
        5,
    );
    assert!(fx.actions.is_empty());
    assert!(fx.runs.contains(&run));
    let r = &st.runs[&run];
    assert_eq!(r.status, RunStatus::Rejected);
    assert!(
        r.error.as_deref().unwrap().contains("${ghost.out}"),
        "{:?}",
        r.error
    );
    assert!(r.steps.is_empty());
    assert_eq!(r.name, "p");
}

#[test]
fn a_step_on_a_queue_the_namespace_uses_itself_is_rejected() {
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n\
                 [[step]]\nname = \"b\"\ncommand = [\"true\"]\nqueue = \"journal\"\n";
    let mut st = new_state();
    st.names = drover_protocol::Names::new("t1").unwrap();
    let error = rejection(&mut st, steps, 5);
    assert!(
        error.contains("step b: queue \"journal\"") && error.contains("t1.journal"),
        "{error}"
    );
    // In the default namespace a user queue `journal` is not the journal (drover.journal).
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, steps, 5);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    assert_eq!(jobs(&fx).len(), 2);
}

#[test]
fn missing_declared_output_fails_the_attempt() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\noutputs = { o = \"o.txt\" }\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let job = jobs(&fx).pop().unwrap();
    claim(&mut st, &job, "w", 1);
    let mut f = finished_msg(&job, "w", Outcome::Succeeded, Some(0));
    f.outputs.clear();
    handle(&mut st, Event::Finished(f), 2);
    let a = st.runs[&run].step(&step("a")).unwrap();
    assert_eq!(a.status, StepStatus::Failed);
    assert!(a.message.as_deref().unwrap().contains('o'));
}

#[test]
fn jobs_name_the_bucket_agents_use_directly() {
    let mut st = new_state();
    let store = drover_protocol::message::ArtifactStoreRef {
        url: "s3://bucket/prefix".into(),
        endpoint: Some("http://127.0.0.1:9000".into()),
        region: None,
    };
    st.config.artifact_store = Some(store.clone());
    let (_, fx) = submit_toml(&mut st, DIAMOND, 1_000);
    assert_eq!(jobs(&fx)[0].artifact_store, Some(store));
}

#[test]
fn a_queue_limit_holds_steps_back_across_runs_until_there_is_room() {
    let mut st = new_state();
    st.queue_limits.insert(QueueName::new("gpu").unwrap(), 1);
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\nqueue = \"gpu\"\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\nqueue = \"gpu\"\n[[step]]\nname = \"c\"\ncommand = [\"true\"]\n";
    let (first, fx) = submit_toml(&mut st, steps, 0);
    let sent = jobs(&fx);
    // One gpu step and the unlimited one go out; the second gpu step waits.
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (second, fx) = submit_toml(&mut st, steps, 1);
    assert_eq!(
        jobs(&fx).len(),
        1,
        "only the unlimited step of the second run"
    );
    assert_eq!(status(&st, &second, "a"), StepStatus::Pending);
    let held = record(&st, &second, "a");
    assert_eq!(
        held.pending_reason,
        Some(PendingReason::QueueFull {
            queue: QueueName::new("gpu").unwrap()
        })
    );
    assert_eq!(
        held.message.as_deref(),
        Some("waiting for room on queue gpu (limit reached)")
    );
    assert!(
        handle(&mut st, Event::Tick, 2).actions.is_empty(),
        "still no room"
    );

    let gpu = sent
        .iter()
        .find(|j| j.step.as_str() == "a")
        .unwrap()
        .clone();
    run_job(&mut st, &gpu, "w", Outcome::Succeeded, 3);
    // The room is handed out at the next tick, oldest run first.
    let next = jobs(&handle(&mut st, Event::Tick, 4));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        (next[0].run_id.clone(), next[0].step.as_str()),
        (first.clone(), "b")
    );
    run_job(&mut st, &next[0], "w", Outcome::Succeeded, 5);
    let next = jobs(&handle(&mut st, Event::Tick, 6));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].run_id, second);
    let dispatched = record(&st, &second, "a");
    assert_eq!(dispatched.status, StepStatus::Queued);
    assert_eq!(
        (&dispatched.pending_reason, &dispatched.message),
        (&None, &None)
    );
}

fn record<'a>(st: &'a State, run: &RunId, name: &str) -> &'a StepRecord {
    st.runs[run]
        .steps
        .iter()
        .find(|s| s.name.as_str() == name)
        .unwrap()
}

#[test]
fn a_pipeline_past_the_step_limit_is_rejected_whole_with_the_limit_named() {
    let mut st = new_state();
    st.max_steps = 2;
    let three = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n[[step]]\nname = \"c\"\ncommand = [\"true\"]\n";
    let error = rejection(&mut st, three, 5);
    assert!(
        error.contains("3 steps") && error.contains("at most 2") && error.contains("--max-steps"),
        "{error}"
    );
    st.max_steps = 3;
    let (run, fx) = submit_toml(&mut st, three, 6);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    assert_eq!(jobs(&fx).len(), 3);
}

#[test]
fn a_function_step_keeps_the_artifacts_it_stored_and_a_command_step_only_its_declared_ones() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"f\"\nfunction = { source = \"def main():\\n    pass\\n\", entry = \"main\" }\n\
                 [[step]]\nname = \"c\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    for job in jobs(&fx) {
        claim(&mut st, &job, "w", 1);
        let mut f = finished_msg(&job, "w", Outcome::Succeeded, Some(0));
        f.outputs.insert(
            drover_protocol::OutputName::new("dataset").unwrap(),
            artifact("rows", "dataset.pkl"),
        );
        handle(&mut st, Event::Finished(f), 2);
    }
    let kept = |name: &str| -> Vec<String> {
        let s = st.runs[&run].step(&step(name)).unwrap();
        assert_eq!(s.status, StepStatus::Succeeded);
        s.outputs.keys().map(ToString::to_string).collect()
    };
    assert_eq!(kept("f"), ["dataset"]);
    assert!(kept("c").is_empty());
}

const REFERENCES: &str = r#"
[[step]]
name = "a"
function = { source = "def f():\n    pass\n", entry = "f", returns = ["r"] }
[[step]]
name = "b"
function = { source = "def f(t, u):\n    pass\n", entry = "f", kwargs = { t = '"task ${a.id}"', u = '"${a.artifacts.data.url}"' } }
env = { DATA = "${a.artifacts.data.url}" }
cache = true
"#;

/// Finishes `a` of a REFERENCES run with artifact `data` (or without) and returns b's job, if any.
fn references_run(st: &mut State, stored: bool) -> (RunId, Option<StepJob>) {
    let (run, fx) = submit_toml(st, REFERENCES, 0);
    let a = jobs(&fx).pop().unwrap();
    claim(st, &a, "w", 1);
    let mut f = finished_msg(&a, "w", Outcome::Succeeded, Some(0));
    if stored {
        f.outputs.insert(
            drover_protocol::OutputName::new("data").unwrap(),
            artifact("rows", "data.pkl"),
        );
    }
    let fx = handle(st, Event::Finished(f), 2);
    (run, jobs(&fx).pop())
}

#[test]
fn step_ids_and_artifact_urls_are_filled_in_at_dispatch() {
    let mut st = new_state();
    let (run, b) = references_run(&mut st, true);
    let b = b.unwrap();
    let JobKind::Function { kwargs, .. } = &b.job.kind else {
        panic!("{:?}", b.job.kind)
    };
    let url = format!("http://controller.test/api/v1/runs/{run}/steps/a/artifacts/data");
    assert_eq!(kwargs["t"], format!("\"task {run}/a\""));
    assert_eq!(kwargs["u"], format!("\"{url}\""));
    assert_eq!(b.job.env["DATA"], url);
    // The cache key follows the artifact's content, not the run's URL.
    let key = |st: &State, run: &RunId| record(st, run, "b").cache_key.clone().unwrap();
    let (second, _) = references_run(&mut st, true);
    assert_eq!(key(&st, &run), key(&st, &second));
}

#[test]
fn a_missing_artifact_fails_the_consuming_step_naming_it() {
    let mut st = new_state();
    let (run, b) = references_run(&mut st, false);
    assert!(b.is_none());
    let b = record(&st, &run, "b");
    assert_eq!(b.status, StepStatus::Failed);
    let why = b.message.as_deref().unwrap();
    assert!(
        why.contains(
            "${a.artifacts.data.url}: step a has no artifact \"data\" (its artifacts: [\"r\"])"
        ),
        "{why}"
    );
}

#[test]
fn a_step_priority_is_refused_when_the_job_queues_keep_none() {
    let mut st = new_state();
    st.step_priorities = false;
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n\
                 [[step]]\nname = \"b\"\ncommand = [\"true\"]\npriority = 5\n";
    let error = rejection(&mut st, steps, 5);
    assert!(
        error.contains("step b: priority 5") && error.contains("--queue-type classic"),
        "{error}"
    );
    // Without priorities the same queues take the pipeline.
    let plain = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, plain, 6);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    assert_eq!(jobs(&fx).len(), 1);
}
