//! A token-protected controller on port 0 in a fresh namespace, an HTTP client for it, and a
//! reader of its server-sent events; the test itself plays the agent over the broker.

use crate::support::{self, Running};
use drover_amqp::{Broker, Consumer, Target};
use drover_controller::ControllerConfig;
use drover_protocol::message::{AgentInfo, Message};
use drover_protocol::{AgentId, QueueName, RunId};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

pub const TOKEN: &str = "t0ken-for-tests";
pub const PIPELINE: &str = r#"
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

pub struct Server {
    pub url: String,
    pub broker: Broker,
    pub http: reqwest::Client,
    controller: Running,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A controller configured by `configure` after the defaults (token included).
    pub async fn start_with(configure: impl FnOnce(&mut ControllerConfig)) -> Self {
        let broker = support::connect("th").await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::config(broker.names(), dir.path());
        config.token = Some(TOKEN.into());
        configure(&mut config);
        let controller = Running::start(config).await;
        Self {
            url: controller.url(),
            broker,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            controller,
            _dir: dir,
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn event(&self, msg: Message) {
        let events = Target::Events;
        support::publish(&self.broker, events, &msg).await;
    }

    pub async fn submit(&self) -> RunId {
        support::submit(&self.broker, PIPELINE, &[], "http test").await
    }

    pub async fn jobs(&self) -> Consumer {
        support::consume_default(&self.broker).await
    }

    /// Consumes the `drivers` queue, as an agent serving drivers would.
    pub async fn driver_jobs(&self) -> Consumer {
        let drivers = QueueName::drivers();
        self.broker.declare_user_queue(&drivers).await.unwrap();
        self.broker
            .consume(&self.broker.names().user_queue(&drivers), 10)
            .await
            .unwrap()
    }

    /// A POST of `body` as JSON; the status and the answer's JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An open event stream.
    pub async fn stream(&self, path: &str) -> Events {
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

    pub async fn stop(self) {
        self.controller.stop().await;
        support::cleanup(self.broker, &["default", "drivers"]).await;
    }
}

/// Server-sent events as `(name, data)`, read from a streaming response.
pub struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    /// The next named event (keep-alive comments skipped), within 15 s.
    pub async fn next(&mut self) -> (String, Value) {
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

    /// The next named event if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// Skips events until one named `name` satisfies `cond`.
    pub async fn until(&mut self, name: &str, cond: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await;
            if event == name && cond(&data) {
                return data;
            }
        }
    }
}

pub fn agent_info(busy: u32) -> AgentInfo {
    AgentInfo {
        id: AgentId::new("http-agent").unwrap(),
        host: "here".into(),
        pid: 1,
        version: "0.1.0".into(),
        queues: vec![QueueName::new("default").unwrap()],
        slots: 2,
        busy,
        draining: false,
        cpus: 2,
        memory_mib: 4096,
        installer: None,
        warm_parents: Default::default(),
        refused_stale: 0,
        revoked_dropped: 0,
    }
}
