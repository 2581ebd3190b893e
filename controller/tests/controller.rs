//! The real controller on port 0 against the real broker, in a fresh namespace per test; the
//! test itself plays the agent over the real protocol (queues, events, HTTP blob uploads).

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

mod support;

use drover_amqp::{Broker, Consumer, Target};
use drover_controller::ControllerConfig;
use drover_protocol::message::{ArtifactRef, Claimed, Events, LogChunk, Message, Outcome, StepJob};
use drover_protocol::{AgentId, Digest, FileName, OutputName, QueueName, RunId};
use drover_test_support::eventually_async;
use serde_bytes::ByteBuf;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Running, finished, next_job, next_message, patience};

struct Harness {
    dir: tempfile::TempDir,
    controller: Option<Running>,
    url: String,
    broker: Broker,
    http: reqwest::Client,
    /// Changes to the controller's configuration.
    tune: fn(&mut ControllerConfig),
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: fn(&mut ControllerConfig)) -> Self {
        let mut h = Self {
            dir: tempfile::tempdir().unwrap(),
            controller: None,
            url: String::new(),
            broker: support::connect("tc").await,
            http: reqwest::Client::new(),
            tune,
        };
        h.start_controller().await;
        h
    }

    async fn start_controller(&mut self) {
        let mut config = support::config(self.broker.names(), self.dir.path());
        config.lease = Duration::from_secs(3);
        (self.tune)(&mut config);
        let controller = Running::start(config).await;
        self.url = controller.url();
        let written = std::fs::read_to_string(self.dir.path().join("controller.url")).unwrap();
        assert_eq!(written.trim(), self.url);
        self.controller = Some(controller);
    }

    async fn stop_controller(&mut self) {
        self.controller.take().unwrap().stop().await;
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// `GET path` until `pick` finds what it looks for in the JSON; a timeout shows the last
    /// document.
    async fn json_until<T>(&self, path: &str, what: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
        eventually_async(patience(what), || async {
            let (status, doc) = self.json(path).await;
            match (status, pick(&doc)) {
                (200, Some(found)) => Ok(found),
                _ => Err(format!("{status} {doc}")),
            }
        })
        .await
        .unwrap()
    }

    async fn event(&self, msg: Message) {
        let events = Target::Events;
        support::publish(&self.broker, events, &msg).await;
    }

    async fn put_blob(&self, content: &[u8]) -> ArtifactRef {
        let digest = Digest::of_bytes(content);
        let resp = self
            .http
            .put(format!("{}/api/v1/blobs/{digest}", self.url))
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        ArtifactRef {
            digest,
            size: content.len() as u64,
            file_name: drover_protocol::FileName::new("out.txt").unwrap(),
        }
    }

    /// Publishes a `Submit` of `toml` to the services queue and returns its run id.
    async fn submit(&self, toml: &str, params: &[(&str, &str)]) -> RunId {
        support::submit(&self.broker, toml, params, "test").await
    }

    async fn consume_default(&self) -> Consumer {
        support::consume_default(&self.broker).await
    }

    async fn claim(&self, job: &StepJob, agent: &AgentId) {
        self.event(Message::Claimed(Claimed {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent.clone(),
        }))
        .await;
    }

    /// Polls `GET /api/v1/runs/{run}` until `cond` holds.
    async fn wait_run(&self, run: &RunId, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/runs/{run}");
        self.json_until(&path, what, |doc| cond(doc).then(|| doc.clone()))
            .await
    }

    async fn cleanup(mut self) {
        if self.controller.is_some() {
            self.stop_controller().await;
        }
        support::cleanup(self.broker, &["default", "nobody"]).await;
    }
}

