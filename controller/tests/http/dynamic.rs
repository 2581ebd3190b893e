//! A dynamic run over HTTP: the test plays the agent running the driver, adds steps as its
//! channel would relay them, waits on them with the long poll, and ends the driver.

use crate::server::Server;
use crate::support::{self, next_job, patience};
use drover_protocol::message::{Claimed, Finished, Message, Outcome, StepJob, now_ms};
use drover_protocol::{AgentId, Digest};
use drover_test_support::eventually_async;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DYNAMIC: &str = r#"
[pipeline]
name = "decorated"
project = "http-tests"
[[step]]
name = "pipe"
driver = true
function = { source = "def pipe():\n    pass\n", entry = "pipe" }
"#;

fn add(seq: u32, digest: &str, step: Value) -> Value {
    let component = step["name"].clone();
    json!({
        "caller": "pipe",
        "attempt": 1,
        "call": {"seq": seq, "component": component, "digest": digest},
        "step": step,
    })
}

async fn claim(s: &Server, job: &StepJob, agent: &AgentId) {
    s.event(Message::Claimed(Claimed {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent.clone(),
    }))
    .await;
}

async fn end(s: &Server, job: &StepJob, agent: &AgentId, outcome: Outcome, message: &str) {
    s.event(Message::Finished(Finished {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent.clone(),
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        outputs: BTreeMap::new(),
        message: Some(message.into()),
        started_at: now_ms(),
        ended_at: now_ms(),
        log_delays: Vec::new(),
        start: None,
        log_size: None,
        inline: Default::default(),
    }))
    .await;
}

