//! Every HTTP route of a token-protected controller on port 0 against the real broker, with the
//! test playing the agent: 401 without the token, 404 for what does not exist, the event streams
//! (run changes, the run view, a step's log) and the UI pages and assets.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

use base64::Engine as _;
use drover_controller::{Controller, ControllerConfig};
use drover_protocol::amqp::{Broker, Consumer, Target};
use drover_protocol::message::{
    AgentInfo, AttemptRef, Claimed, Finished, Heartbeat, LogChunk, Message, Outcome, StepJob,
    Submit, now_ms,
};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::{AgentId, Digest, Names, OutputName, QueueName, RunId};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TOKEN: &str = "t0ken-for-tests";
const PIPELINE: &str = r#"
[pipeline]
name = "api"
project = "http-tests"
[parameters]
who = { default = "world" }
[[step]]
name = "make"
command = ["sh", "-c", "echo ${pipeline.who} > out.txt"]
outputs = { out = "out.txt" }
cache = true
[[step]]
name = "use"
command = ["cat", "${make.out}"]
"#;

struct Server {
    names: Names,
    url: String,
    broker: Broker,
    http: reqwest::Client,
    controller: Controller,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let ns = format!("th{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let names = Names::new(&ns).unwrap();
        let broker =
            Broker::connect_with_retry(AMQP_URL, names.clone(), "test", Duration::from_secs(10))
                .await
                .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)");
        let dir = tempfile::tempdir().unwrap();
        let mut config = ControllerConfig::new(AMQP_URL, names.clone(), dir.path());
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.token = Some(TOKEN.into());
        let shutdown = CancellationToken::new();
        let controller = Controller::start(config, shutdown.clone()).await.unwrap();
        Self {
            names,
            url: controller.url().to_string(),
            broker,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            controller,
            shutdown,
            _dir: dir,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn event(&self, msg: Message) {
        let publisher = self.broker.publisher().await.unwrap();
        publisher
            .publish(&Target::Queue(self.names.events()), &msg)
            .await
            .unwrap();
    }

    async fn submit(&self) -> RunId {
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec: PipelineSpec::from_toml(PIPELINE).unwrap(),
            params: BTreeMap::new(),
            submitted_by: Some("http test".into()),
        };
        let publisher = self.broker.publisher().await.unwrap();
        publisher
            .publish(
                &Target::Queue(self.names.services()),
                &Message::Submit(submit),
            )
            .await
            .unwrap();
        run_id
    }

    async fn jobs(&self) -> Consumer {
        let default = QueueName::new("default").unwrap();
        self.broker.declare_user_queue(&default).await.unwrap();
        self.broker
            .consume(&self.names.user_queue(&default), 10)
            .await
            .unwrap()
    }

    /// An open event stream.
    async fn stream(&self, path: &str) -> Events {
        let resp = self.get(path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        Events {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.controller.wait())
            .await
            .expect("the controller stops within 10 s")
            .unwrap();
        let default = QueueName::new("default").unwrap();
        let _ = self.broker.delete_namespace(&[default]).await;
        self.broker.close().await;
    }
}

/// Server-sent events as `(name, data)`, read from a streaming response.
struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    /// The next named event (keep-alive comments skipped), within 15 s.
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let field = |name: &str| {
                        block
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(str::to_string)
                    };
                    if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                        return (event, serde_json::from_str(&data).unwrap());
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("the stream ended").unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within 15 s")
    }

    /// Skips events until one named `name` satisfies `cond`.
    async fn until(&mut self, name: &str, cond: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await;
            if event == name && cond(&data) {
                return data;
            }
        }
    }
}

async fn next_job(consumer: &mut Consumer) -> StepJob {
    let incoming = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("a job within 15 s")
        .unwrap()
        .unwrap();
    incoming.ack().await.unwrap();
    match incoming.message.unwrap().1 {
        Message::StepJob(job) => job,
        other => panic!("expected a step job, got {other:?}"),
    }
}

fn agent_info(busy: u32) -> AgentInfo {
    AgentInfo {
        id: AgentId::new("http-agent").unwrap(),
        host: "here".into(),
        pid: 1,
        version: "0.1.0".into(),
        queues: vec![QueueName::new("default").unwrap()],
        slots: 2,
        busy,
        draining: false,
    }
}