#[tokio::test]
async fn http_answers_health_404s_and_blobs() {
    let h = Harness::start().await;
    let (status, doc) = h.json("/healthz").await;
    assert_eq!(
        (status, &doc),
        (
            200,
            &serde_json::json!({"status": "ok", "broker": "connected"})
        )
    );

    let missing = RunId::generate();
    for path in [
        format!("/api/v1/runs/{missing}"),
        "/api/v1/runs/not-a-run".to_string(),
        format!("/api/v1/runs/{missing}/steps/a/log"),
        format!("/api/v1/runs/{missing}/steps/a/artifacts/x"),
        format!("/api/v1/blobs/{}", Digest::of_bytes(b"never stored")),
        "/api/v1/nothing-here".to_string(),
    ] {
        let (status, doc) = h.json(&path).await;
        assert_eq!(status, 404, "{path}: {doc}");
        assert_eq!(doc["code"], "not_found", "{path}: {doc}");
        assert!(doc["message"].is_string(), "{path}: {doc}");
    }
    assert_eq!(
        h.get(&format!("/runs/{missing}")).await.status().as_u16(),
        404
    );
    assert_eq!(h.get("/api/v1/blobs/xyz").await.status().as_u16(), 400);

    // A blob larger than any single buffer, uploaded in pieces and read back whole.
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&content);
    let blob_url = format!("{}/api/v1/blobs/{digest}", h.url);
    let head = h.http.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 404);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        content.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let put = h.http.put(&blob_url).body(body).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let head = h.http.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"],
        content.len().to_string().as_str()
    );
    let got = h.http.get(&blob_url).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), content.as_slice());

    // Content that does not hash to the name in the URL is refused, naming both digests.
    let wrong = Digest::of_bytes(b"promised");
    let resp = h
        .http
        .put(format!("{}/api/v1/blobs/{wrong}", h.url))
        .body("delivered")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let doc: drover_api::ApiError = resp.json().await.unwrap();
    assert_eq!(doc.code, drover_api::ErrorCode::BadRequest);
    let error = doc.message.as_str();
    assert!(error.contains(wrong.as_str()), "{error}");
    assert!(
        error.contains(Digest::of_bytes(b"delivered").as_str()),
        "{error}"
    );
    let head = h
        .http
        .head(format!("{}/api/v1/blobs/{wrong}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 404);

    let metrics = h.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("drover_runs{status=\"running\"} 0"),
        "{metrics}"
    );
    h.cleanup().await;
}

const PIPELINE: &str = r#"
[pipeline]
name = "two <steps>"
project = "tests"
[parameters]
who = { default = "world" }
[[step]]
name = "make"
command = ["sh", "-c", "echo ${pipeline.who} > out.txt"]
outputs = { out = "out.txt" }
[[step]]
name = "use"
command = ["cat", "${make.out}"]
"#;

