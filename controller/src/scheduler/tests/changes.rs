//! What an event says it changed. The store writes a run's header and only the steps an
//! event lists in `Effects::steps`, so the list must hold every step that changed; and the
//! per-step advance after an attempt ends must leave the run as a full pass would.

use super::*;
use crate::scheduler::progress::advance;
use std::collections::VecDeque;

/// Applies `event` and checks what it reports against what changed: every changed step of a
/// run reported step by step is listed, and a full pass over every run finds nothing to do.
fn apply(st: &mut State, event: Event, now: u64) -> Effects {
    let before = st.runs.clone();
    let fx = handle(st, event, now);
    for (id, listed) in &fx.steps {
        assert!(
            fx.runs.contains(id),
            "run {id} listed without being changed"
        );
        let (old, new) = (&before[id], &st.runs[id]);
        assert_eq!(old.steps.len(), new.steps.len(), "steps were added");
        for (i, (a, b)) in old.steps.iter().zip(&new.steps).enumerate() {
            assert!(
                a == b || listed.contains(&i),
                "step {} changed but is not listed in {listed:?}:\nbefore {a:#?}\nafter {b:#?}",
                b.name
            );
        }
    }
    for (id, old) in &before {
        if !fx.runs.contains(id) {
            assert!(old == &st.runs[id], "run {id} changed but is not reported");
        }
    }
    let mut full = st.clone();
    let (mut ctx, runs, _) = crate::scheduler::split(&mut full, now);
    for run in runs.values_mut() {
        assert!(
            !advance(run, &mut ctx),
            "a full pass still had something to do in run {}",
            run.run_id
        );
    }
    assert!(ctx.fx.actions.is_empty(), "a full pass dispatched more");
    fx
}