#[tokio::test]
async fn every_route_needs_the_token_but_healthz() {
    let s = Server::start().await;
    let run = RunId::generate();
    let digest = Digest::of_bytes(b"x");
    let routes = [
        ("GET", "/metrics".to_string()),
        ("GET", "/api/v1/events".into()),
        ("GET", "/api/v1/runs".into()),
        ("GET", format!("/api/v1/runs/{run}")),
        ("GET", format!("/api/v1/runs/{run}/stream")),
        ("GET", format!("/api/v1/runs/{run}/console")),
        ("POST", format!("/api/v1/runs/{run}/abort")),
        ("GET", format!("/api/v1/runs/{run}/steps/a")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/log")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/log/stream")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/artifacts/x")),
        ("GET", format!("/api/v1/blobs/{digest}")),
        ("HEAD", format!("/api/v1/blobs/{digest}")),
        ("PUT", format!("/api/v1/blobs/{digest}")),
        ("GET", "/api/v1/agents".into()),
        ("GET", "/api/v1/queues".into()),
        ("GET", "/".into()),
        ("GET", format!("/runs/{run}")),
        ("GET", "/agents".into()),
        ("GET", "/queues".into()),
        ("GET", "/assets/app.css".into()),
        ("GET", "/no/such/route".into()),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", s.url);
        let method: reqwest::Method = method.parse().unwrap();
        let anonymous = s.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{method} {path}");
        let wrong = s
            .http
            .request(method.clone(), &url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{method} {path} wrong token");
    }
    // APIs answer 401 in JSON with a hint; pages offer a login form.
    let api = s.http.get(format!("{}/api/v1/runs", s.url)).send().await;
    let api = api.unwrap();
    assert_eq!(api.headers()["www-authenticate"], "Bearer realm=\"drover\"");
    let doc: Value = api.json().await.unwrap();
    assert!(
        doc["error"].as_str().unwrap().contains("DROVER_TOKEN"),
        "{doc}"
    );
    let page = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("name=\"token\""));

    let health = s.http.get(format!("{}/healthz", s.url)).send().await;
    assert_eq!(health.unwrap().status().as_u16(), 200);

    // A browser trades ?token= for a cookie and is sent back without the token in the URL.
    let login = s
        .http
        .get(format!("{}/runs/{run}?token={TOKEN}&x=1", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    assert_eq!(login.headers()["location"], format!("/runs/{run}?x=1"));
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie does not hold the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let with_cookie = s
        .http
        .get(format!("{}/api/v1/runs", s.url))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status().as_u16(), 200);
    // Programs may also put the token in the query of an API call.
    let query = s
        .http
        .get(format!("{}/api/v1/runs?token={TOKEN}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn an_open_api_is_refused_off_loopback() {
    let names = Names::new("never-used").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ControllerConfig::new(AMQP_URL, names, dir.path());
    config.http_addr = "0.0.0.0:0".parse().unwrap();
    let error = Controller::start(config, CancellationToken::new())
        .await
        .err()
        .expect("no token on 0.0.0.0 is refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("--token") && text.contains("--allow-unauthenticated"),
        "{text}"
    );
}

#[tokio::test]
async fn a_run_is_followed_live_and_every_endpoint_answers_or_404s() {
    let s = Server::start().await;
    let mut jobs = s.jobs().await;
    let mut changes = s.stream("/api/v1/events").await;
    assert_eq!(changes.next().await.0, "hello");
    let run_id = s.submit().await;
    changes
        .until("run", |d| d["run_id"] == run_id.as_str())
        .await;

    let make = next_job(&mut jobs).await;
    let mut run_stream = s.stream(&format!("/api/v1/runs/{run_id}/stream")).await;
    let first = run_stream.until("run", |_| true).await;
    assert_eq!(first["steps"][0]["status"], "queued", "{first}");
    let mut log = s
        .stream(&format!("/api/v1/runs/{run_id}/steps/make/log/stream"))
        .await;
    let agent = AgentId::new("http-agent").unwrap();
    s.event(Message::Claimed(Claimed {
        run_id: run_id.clone(),
        step: make.step.clone(),
        attempt: make.attempt,
        agent: agent.clone(),
    }))
    .await;
    let running = run_stream
        .until("run", |d| d["steps"][0]["status"] == "running")
        .await;
    assert_eq!(running["steps"][0]["attempts"][0]["agent"], "http-agent");
    s.event(Message::Heartbeat(Heartbeat {
        agent: agent_info(1),
        running: vec![AttemptRef {
            run_id: run_id.clone(),
            step: make.step.clone(),
            attempt: make.attempt,
        }],
    }))
    .await;

    // Raw bytes, a progress bar and invalid UTF-8 included, arrive as they are appended.
    let mut received = Vec::new();
    for (offset, data) in [(0u64, &b"10%\r50%\r"[..]), (8, &b"100%\n\xff end\n"[..])] {
        s.event(Message::Log(LogChunk {
            run_id: run_id.clone(),
            step: make.step.clone(),
            attempt: make.attempt,
            offset,
            data: data.to_vec(),
        }))
        .await;
        let chunk = log.until("log", |_| true).await;
        assert_eq!(chunk["attempt"], 1);
        assert_eq!(chunk["offset"], offset);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(chunk["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, data);
        received.extend(bytes);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let agents = loop {
        let (_, doc) = s.json("/api/v1/agents").await;
        if doc["agents"][0]["current_steps"][0]["step"] == "make" {
            break doc;
        }
        assert!(tokio::time::Instant::now() < deadline, "{doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        agents["agents"][0]["current_steps"][0]["run_id"],
        run_id.as_str()
    );

    let content = b"world\n";
    let digest = Digest::of_bytes(content);
    let put = s
        .request(reqwest::Method::PUT, &format!("/api/v1/blobs/{digest}"))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let head = s
        .request(reqwest::Method::HEAD, &format!("/api/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let artifact = drover_protocol::message::ArtifactRef {
        digest: digest.clone(),
        size: content.len() as u64,
        file_name: "out.txt".into(),
    };
    let finished = |job: &StepJob, outputs| {
        Message::Finished(Finished {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent.clone(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            outputs,
            message: None,
            started_at: now_ms(),
            ended_at: now_ms(),
        })
    };
    let out = OutputName::new("out").unwrap();
    s.event(finished(&make, BTreeMap::from([(out, artifact)])))
        .await;
    let end = log.until("end", |_| true).await;
    assert_eq!(
        (end["status"].as_str(), end["size"].as_u64()),
        (Some("succeeded"), Some(19))
    );
    assert_eq!(received, b"10%\r50%\r100%\n\xff end\n");

    let usejob = next_job(&mut jobs).await;
    s.event(finished(&usejob, BTreeMap::new())).await;
    let last = run_stream
        .until("run", |d| d["status"] == "succeeded")
        .await;
    assert_eq!(last["steps"][1]["status"], "succeeded", "{last}");
    assert_eq!(run_stream.next().await.0, "end");
    // A finished step's log stream replays everything, then ends.
    let mut replay = s
        .stream(&format!(
            "/api/v1/runs/{run_id}/steps/make/log/stream?attempt=1&offset=8"
        ))
        .await;
    let chunk = replay.until("log", |_| true).await;
    assert_eq!(chunk["offset"], 8);
    assert_eq!(replay.next().await.0, "end");

    // JSON views.
    let (status, step) = s.json(&format!("/api/v1/runs/{run_id}/steps/make")).await;
    assert_eq!(status, 200);
    assert_eq!(step["command"][2], "echo world > out.txt", "{step}");
    assert_eq!(step["cache_hit"], false);
    assert!(step["cache_key"].is_string(), "{step}");
    assert_eq!(step["outputs"]["out"]["digest"], digest.as_str());
    let (_, runs) = s
        .json("/api/v1/runs?status=succeeded&project=http-tests")
        .await;
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str(), "{runs}");
    assert_eq!(runs["runs"][0]["url"], format!("{}/runs/{run_id}", s.url));
    let (_, none) = s.json("/api/v1/runs?status=failed").await;
    assert_eq!(none["runs"].as_array().unwrap().len(), 0, "{none}");
    let console = s.get(&format!("/api/v1/runs/{run_id}/console")).await;
    let console = console.text().await.unwrap();
    for line in [
        "step make: attempt 1 claimed by agent http-agent",
        "step make: attempt 1 succeeded (exit code 0)",
        "run succeeded",
    ] {
        assert!(console.contains(line), "{line:?} in:\n{console}");
    }
    let (status, queues) = s.json("/api/v1/queues").await;
    assert_eq!(status, 200);
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "default"),
        "{queues}"
    );
    let artifact = s
        .get(&format!("/api/v1/runs/{run_id}/steps/make/artifacts/out"))
        .await;
    assert_eq!(artifact.bytes().await.unwrap().as_ref(), content);
    let log_bytes = s
        .get(&format!("/api/v1/runs/{run_id}/steps/make/log"))
        .await;
    assert_eq!(
        log_bytes.bytes().await.unwrap().as_ref(),
        received.as_slice()
    );
    let abort = s
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{run_id}/abort"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(abort.status().as_u16(), 202);

    let metrics = s.get("/metrics").await.text().await.unwrap();
    for family in [
        "drover_runs{status=\"succeeded\"} 1",
        "drover_steps{status=\"succeeded\"} 2",
        "drover_step_duration_seconds_count{outcome=\"succeeded\"} 2",
        "drover_dispatch_latency_seconds_count{queue=\"default\"} 2",
        "drover_agents{state=\"alive\"} 1",
        "drover_agent_slots 2",
        "drover_agent_busy_slots",
        "drover_dead_letter_queue_messages 0",
        "drover_amqp_reconnects_total 0",
    ] {
        assert!(metrics.contains(family), "{family} in:\n{metrics}");
    }

    // Pages and assets.
    for (path, needle) in [
        ("/".to_string(), "/assets/runs.js"),
        (format!("/runs/{run_id}"), "/assets/dag.js"),
        ("/agents".to_string(), "/assets/fleet.js"),
        ("/queues".to_string(), "/assets/fleet.js"),
        ("/assets/run.js".to_string(), "EventSource"),
        ("/assets/app.css".to_string(), "--succeeded"),
    ] {
        let resp = s.get(&path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }

    // 404s name what is missing.
    let missing = RunId::generate();
    for path in [
        format!("/api/v1/runs/{missing}"),
        format!("/api/v1/runs/{missing}/stream"),
        format!("/api/v1/runs/{missing}/console"),
        format!("/api/v1/runs/{missing}/steps/make"),
        format!("/api/v1/runs/{missing}/steps/make/log"),
        format!("/api/v1/runs/{missing}/steps/make/log/stream"),
        format!("/api/v1/runs/{missing}/steps/make/artifacts/out"),
        format!("/api/v1/runs/{run_id}/steps/nope"),
        format!("/api/v1/runs/{run_id}/steps/nope/log"),
        format!("/api/v1/runs/{run_id}/steps/nope/log/stream"),
        format!("/api/v1/runs/{run_id}/steps/nope/artifacts/out"),
        format!("/api/v1/runs/{run_id}/steps/make/artifacts/nope"),
        format!("/api/v1/runs/{run_id}/steps/use/artifacts/out"),
        format!("/api/v1/blobs/{}", Digest::of_bytes(b"never stored")),
        "/api/v1/nothing".to_string(),
    ] {
        let (status, doc) = s.json(&path).await;
        assert_eq!(status, 404, "{path}: {doc}");
        assert!(doc["error"].is_string(), "{path}: {doc}");
    }
    for path in [format!("/runs/{missing}"), "/assets/nope.js".to_string()] {
        assert_eq!(s.get(&path).await.status().as_u16(), 404, "{path}");
    }
    for query in [
        format!("/api/v1/runs/{missing}/abort"),
        format!("/api/v1/runs/{run_id}/abort?step=nope"),
    ] {
        let resp = s
            .request(reqwest::Method::POST, &query)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{query}");
    }
    s.stop().await;
}