#[tokio::test]
async fn a_run_flows_through_the_broker_and_survives_a_restart() {
    let mut h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("test-agent").unwrap();

    let run_id = h.submit(PIPELINE, &[("who", "<drover>")]).await;

    let make = next_job(&mut jobs).await;
    assert_eq!(make.step.as_str(), "make");
    assert_eq!(make.controller_url, h.url);
    h.claim(&make, &agent).await;
    for (offset, data) in [
        (0, &b"hello \xff"[..]),
        (0, &b"hello \xff"[..]),
        (7, &b"\rdone\n"[..]),
    ] {
        h.event(Message::Log(LogChunk {
            run_id: run_id.clone(),
            step: make.step.clone(),
            attempt: make.attempt,
            offset,
            data: data.to_vec(),
        }))
        .await;
    }
    let artifact = h.put_blob(b"<drover>\n").await;
    let out = drover_protocol::OutputName::new("out").unwrap();
    h.event(finished(
        &make,
        &agent,
        BTreeMap::from([(out, artifact.clone())]),
    ))
    .await;

    let usejob = next_job(&mut jobs).await;
    assert_eq!(usejob.step.as_str(), "use");
    assert_eq!(usejob.job.inputs[0].digest, artifact.digest);
    h.claim(&usejob, &agent).await;
    h.event(finished(&usejob, &agent, BTreeMap::new())).await;

    let run = h
        .wait_run(&run_id, "the run to succeed", |d| {
            d["status"] == "succeeded"
        })
        .await;
    assert_eq!(run["params"]["who"], "<drover>");
    assert_eq!(run["steps"][0]["name"], "make");
    assert_eq!(run["steps"][0]["attempts"][0]["agent"], "test-agent");
    assert_eq!(
        run["steps"][0]["outputs"]["out"]["digest"],
        artifact.digest.as_str()
    );
    assert_eq!(run["steps"][1]["inputs"][0], "make.out");
    assert_eq!(run["url"], format!("{}/runs/{run_id}", h.url));

    let log = h
        .get(&format!("/api/v1/runs/{run_id}/steps/make/log"))
        .await;
    assert_eq!(log.headers()["x-drover-log-size"], "13");
    assert_eq!(log.bytes().await.unwrap().as_ref(), b"hello \xff\rdone\n");
    let tail = h
        .get(&format!("/api/v1/runs/{run_id}/steps/make/log?offset=7"))
        .await;
    assert_eq!(tail.bytes().await.unwrap().as_ref(), b"\rdone\n");
    let art = h
        .get(&format!("/api/v1/runs/{run_id}/steps/make/artifacts/out"))
        .await;
    assert_eq!(art.status().as_u16(), 200);
    assert!(
        art.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("out.txt")
    );
    assert_eq!(art.bytes().await.unwrap().as_ref(), b"<drover>\n");
    let page = h
        .get(&format!("/runs/{run_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("two &lt;steps&gt;"), "{page}");
    assert!(!page.contains("<drover>"), "unescaped parameter: {page}");
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a finished run does not refresh"
    );

    // Garbage on the events queue is dead-lettered and counted; the controller keeps going.
    let publisher = h.broker.publisher().await.unwrap();
    publisher
        .publish_raw(
            &Target::Queue(h.broker.names().events()),
            b"\xc1 not msgpack",
        )
        .await
        .unwrap();
    let queues = h
        .json_until("/api/v1/queues", "a dead letter", |q| {
            (q["dead_letters"] == 1).then(|| q.clone())
        })
        .await;
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "default"),
        "{queues}"
    );
    let metrics = h.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("drover_dead_letters_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );

    // A restarted controller on the same data dir still serves the finished run.
    h.stop_controller().await;
    h.start_controller().await;
    let (status, runs) = h.json("/api/v1/runs").await;
    assert_eq!(status, 200);
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str(), "{runs}");
    assert_eq!(runs["runs"][0]["status"], "succeeded", "{runs}");
    assert_eq!(runs["runs"][0]["steps"]["succeeded"], 2, "{runs}");
    let art = h
        .get(&format!("/api/v1/runs/{run_id}/steps/make/artifacts/out"))
        .await;
    assert_eq!(art.bytes().await.unwrap().as_ref(), b"<drover>\n");
    jobs.close().await;
    h.cleanup().await;
}

async fn next_cancel(consumer: &mut Consumer) -> drover_protocol::message::Cancel {
    match next_message(consumer, "a cancel").await {
        Message::Cancel(cancel) => cancel,
        other => panic!("expected a cancel, got {other:?}"),
    }
}

const TWO_INDEPENDENT: &str = r#"
[pipeline]
name = "pair"
[[step]]
name = "x"
command = ["sleep", "60"]
[[step]]
name = "y"
command = ["true"]
"#;