/// Waits until `path` (a JSON view) satisfies `cond`; returns the view.
async fn until(s: &Server, path: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    eventually_async(patience(what), || async {
        let (_, doc) = s.json(path).await;
        if cond(&doc) { Ok(doc) } else { Err(doc) }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_driver_adds_steps_waits_for_them_and_its_failure_fails_the_run() {
    let s = Server::start().await;
    let mut drivers = s.driver_jobs().await;
    let mut jobs = s.jobs().await;
    let run = support::submit(&s.broker, DYNAMIC, &[], "http test").await;
    let driver = next_job(&mut drivers).await;
    assert_eq!(driver.step.as_str(), "pipe");
    let agent = AgentId::new("driver-agent").unwrap();
    claim(&s, &driver, &agent).await;
    let pipe = format!("/api/v1/runs/{run}/steps/pipe");
    let view = until(&s, &pipe, "the driver to run", |v| v["status"] == "running").await;
    assert_eq!(view["driver"], true);

    let steps = format!("/api/v1/runs/{run}/steps");
    let make = json!({"name": "make", "command": ["true"], "outputs": {"out": "out.txt"}});
    let (code, added) = s.post_json(&steps, &add(0, "d0", make.clone())).await;
    assert_eq!(code, 200, "{added}");
    assert_eq!(
        added,
        json!({"run_id": run.as_str(), "step": "make", "existing": false})
    );
    let job = next_job(&mut jobs).await;
    assert_eq!(job.step.as_str(), "make");
    // The same call again (a replay) gets the same step; another call of it a new name.
    let (code, again) = s.post_json(&steps, &add(0, "d0", make.clone())).await;
    assert_eq!(
        (code, &again["step"], &again["existing"]),
        (200, &json!("make"), &json!(true))
    );
    let (code, second) = s.post_json(&steps, &add(1, "d1", make.clone())).await;
    assert_eq!((code, &second["step"]), (200, &json!("make_1")));
    let (code, diverged) = s.post_json(&steps, &add(0, "other", make.clone())).await;
    assert_eq!(code, 400, "{diverged}");
    assert_eq!(diverged["code"], "bad_request");
    let message = diverged["message"].as_str().unwrap();
    assert!(
        message.starts_with("replay diverged at call 0 of pipe: it made step make"),
        "{message}"
    );

    // A step waiting for `make` is pending: a short wait answers with that after its time.
    let uses = json!({"name": "use", "command": ["cat", "${make.out}"]});
    let (code, _) = s.post_json(&steps, &add(2, "d2", uses)).await;
    assert_eq!(code, 200);
    let started = Instant::now();
    let (code, pending) = s.json(&format!("{steps}/use?wait=1")).await;
    assert_eq!((code, &pending["status"]), (200, &json!("pending")));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (_, now) = s.json(&format!("{steps}/make?wait=0")).await;
    assert_eq!(now["status"], "queued");

    // A long wait ends when the step does, not at its deadline.
    let waiting = {
        let url = format!("{}{steps}/make?wait=30", s.url);
        let request = s.http.get(url).bearer_auth(crate::server::TOKEN);
        tokio::spawn(async move {
            let started = Instant::now();
            let view: Value = request.send().await.unwrap().json().await.unwrap();
            (view, started.elapsed())
        })
    };
    let worker = AgentId::new("http-agent").unwrap();
    claim(&s, &job, &worker).await;
    until(&s, &format!("{steps}/make"), "make to run", |v| {
        v["status"] == "running"
    })
    .await;
    assert!(
        !waiting.is_finished(),
        "the wait answered before make ended"
    );
    end(&s, &job, &worker, Outcome::Failed, "boom").await;
    let (view, took) = waiting.await.unwrap();
    assert_eq!(view["status"], "failed", "{view}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // The driver fails: what is left is aborted and the run fails naming the driver and the
    // component that failed.
    end(&s, &driver, &agent, Outcome::Failed, "ValueError: no").await;
    let done = until(&s, &format!("/api/v1/runs/{run}"), "the run to end", |v| {
        v["status"] != "running"
    })
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["error"],
        "driver pipe failed: exit code 1: ValueError: no; failed step(s): make"
    );
    let status = |name: &str| {
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["name"] == name)
            .map(|st| st["status"].clone())
    };
    assert_eq!(status("make_1"), Some(json!("aborted")));
    assert_eq!(status("use"), Some(json!("skipped")));
    let (code, late) = s.post_json(&steps, &add(3, "d3", make)).await;
    assert_eq!(code, 400);
    assert_eq!(
        late["message"],
        format!("run {run} is failed: it takes no more steps")
    );
    s.stop().await;
}

#[tokio::test]
async fn add_step_refuses_bad_requests_with_what_to_do() {
    let s = Server::start().await;
    let mut drivers = s.driver_jobs().await;
    let run = support::submit(&s.broker, DYNAMIC, &[], "http test").await;
    let driver = next_job(&mut drivers).await;
    claim(&s, &driver, &AgentId::new("driver-agent").unwrap()).await;
    let steps = format!("/api/v1/runs/{run}/steps");
    until(&s, &format!("{steps}/pipe"), "the driver to run", |v| {
        v["status"] == "running"
    })
    .await;

    let content = b"pickled";
    let digest = Digest::of_bytes(content);
    let with_blob = json!({
        "name": "f",
        "function": {
            "source": "def f(x):\n    return x\n",
            "entry": "f",
            "returns": ["y"],
            "blobs": {"x": {"digest": digest.to_string(), "size": 7, "file_name": "x.pkl"}},
        },
    });
    let (code, missing) = s.post_json(&steps, &add(0, "a", with_blob.clone())).await;
    assert_eq!(code, 400, "{missing}");
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "argument x of step f: blob {digest} is not stored"
        )),
        "{message}"
    );
    let put = s
        .request(reqwest::Method::PUT, &format!("/api/v1/blobs/{digest}"))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let (code, added) = s.post_json(&steps, &add(0, "a", with_blob)).await;
    assert_eq!((code, &added["step"]), (200, &json!("f")), "{added}");

    let (code, stale) = s
        .post_json(
            &steps,
            &json!({"caller": "pipe", "attempt": 2,
            "call": {"seq": 1, "component": "g", "digest": "b"},
            "step": {"name": "g", "command": ["true"]}}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("its current attempt is 1"),
        "{stale}"
    );
    let reserved = json!({"name": "g", "command": ["true"], "queue": "drivers"});
    let (code, refused) = s.post_json(&steps, &add(1, "b", reserved)).await;
    assert_eq!(code, 400);
    assert!(
        refused["message"].as_str().unwrap().contains("reserved"),
        "{refused}"
    );
    let own = json!({"name": "g", "command": ["true"], "queue": "events"});
    let (code, refused) = s.post_json(&steps, &add(1, "b", own)).await;
    assert_eq!(code, 400);
    let events = s.broker.names().events();
    assert!(
        refused["message"].as_str().unwrap().contains(&events),
        "{refused}"
    );
    let (code, bad) = s.post_json(&steps, &json!({"caller": "pipe"})).await;
    assert_eq!(code, 400);
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .starts_with("bad add-step request"),
        "{bad}"
    );

    let huge = s
        .request(reqwest::Method::POST, &steps)
        .body(vec![b' '; (8 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 400);
    let error: drover_api::ApiError = huge.json().await.unwrap();
    assert!(error.message.contains("at most 8 MiB"), "{error:?}");

    let ghost = drover_protocol::RunId::generate();
    let (code, _) = s
        .post_json(
            &format!("/api/v1/runs/{ghost}/steps"),
            &add(0, "a", json!({})),
        )
        .await;
    assert_eq!(code, 404);
    for wait in ["61", "soon", "-1"] {
        let (code, bad) = s.json(&format!("{steps}/pipe?wait={wait}")).await;
        assert_eq!(code, 400, "?wait={wait}");
        assert!(
            bad["message"].as_str().unwrap().contains("from 0 to 60"),
            "{bad}"
        );
    }
    let (code, _) = s.json(&format!("{steps}/nothing?wait=5")).await;
    assert_eq!(code, 404);

    // A run without a driver takes no steps.
    let plain = s.submit().await;
    let mut jobs = s.jobs().await;
    next_job(&mut jobs).await;
    let mut from_make = add(0, "a", json!({"name": "x", "command": ["true"]}));
    from_make["caller"] = json!("make");
    let (code, refused) = s
        .post_json(&format!("/api/v1/runs/{plain}/steps"), &from_make)
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        refused["message"],
        format!("run {plain} is not a dynamic run (it has no driver)")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_lost_driver_comes_back_on_another_agent_and_its_replay_gets_the_same_step() {
    let s = Server::start_with(|c| c.lease = Duration::from_secs(1)).await;
    let mut drivers = s.driver_jobs().await;
    let mut jobs = s.jobs().await;
    let run = support::submit(&s.broker, DYNAMIC, &[], "http test").await;
    let first = next_job(&mut drivers).await;
    claim(&s, &first, &AgentId::new("dies").unwrap()).await;
    let steps = format!("/api/v1/runs/{run}/steps");
    until(&s, &format!("{steps}/pipe"), "the driver to run", |v| {
        v["status"] == "running"
    })
    .await;
    let make = json!({"name": "make", "command": ["true"]});
    let (code, added) = s.post_json(&steps, &add(0, "d0", make.clone())).await;
    assert_eq!((code, &added["existing"]), (200, &json!(false)), "{added}");
    next_job(&mut jobs).await;

    // No heartbeat comes: the lease runs out and the driver is published again.
    let second = next_job(&mut drivers).await;
    assert_eq!((second.step.as_str(), second.attempt.0), ("pipe", 2));
    claim(&s, &second, &AgentId::new("survivor").unwrap()).await;
    until(&s, &format!("{steps}/pipe"), "attempt 2 to run", |v| {
        v["status"] == "running" && v["attempt"] == 2
    })
    .await;
    // The first attempt, were it still alive somewhere, can add nothing any more.
    let (code, stale) = s.post_json(&steps, &add(1, "d1", make.clone())).await;
    assert_eq!(code, 400, "{stale}");
    let mut replay = add(0, "d0", make);
    replay["attempt"] = json!(2);
    let (code, again) = s.post_json(&steps, &replay).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again,
        json!({"run_id": run.as_str(), "step": "make", "existing": true})
    );
    let (_, view) = s.json(&format!("/api/v1/runs/{run}")).await;
    assert_eq!(view["steps"].as_array().unwrap().len(), 2, "{view}");
    let (_, make) = s.json(&format!("{steps}/make")).await;
    assert_eq!(make["attempts"].as_array().unwrap().len(), 1, "{make}");
    s.stop().await;
}