/// Runs every job to its end in dispatch order through [`apply`]; steps named in `failing`
/// fail, steps named in `released` are released once.
fn drive(st: &mut State, first: Effects, failing: &[&str], released: &[&str]) -> u64 {
    let mut queue: VecDeque<StepJob> = jobs(&first).into();
    let mut released: Vec<&str> = released.to_vec();
    let mut now = 10;
    while let Some(job) = queue.pop_front() {
        now += 10;
        let claimed = Claimed {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent("w"),
        };
        let fx = apply(st, Event::Claimed(claimed), now);
        assert!(
            fx.steps.contains_key(&job.run_id),
            "a claim is reported step by step"
        );
        let name = job.step.as_str();
        let outcome = if let Some(at) = released.iter().position(|r| *r == name) {
            released.remove(at);
            Outcome::Released
        } else if failing.contains(&name) {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        let f = finished_msg(&job, "w", outcome, Some(0));
        let fx = apply(st, Event::Finished(f), now);
        assert!(
            fx.steps.contains_key(&job.run_id),
            "an ended attempt is reported step by step"
        );
        queue.extend(jobs(&fx));
    }
    now
}

const LAYERED: &str = r#"
[[step]]
name = "a"
command = ["true"]
outputs = { o = "o.txt" }
cache = true
[[step]]
name = "b"
command = ["true"]
[[step]]
name = "c"
command = ["cat", "${a.o}"]
cache = true
[[step]]
name = "d"
command = ["true"]
parents = ["b", "c"]
[[step]]
name = "e"
command = ["true"]
parents = ["b"]
[[step]]
name = "f"
command = ["true"]
parents = ["e"]
[[step]]
name = "g"
command = ["true"]
parents = ["a"]
continue_on_fail = true
"#;

#[test]
fn each_event_lists_every_step_it_changed_and_leaves_nothing_for_a_full_pass() {
    let mut st = new_state();
    let (run, fx) = submit_toml(&mut st, LAYERED, 0);
    assert!(
        !fx.steps.contains_key(&run),
        "a submission writes the whole run"
    );
    drive(&mut st, fx, &["b"], &["a", "e"]);
    assert_eq!(status(&st, &run, "b"), StepStatus::Failed);
    for skipped in ["d", "e", "f"] {
        assert_eq!(status(&st, &run, skipped), StepStatus::Skipped, "{skipped}");
    }
    assert_eq!(status(&st, &run, "c"), StepStatus::Succeeded);
    assert_eq!(st.runs[&run].status, RunStatus::Failed);

    // The same pipeline again: a and c are cache hits, settled in the submission's pass.
    let (again, fx) = submit_toml(&mut st, LAYERED, 1000);
    assert_eq!(status(&st, &again, "a"), StepStatus::Cached);
    assert_eq!(status(&st, &again, "c"), StepStatus::Cached);
    drive(&mut st, fx, &[], &[]);
    assert_eq!(st.runs[&again].status, RunStatus::Succeeded);
}

#[test]
fn a_retry_and_a_lost_attempt_are_reported_and_settled() {
    let mut st = new_state();
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\nretries = 1\n\
                 retry_backoff = \"1s\"\n[[step]]\nname = \"b\"\ncommand = [\"true\"]\n\
                 parents = [\"a\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let a = jobs(&fx).pop().unwrap();
    apply(&mut st, Event::Claimed(claimed_msg(&a, "w")), 10);
    let f = finished_msg(&a, "w", Outcome::Failed, Some(1));
    let fx = apply(&mut st, Event::Finished(f), 20);
    assert!(jobs(&fx).is_empty(), "waits out the backoff");
    let fx = apply(&mut st, Event::Tick, 2000);
    let a = jobs(&fx).pop().expect("the retry is dispatched by a tick");
    apply(&mut st, Event::Claimed(claimed_msg(&a, "w")), 2010);
    // Its agent goes silent: the lease runs out and the attempt is dispatched again.
    let fx = apply(&mut st, Event::Tick, 2010 + LEASE + 1);
    let a = jobs(&fx).pop().expect("a lost attempt is dispatched again");
    let again = Effects {
        actions: vec![dispatch(&a)],
        ..Default::default()
    };
    drive(&mut st, again, &[], &[]);
    assert_eq!(st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn with_a_queue_limit_an_ended_attempt_advances_the_whole_run() {
    let mut st = new_state();
    st.queue_limits
        .insert(QueueName::new("default").unwrap(), 1);
    let steps = "[[step]]\nname = \"a\"\ncommand = [\"true\"]\n\
                 [[step]]\nname = \"b\"\ncommand = [\"true\"]\n";
    let (run, fx) = submit_toml(&mut st, steps, 0);
    let first = jobs(&fx).pop().unwrap();
    claim(&mut st, &first, "w", 10);
    let f = finished_msg(&first, "w", Outcome::Succeeded, Some(0));
    let fx = handle(&mut st, Event::Finished(f), 20);
    assert!(fx.runs.contains(&run));
    assert!(
        !fx.steps.contains_key(&run),
        "room on a limited queue may let any held step go: the run is written whole"
    );
    let held = jobs(&handle(&mut st, Event::Tick, 30))
        .pop()
        .expect("the held step goes at the next tick");
    assert_ne!(held.step, first.step);
}

fn claimed_msg(job: &StepJob, by: &str) -> Claimed {
    Claimed {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent(by),
    }
}

fn dispatch(job: &StepJob) -> Action {
    Action::Dispatch {
        queue: QueueName::new("default").unwrap(),
        job: Box::new(job.clone()),
    }
}

#[test]
fn effects_merged_keep_a_change_anywhere() {
    let run = RunId::generate();
    let mut few = Effects::default();
    few.changed_steps(&run, [1, 2]);
    let mut anywhere = Effects::default();
    anywhere.changed(run.clone());
    let mut merged = few.clone();
    merged.merge(anywhere.clone());
    assert!(merged.runs.contains(&run));
    assert!(!merged.steps.contains_key(&run), "steps then anywhere");
    let mut merged = anywhere;
    merged.merge(few.clone());
    assert!(!merged.steps.contains_key(&run), "anywhere then steps");
    let mut more = Effects::default();
    more.changed_steps(&run, [5]);
    let mut merged = few;
    merged.merge(more);
    assert_eq!(merged.steps[&run], BTreeSet::from([1, 2, 5]));
}
