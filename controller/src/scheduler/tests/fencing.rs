//! Leases, stale and duplicate events, aborts and resuming after a restart.

use super::*;

#[test]
fn lease_expiry_retries_and_the_lost_agent_is_fenced() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"x\"\ncommand = [\"sleep\", \"100\"]\nretries = 1\nretry_backoff = \"0s\"\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let first = jobs(&fx).pop().unwrap();
    claim(&mut st, &first, "gone", 1_000);
    // Heartbeats keep it alive past the first lease.
    heartbeat(&mut st, "gone", &[&first], 3_500);
    assert!(handle(&mut st, Event::Tick, 4_000).is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Running);
    // Then silence: the lease runs out 3 s after the last heartbeat.
    assert!(handle(&mut st, Event::Tick, 6_499).is_empty());
    let fx = handle(&mut st, Event::Tick, 6_500);
    let second = jobs(&fx)
        .pop()
        .expect("a new attempt after the lease expired");
    assert_eq!(second.attempt, AttemptNo(2));
    let lost = st.runs[&run].step(&step("x")).unwrap().attempts[0].clone();
    assert_eq!(lost.outcome, Some(AttemptOutcome::Lost));

    // The old agent comes back: its heartbeat and its late Finished are fenced.
    let fx = heartbeat(&mut st, "gone", &[&first], 7_000);
    let c = cancels(&fx);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].0.as_str(), c[0].1.attempt), ("gone", AttemptNo(1)));
    let fx = handle(
        &mut st,
        Event::Finished(finished_msg(&first, "gone", Outcome::Succeeded, Some(0))),
        7_100,
    );
    assert!(fx.is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Queued);

    run_job(&mut st, &second, "w2", Outcome::Succeeded, 8_000);
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn stale_and_duplicate_events_are_fenced() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, "[[step]]\nname = \"x\"\ncommand = [\"true\"]\n", 0);
    let job = jobs(&fx).pop().unwrap();
    claim(&mut st, &job, "w1", 10);
    // A duplicate delivery claimed by a second agent: that agent is told to cancel.
    let fx = claim(&mut st, &job, "w2", 20);
    let c = cancels(&fx);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0.as_str(), "w2");
    assert!(c[0].1.reason.contains("w1"), "{}", c[0].1.reason);
    // The second agent reports its cancelled copy: ignored, the step still runs on w1.
    let fx = handle(
        &mut st,
        Event::Finished(finished_msg(&job, "w2", Outcome::Aborted, None)),
        30,
    );
    assert!(fx.is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Running);
    // The same claim redelivered is harmless.
    assert!(cancels(&claim(&mut st, &job, "w1", 40)).is_empty());
    // A finished attempt that is not current changes nothing.
    let mut stale = finished_msg(&job, "w1", Outcome::Failed, Some(1));
    stale.attempt = AttemptNo(7);
    assert!(handle(&mut st, Event::Finished(stale), 50).is_empty());
    handle(
        &mut st,
        Event::Finished(finished_msg(&job, "w1", Outcome::Succeeded, Some(0))),
        60,
    );
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
    // A redelivered Finished and a redelivered Submit change nothing either.
    let again = handle(
        &mut st,
        Event::Finished(finished_msg(&job, "w1", Outcome::Failed, Some(1))),
        70,
    );
    assert!(again.is_empty());
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn abort_stops_waiting_steps_and_cancels_running_ones() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"sleep\", \"9\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n[[step]]\nname = \"c\"\ncommand = [\"true\"]\nparents = [\"a\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let all = jobs(&fx);
    let (a, b) = (&all[0], &all[1]);
    claim(&mut st, a, "w", 10);
    let fx = handle(
        &mut st,
        Event::Abort(Abort {
            run_id: run.clone(),
            step: None,
            reason: Some("user".into()),
        }),
        20,
    );
    let c = cancels(&fx);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].0.as_str(), c[0].1.step.as_str()), ("w", "a"));
    // b's job is still on its queue: every agent is told, once for the whole run.
    let told = revokes(&fx);
    assert_eq!(told.len(), 1, "{fx:?}");
    assert_eq!((&told[0].run_id, &told[0].step), (&run, &None));
    assert_eq!(told[0].reason, "user");
    // Ahead of the cancel: the agent it frees a slot on knows of the run's end first.
    assert!(matches!(fx.actions[0], Action::Revoke(_)), "{fx:?}");
    assert_eq!(status(&st, &run, "b"), StepStatus::Aborted);
    assert_eq!(status(&st, &run, "c"), StepStatus::Aborted);
    assert_eq!(status(&st, &run, "a"), StepStatus::Running);
    assert_eq!(st.runs[&run].status, RunStatus::Running);
    // The queued job of b is picked up later anyway: that agent is told to cancel.
    assert_eq!(cancels(&claim(&mut st, b, "w2", 30)).len(), 1);
    // The running step dies of the cancel (a failure while aborting is not retried).
    handle(
        &mut st,
        Event::Finished(finished_msg(a, "w", Outcome::Failed, Some(143))),
        40,
    );
    assert_eq!(status(&st, &run, "a"), StepStatus::Aborted);
    let r = &st.runs[&run];
    assert_eq!(r.status, RunStatus::Aborted);
    assert!(r.error.as_deref().unwrap().contains("user"));
}

