//! What the controller's integration tests share: a fresh namespace on the shared broker, the
//! real controller started in-process on port 0 and stopped, and the agent's side of the
//! protocol (jobs consumed, events published) played by the test.

#![allow(dead_code)] // each test binary uses its own part of this module

use drover_amqp::{Broker, Consumer, Target};
use drover_controller::{Controller, ControllerConfig};
use drover_protocol::message::{
    ArtifactRef, Finished, LogDelay, Message, Outcome, StepJob, Submit, now_ms,
};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::{AgentId, Names, OutputName, QueueName, RunId};
use drover_test_support::{Deadline, delete_namespace, fresh_namespace};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use drover_test_support::AMQP_URL;

/// How long a test waits for anything the controller does in response.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A wait of [`PATIENCE`] for `what`.
pub fn patience(what: &str) -> Deadline {
    Deadline::new(what, PATIENCE)
}

/// A connection to the shared broker in a fresh namespace `<prefix>...`.
pub async fn connect(prefix: &str) -> Broker {
    let names = Names::new(&fresh_namespace(prefix)).unwrap();
    Broker::connect_with_retry(AMQP_URL, names, "test", Duration::from_secs(10))
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)")
}

/// A controller for namespace `names` with its data in `dir`, on a free loopback port.
pub fn config(names: &Names, dir: &Path) -> ControllerConfig {
    let mut config = ControllerConfig::new(AMQP_URL, names.clone(), dir);
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config
}

/// `config` with its artifacts in `bucket` of `moto` (under the prefix `ctl`).
pub fn with_bucket(
    mut config: ControllerConfig,
    moto: &drover_storage::testing::Moto,
    bucket: &str,
) -> ControllerConfig {
    let location: drover_storage::S3Location = format!("s3://{bucket}/ctl").parse().unwrap();
    config.artifact_store =
        drover_storage::StoreLocation::S3(location.with_endpoint(Some(moto.endpoint())).unwrap());
    config.s3_settings = drover_storage::testing::CREDENTIALS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config
}

/// A controller running in this process until [`Running::stop`].
pub struct Running {
    pub controller: Controller,
    shutdown: CancellationToken,
}

impl Running {
    pub async fn start(config: ControllerConfig) -> Self {
        let shutdown = CancellationToken::new();
        let controller = Controller::start(config, shutdown.clone()).await.unwrap();
        Self {
            controller,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        self.controller.url().to_string()
    }

    /// Shuts it down and waits for it, at most 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.controller.wait())
            .await
            .expect("the controller stops within 10 s")
            .unwrap();
    }
}

pub async fn publish(broker: &Broker, target: Target, msg: &Message) {
    let publisher = broker.publisher().await.unwrap();
    publisher.publish(&target, msg).await.unwrap();
}

/// Publishes a `Submit` of `toml` with `params` to the services queue; returns its run id.
pub async fn submit(broker: &Broker, toml: &str, params: &[(&str, &str)], by: &str) -> RunId {
    let run_id = RunId::generate();
    let submit = Submit {
        run_id: run_id.clone(),
        spec: PipelineSpec::from_toml(toml).unwrap(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        submitted_by: Some(by.into()),
        external: false,
    };
    let services = Target::Submit;
    publish(broker, services, &Message::Submit(submit)).await;
    run_id
}

/// Declares and consumes the `default` user queue, as an agent serving it would.
pub async fn consume_default(broker: &Broker) -> Consumer {
    let default = QueueName::new("default").unwrap();
    broker.declare_user_queue(&default).await.unwrap();
    broker
        .consume(&broker.names().user_queue(&default), 10)
        .await
        .unwrap()
}

/// The next message on `consumer` within [`PATIENCE`], acked.
pub async fn next_message(consumer: &mut Consumer, what: &str) -> Message {
    let incoming = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("{what} within {PATIENCE:?}"))
        .unwrap()
        .unwrap();
    incoming.ack().await.unwrap();
    incoming.message.unwrap().1
}

pub async fn next_job(consumer: &mut Consumer) -> StepJob {
    match next_message(consumer, "a job").await {
        Message::StepJob(job) => job,
        other => panic!("expected a step job, got {other:?}"),
    }
}

/// `agent`'s report that `job` succeeded with `outputs`.
pub fn finished(
    job: &StepJob,
    agent: &AgentId,
    outputs: BTreeMap<OutputName, ArtifactRef>,
) -> Message {
    finished_late(job, agent, outputs, Vec::new())
}

/// As [`finished`], with the places where the attempt's log reached the broker late.
pub fn finished_late(
    job: &StepJob,
    agent: &AgentId,
    outputs: BTreeMap<OutputName, ArtifactRef>,
    log_delays: Vec<LogDelay>,
) -> Message {
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
        log_delays,
        start: None,
        log_size: None,
        inline: Default::default(),
    })
}

/// Deletes the broker's namespace with the user queues named, and closes the connection.
pub async fn cleanup(broker: Broker, user_queues: &[&str]) {
    let ns = broker.names().namespace().to_string();
    broker.close().await;
    delete_namespace(AMQP_URL, &ns, user_queues).await.unwrap();
}