#[tokio::test]
async fn duplicate_claims_are_cancelled_runs_resume_after_restart_and_abort_reaches_agents() {
    let mut h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let (a, b) = (
        AgentId::new("agent-a").unwrap(),
        AgentId::new("agent-b").unwrap(),
    );
    let mut control_a = h.broker.consume_agent_control(&a).await.unwrap();
    let mut control_b = h.broker.consume_agent_control(&b).await.unwrap();

    let run_id = h.submit(TWO_INDEPENDENT, &[]).await;
    let mut first = [next_job(&mut jobs).await, next_job(&mut jobs).await];
    first.sort_by(|l, r| l.step.cmp(&r.step));
    let (x, y) = (first[0].clone(), first[1].clone());
    assert_eq!((x.step.as_str(), y.step.as_str()), ("x", "y"));

    // Agent a claims x; a duplicate delivery claimed by agent b is cancelled.
    for agent in [&a, &b] {
        h.claim(&x, agent).await;
    }
    let cancel = next_cancel(&mut control_b).await;
    assert_eq!((cancel.step.as_str(), cancel.attempt), ("x", x.attempt));
    h.wait_run(&run_id, "x to run on agent a", |d| {
        d["steps"][0]["status"] == "running" && d["steps"][0]["attempts"][0]["agent"] == "agent-a"
    })
    .await;

    // A restarted controller publishes the still-queued y again, as the same attempt.
    h.stop_controller().await;
    h.start_controller().await;
    let again = next_job(&mut jobs).await;
    assert_eq!((again.step.as_str(), again.attempt), ("y", y.attempt));
    assert_eq!(again.controller_url, h.url);

    // Aborting through the API: y (queued) ends at once, agent a is told to stop x.
    // Without a token a POST carries a CSRF token and its cookie.
    let csrf: drover_api::CsrfToken = h
        .http
        .get(format!("{}/api/v1/csrf", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = h
        .http
        .post(format!("{}/api/v1/runs/{run_id}/abort", h.url))
        .header(drover_api::CsrfToken::HEADER, &csrf.token)
        .header("cookie", &csrf.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    // Every agent first learns that the run's queued jobs (y's) must not run, ahead of the
    // cancel of x.
    for control in [&mut control_a, &mut control_b] {
        let revoke = match next_message(control, "a revoke").await {
            Message::Revoke(revoke) => revoke,
            other => panic!("expected a revoke, got {other:?}"),
        };
        assert_eq!((&revoke.run_id, &revoke.step), (&run_id, &None));
    }
    let cancel = next_cancel(&mut control_a).await;
    assert_eq!(
        (cancel.run_id.as_str(), cancel.step.as_str()),
        (run_id.as_str(), "x")
    );
    h.wait_run(&run_id, "y to be aborted", |d| {
        d["steps"][1]["status"] == "aborted"
    })
    .await;
    let mut done = match finished(&x, &a, BTreeMap::new()) {
        Message::Finished(f) => f,
        _ => unreachable!(),
    };
    done.outcome = Outcome::Aborted;
    done.exit_code = None;
    h.event(Message::Finished(done)).await;
    let run = h
        .wait_run(&run_id, "the run to be aborted", |d| {
            d["status"] == "aborted"
        })
        .await;
    assert_eq!(run["steps"][0]["status"], "aborted", "{run}");
    assert!(run["error"].as_str().unwrap().contains("aborted"), "{run}");

    jobs.close().await;
    control_a.close().await;
    control_b.close().await;
    for agent in [&a, &b] {
        h.broker.delete_agent_control(agent).await.unwrap();
    }
    h.cleanup().await;
}

#[tokio::test]
async fn idle_queues_are_reported_and_agents_come_from_heartbeats() {
    let h = Harness::start().await;
    let spec = "[pipeline]\nname = \"lonely\"\n[[step]]\nname = \"waits\"\nqueue = \"nobody\"\ncommand = [\"true\"]\n";
    let run_id = h.submit(spec, &[]).await;
    h.wait_run(&run_id, "the step to be queued", |d| {
        d["steps"][0]["status"] == "queued"
    })
    .await;
    let page = h
        .get(&format!("/runs/{run_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/assets/run.js"),
        "the run page follows the run live: {page}"
    );

    // The state is durable before the job is published, so the broker may count it a moment later.
    let (doc, queue) = h
        .json_until("/api/v1/queues", "the job to reach the queue", |doc| {
            let queue = doc["queues"]
                .as_array()?
                .iter()
                .find(|q| q["name"] == "nobody")?;
            (queue["messages"] == 1).then(|| (doc.clone(), queue.clone()))
        })
        .await;
    assert_eq!(
        queue["broker_queue"],
        h.broker
            .names()
            .user_queue(&QueueName::new("nobody").unwrap())
            .as_str()
    );
    assert_eq!(
        (
            queue["waiting_steps"].as_u64(),
            queue["consumers"].as_u64(),
            queue["messages"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "{doc}"
    );
    assert!(
        queue["warning"].as_str().unwrap().contains("nobody"),
        "{doc}"
    );
    assert!(
        doc["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "services" && q["warning"].is_null()),
        "{doc}"
    );

    let heartbeat = drover_protocol::message::Heartbeat {
        agent: drover_protocol::message::AgentInfo {
            id: AgentId::new("beating").unwrap(),
            host: "somewhere".into(),
            pid: 7,
            version: "0.1.0".into(),
            queues: vec![QueueName::new("gpu").unwrap()],
            slots: 4,
            busy: 0,
            draining: false,
            cpus: 2,
            memory_mib: 4096,
            installer: None,
            warm_parents: Default::default(),
            refused_stale: 0,
            revoked_dropped: 0,
        },
        running: vec![],
    };
    h.event(Message::Heartbeat(heartbeat)).await;
    let agent = h
        .json_until("/api/v1/agents", "an agent listed", |doc| {
            doc["agents"].as_array()?.first().cloned()
        })
        .await;
    assert_eq!(
        (agent["id"].as_str(), agent["slots"].as_u64()),
        (Some("beating"), Some(4)),
        "{agent}"
    );
    assert_eq!(agent["alive"], true, "{agent}");
    assert_eq!(agent["queues"][0], "gpu", "{agent}");
    assert!(agent["last_seen"].as_u64().unwrap() > 0);
    h.cleanup().await;
}

const ONE_STEP: &str = r#"
[pipeline]
name = "one"
[[step]]
name = "only"
command = ["true"]
"#;

#[tokio::test]
async fn an_ended_run_is_still_known_to_late_events_and_redelivered_submissions() {
    let h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("agent-late").unwrap();
    let mut control = h.broker.consume_agent_control(&agent).await.unwrap();
    let spec = drover_protocol::spec::PipelineSpec::from_toml(ONE_STEP).unwrap();
    let submit = drover_protocol::message::Submit {
        run_id: RunId::generate(),
        spec,
        params: BTreeMap::new(),
        submitted_by: Some("test".into()),
        external: false,
    };
    let run_id = submit.run_id.clone();
    support::publish(&h.broker, Target::Submit, &Message::Submit(submit.clone())).await;
    let job = next_job(&mut jobs).await;
    h.claim(&job, &agent).await;
    h.event(finished(&job, &agent, BTreeMap::new())).await;
    h.wait_run(&run_id, "the run to succeed", |d| {
        d["status"] == "succeeded"
    })
    .await;

    // The ended run is read back for events about it: a late claim of its step is refused
    // with the step's status, and the same submission again starts nothing.
    h.claim(&job, &agent).await;
    let cancel = next_cancel(&mut control).await;
    assert_eq!(
        (cancel.run_id.as_str(), cancel.step.as_str()),
        (run_id.as_str(), "only")
    );
    assert!(
        cancel.reason.contains("step only is succeeded"),
        "{}",
        cancel.reason
    );
    support::publish(&h.broker, Target::Submit, &Message::Submit(submit)).await;
    // A run submitted after it is handled after it, so once this one is seen the redelivery
    // was handled too.
    let marker = h.submit(ONE_STEP, &[]).await;
    let next = next_job(&mut jobs).await;
    assert_eq!(
        next.run_id, marker,
        "the redelivered submission dispatched again"
    );
    let run = h
        .wait_run(&run_id, "the ended run", |d| d["status"] == "succeeded")
        .await;
    assert_eq!(
        run["steps"][0]["attempts"].as_array().unwrap().len(),
        1,
        "{run}"
    );

    jobs.close().await;
    control.close().await;
    h.broker.delete_agent_control(&agent).await.unwrap();
    h.cleanup().await;
}

/// A claim publishes nothing, so its change waits for a later flush before its delivery is
/// acked; a controller stopped meanwhile flushes it first, and the one started next on the same
/// data dir knows the step as running on its agent, then sees it end.
#[tokio::test]
async fn a_claim_waiting_for_its_flush_is_kept_through_a_stop() {
    let mut h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("agent-held").unwrap();
    let run_id = h.submit(ONE_STEP, &[]).await;
    let job = next_job(&mut jobs).await;
    h.claim(&job, &agent).await;
    let running = |d: &Value| d["steps"][0]["status"] == "running";
    h.wait_run(&run_id, "the step to run", running).await;
    h.stop_controller().await;
    h.start_controller().await;
    let run = h.wait_run(&run_id, "the step still running", running).await;
    assert_eq!(
        run["steps"][0]["attempts"][0]["agent"], "agent-held",
        "{run}"
    );
    h.event(finished(&job, &agent, BTreeMap::new())).await;
    let run = h
        .wait_run(&run_id, "the run to succeed", |d| {
            d["status"] == "succeeded"
        })
        .await;
    assert_eq!(
        run["steps"][0]["attempts"].as_array().unwrap().len(),
        1,
        "{run}"
    );
    jobs.close().await;
    h.cleanup().await;
}

/// `agent`'s report that `job` made output `out`, the file `out.txt` holding "inline\n", with
/// `bytes` inside the report as that output's content.
fn finished_inline(job: &StepJob, agent: &AgentId, bytes: &[u8]) -> Message {
    let out = OutputName::new("out").unwrap();
    let artifact = ArtifactRef {
        digest: Digest::of_bytes(b"inline\n"),
        size: 7,
        file_name: FileName::new("out.txt").unwrap(),
    };
    let mut msg = finished(job, agent, BTreeMap::from([(out.clone(), artifact)]));
    if let Message::Finished(f) = &mut msg {
        f.inline = BTreeMap::from([(out, ByteBuf::from(bytes))]);
    }
    msg
}

/// A small output comes inside its `Finished`: the controller stores it before it publishes the
/// job that reads it, and that job brings the bytes along. Bytes that are not what their
/// reference says are dead-lettered, and the step stays as it was.
#[tokio::test]
async fn an_output_inside_its_result_is_stored_before_the_step_reading_it_is_sent() {
    let h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("test-agent").unwrap();
    let run_id = h.submit(PIPELINE, &[]).await;
    let make = next_job(&mut jobs).await;
    assert_eq!(make.inline_outputs, 64 * 1024, "{make:?}");
    h.claim(&make, &agent).await;
    let digest = Digest::of_bytes(b"inline\n");

    h.event(finished_inline(&make, &agent, b"inlinE\n")).await;
    h.json_until("/api/v1/queues", "a dead letter", |q| {
        (q["dead_letters"] == 1).then_some(())
    })
    .await;
    let metrics = h.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("drover_dead_letters_total{reason=\"invalid_inline_output\"} 1"),
        "{metrics}"
    );
    let (_, run) = h.json(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["steps"][0]["status"], "running", "{run}");

    h.event(finished_inline(&make, &agent, b"inline\n")).await;
    let usejob = next_job(&mut jobs).await;
    assert_eq!(usejob.job.inputs[0].digest, digest);
    let brought = usejob.job.inputs[0].content.as_ref().map(|b| b.to_vec());
    assert_eq!(
        brought.as_deref(),
        Some(&b"inline\n"[..]),
        "the job brings the bytes"
    );
    let blob = h.get(&format!("/api/v1/blobs/{}", digest)).await;
    assert_eq!(blob.status().as_u16(), 200);
    assert_eq!(blob.bytes().await.unwrap().as_ref(), b"inline\n");
    let (_, run) = h.json(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["steps"][0]["outputs"]["out"]["digest"], digest.as_str());
    jobs.close().await;
    h.cleanup().await;
}

/// Outputs inside a `Finished` that would leave less than `--min-free-space` are not stored: the
/// attempt ends as an error saying why, as it would when their upload is refused.
#[tokio::test]
async fn outputs_inside_a_result_the_disk_has_no_room_for_end_the_attempt_with_the_reason() {
    let h = Harness::start_with(|c| c.min_free_space = u64::MAX / 4).await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("test-agent").unwrap();
    let run_id = h.submit(PIPELINE, &[]).await;
    let make = next_job(&mut jobs).await;
    h.claim(&make, &agent).await;
    h.event(finished_inline(&make, &agent, b"inline\n")).await;
    let run = h
        .wait_run(&run_id, "the run to fail", |d| d["status"] == "failed")
        .await;
    let attempt = &run["steps"][0]["attempts"][0];
    assert_eq!(attempt["outcome"], "error", "{run}");
    let message = attempt["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot store output 'out'") && message.contains("--min-free-space"),
        "{run}"
    );
    assert!(
        run["steps"][0]["outputs"]
            .as_object()
            .is_none_or(|o| o.is_empty()),
        "{run}"
    );
    jobs.close().await;
    h.cleanup().await;
}

/// Several events in one `Events` message are applied in their order, and one that cannot be
/// read is dead-lettered alone: the claim and the result around it still move the run on, and
/// the message is acked (nothing of it is left for the next controller).
#[tokio::test]
async fn events_sent_together_are_applied_in_order_and_a_bad_one_is_dead_lettered_alone() {
    let mut h = Harness::start().await;
    let mut jobs = h.consume_default().await;
    let agent = AgentId::new("agent-batch").unwrap();
    let run_id = h.submit(PIPELINE, &[]).await;
    let make = next_job(&mut jobs).await;
    assert!(make.event_batches, "{make:?}");
    let claimed = Message::Claimed(Claimed {
        run_id: make.run_id.clone(),
        step: make.step.clone(),
        attempt: make.attempt,
        agent: agent.clone(),
    });
    let parts = [
        claimed.encode().unwrap(),
        b"not an envelope".to_vec(),
        finished_inline(&make, &agent, b"inline\n")
            .encode()
            .unwrap(),
    ];
    let events = Events {
        events: parts.into_iter().map(ByteBuf::from).collect(),
    };
    h.event(Message::Events(events)).await;

    let usejob = next_job(&mut jobs).await;
    assert_eq!(usejob.step.as_str(), "use");
    let run = h
        .wait_run(&run_id, "make to have succeeded", |d| {
            d["steps"][0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(
        run["steps"][0]["attempts"][0]["agent"], "agent-batch",
        "{run}"
    );
    h.json_until("/api/v1/queues", "a dead letter", |q| {
        (q["dead_letters"] == 1).then_some(())
    })
    .await;
    let metrics = h.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("drover_dead_letters_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
    let dead = h.broker.names().dead();
    let mut letters = h.broker.consume(&dead, 10).await.unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(10), letters.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(letter.payload(), b"not an envelope", "only the bad event");
    letters.close().await;
    h.stop_controller().await;
    let events_queue = h.broker.names().events();
    let left = h.broker.queue_stats(&events_queue).await.unwrap().unwrap();
    assert_eq!(left.messages, 0, "the events message was acked");
    jobs.close().await;
    h.cleanup().await;
}