#[test]
fn aborting_a_queued_step_revokes_its_attempt_and_a_running_one_revokes_nothing() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"sleep\", \"9\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    claim(&mut st, &jobs(&fx)[0], "w", 10);
    let abort = |name: &str| {
        Event::Abort(Abort {
            run_id: run.clone(),
            step: Some(step(name)),
            reason: None,
        })
    };
    let fx = handle(&mut st, abort("b"), 20);
    let told = revokes(&fx);
    assert_eq!(told.len(), 1, "{fx:?}");
    let revoked = told[0].step.as_ref().expect("one step's attempt");
    assert_eq!(
        (revoked.step.as_str(), revoked.attempt),
        ("b", AttemptNo(1))
    );
    assert!(cancels(&fx).is_empty());
    // a runs: its agent is told directly, and nothing of the run waits on a queue.
    let fx = handle(&mut st, abort("a"), 30);
    assert_eq!(cancels(&fx).len(), 1);
    assert!(revokes(&fx).is_empty(), "{fx:?}");
    let whole = Abort {
        run_id: run.clone(),
        step: None,
        reason: None,
    };
    assert!(revokes(&handle(&mut st, Event::Abort(whole), 40)).is_empty());
}

#[test]
fn aborted_step_whose_agent_is_gone_ends_at_lease_expiry_without_retry() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"sleep\", \"9\"]\nretries = 3\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\nparents = [\"a\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    claim(&mut st, &jobs(&fx)[0], "w", 0);
    let abort = Abort {
        run_id: run.clone(),
        step: Some(step("a")),
        reason: None,
    };
    assert_eq!(cancels(&handle(&mut st, Event::Abort(abort), 10)).len(), 1);
    let fx = handle(&mut st, Event::Tick, LEASE + 1);
    assert!(jobs(&fx).is_empty());
    assert_eq!(status(&st, &run, "a"), StepStatus::Aborted);
    assert_eq!(status(&st, &run, "b"), StepStatus::Skipped);
    assert_eq!(st.runs[&run].status, RunStatus::Aborted);
}

#[test]
fn resume_republishes_queued_jobs_and_renews_leases() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let all = jobs(&fx);
    claim(&mut st, &all[0], "w", 10);
    // The restarted controller sees the same records, long after the old lease ran out.
    let mut restarted = new_state();
    restarted.runs = st.runs.clone();
    let fx = resume(&mut restarted, 100_000);
    assert_eq!(jobs(&fx), vec![all[1].clone()], "the same attempt again");
    let a = restarted.runs[&run].step(&step("a")).unwrap();
    assert_eq!(a.lease_until, Some(100_000 + LEASE));
    assert!(handle(&mut restarted, Event::Tick, 100_001).is_empty());
}

#[test]
fn renewed_leases_survive_a_silence_the_controller_caused() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"sleep\", \"100\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    claim(&mut st, &jobs(&fx)[0], "w", 10);
    // The broker was away for a minute: no heartbeat could arrive.
    renew_leases(&mut st, 60_000);
    assert!(handle(&mut st, Event::Tick, 60_000 + LEASE - 1).is_empty());
    assert_eq!(status(&st, &run, "a"), StepStatus::Running);
    // Silence after the renewal still loses the attempt, which is dispatched again.
    let fx = handle(&mut st, Event::Tick, 60_000 + LEASE);
    assert_eq!(jobs(&fx).len(), 1);
    assert_eq!(status(&st, &run, "a"), StepStatus::Queued);
    let a = st.runs[&run].step(&step("a")).unwrap();
    assert_eq!(a.attempts[0].outcome, Some(AttemptOutcome::Lost));
}

/// A result for a dispatched attempt nobody claimed (a forged `Finished`, or one from an agent
/// whose claim was refused) changes nothing and is never cached; the claimant's is taken.
#[test]
fn results_without_the_matching_claim_are_refused_and_never_cached() {
    let mut st = new_state();
    let cached =
        "[[step]]\nname = \"x\"\ncommand = [\"true\"]\noutputs = { o = \"o.txt\" }\ncache = true\n";
    let (run, fx) = submit_toml(&mut st, cached, 0);
    let job = jobs(&fx).pop().unwrap();
    let forged = |by: &str| {
        let mut f = finished_msg(&job, by, Outcome::Succeeded, Some(0));
        for out in f.outputs.values_mut() {
            *out = artifact("the forger's bytes", "o.txt");
        }
        Event::Finished(f)
    };
    // Never claimed: refused.
    assert!(handle(&mut st, forged("mallory"), 10).is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Queued);
    // Claimed by w1: another agent's result, and w1's for another attempt, are refused.
    claim(&mut st, &job, "w1", 20);
    assert!(handle(&mut st, forged("mallory"), 30).is_empty());
    let mut other_attempt = finished_msg(&job, "w1", Outcome::Succeeded, Some(0));
    other_attempt.attempt = AttemptNo(2);
    assert!(handle(&mut st, Event::Finished(other_attempt), 40).is_empty());
    assert_eq!(status(&st, &run, "x"), StepStatus::Running);
    assert!(st.cache.is_empty());
    // The claimant's own result is taken and cached.
    let fx = handle(
        &mut st,
        Event::Finished(finished_msg(&job, "w1", Outcome::Succeeded, Some(0))),
        50,
    );
    assert!(
        fx.actions
            .iter()
            .any(|a| matches!(a, Action::CacheInsert { .. }))
    );
    assert_eq!(status(&st, &run, "x"), StepStatus::Succeeded);
    let cached: Vec<_> = st.cache.values().flat_map(|o| o.values()).collect();
    assert_eq!(cached, vec![&artifact("x.o", "o.txt")]);
}
