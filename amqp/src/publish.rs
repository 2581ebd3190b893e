//! Publishing with publisher confirms and `mandatory`: an unroutable message is an error, and a
//! publish whose confirm is lost with the connection, refused, or never comes is sent again on a
//! new channel.

use super::signing::{JobSigner, SIGNATURE_HEADER};
use super::{AmqpError, Broker, REASON_HEADER, SOURCE_HEADER};
use drover_protocol::message::Message;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a publish keeps trying while the broker is unreachable before it reports an error.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);

/// How long one publish waits for its confirm on an open channel before it gives that channel
/// up and sends the message again on a new one. RabbitMQ 3.10 can leave a channel's publishes to
/// a quorum queue unconfirmed for good after the queue's leader is lost: the channel's queue
/// client does not send again a publish a member refused as not the leader when the refusal names
/// no leader or the one it knew already, and once one publish of the channel is missing, the
/// queue answers each later one `not_enqueued` (out of sequence), which the channel neither
/// confirms nor refuses. A new channel starts a new sequence.
pub const CONFIRM_PATIENCE: Duration = Duration::from_secs(10);

/// Where a message goes: each role's messages through that role's exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The services queue, through the submit exchange (submitters).
    Submit,
    /// A job queue by its broker name, through the jobs exchange (the controller).
    Job(String),
    /// The events queue, through the events exchange (agents).
    Events,
    /// The dead-letter queue, through the dead-letter exchange (the controller and agents).
    Dead,
    /// The namespace's control exchange with a routing key (the controller).
    Control(String),
    /// The controller's state journal (a stream), through the journal exchange.
    Journal,
    /// Snapshots of the controller's journaled state (a stream), through its exchange.
    Snapshot,
    /// The leader queue (the active controller's URL for standbys), through its exchange.
    Leader,
    /// A broker queue by its full name, through the default exchange: what older clients did;
    /// drover itself no longer publishes this way (tests use it to act as such a client).
    Queue(String),
}

/// Publishes on one confirm-mode channel, replaced when it breaks; cheap to clone and safe to
/// share between tasks. Delivery is at least once: a message whose confirm was lost is sent again.
#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
    channel: Arc<tokio::sync::Mutex<Option<Channel>>>,
    signer: Option<Arc<JobSigner>>,
}

impl Publisher {
    pub(super) fn new(broker: Broker) -> Self {
        Self {
            broker,
            channel: Arc::new(tokio::sync::Mutex::new(None)),
            signer: None,
        }
    }

    /// Signs every message published to [`Target::Job`] from now on (see [`crate::signing`]).
    pub fn sign_jobs(&mut self, signer: Arc<JobSigner>) {
        self.signer = Some(signer);
    }

    /// The open channel, or a new one (reconnecting to the broker if needed).
    pub(super) async fn open(&self) -> Result<Channel, AmqpError> {
        let mut slot = self.channel.lock().await;
        if let Some(ch) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.broker.confirm_channel().await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Drops `ch` as the publishing channel, so the next publish opens a new one. After a quorum
    /// queue's leader is lost, RabbitMQ 3.10 was seen to refuse every later publish on a channel
    /// that had published to it while a new channel's publishes were confirmed, and it can leave
    /// a publish unconfirmed for good (see [`CONFIRM_PATIENCE`]).
    async fn forget(&self, ch: &Channel) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|c| c.id() == ch.id()) {
            *slot = None;
            let old = ch.clone();
            tokio::spawn(async move {
                let _ = old
                    .close(200, "reopened after a negative confirm".into())
                    .await;
            });
        }
    }

    /// Publishes a message persistently and waits until the broker has confirmed it.
    pub async fn publish(&self, target: &Target, msg: &Message) -> Result<(), AmqpError> {
        self.publish_with_priority(target, msg, 0).await
    }

    /// Publishes a message with a priority (0..=[`super::MAX_PRIORITY`]).
    pub async fn publish_with_priority(
        &self,
        target: &Target,
        msg: &Message,
        priority: u8,
    ) -> Result<(), AmqpError> {
        self.publish_noting_sent(target, msg, priority, &|| {})
            .await
    }

    /// [`Publisher::publish_with_priority`], calling `sent` each time the message has been
    /// handed to a channel, before its confirm: a message published on this publisher after
    /// that reaches the broker after it unless the first one has to be sent again.
    pub async fn publish_noting_sent(
        &self,
        target: &Target,
        msg: &Message,
        priority: u8,
        sent: &(dyn Fn() + Send + Sync),
    ) -> Result<(), AmqpError> {
        let body = msg.encode()?;
        let limit = self.broker.max_message_size();
        if body.len() > limit {
            return Err(AmqpError::TooLarge {
                kind: msg.kind(),
                size: body.len(),
                limit,
            });
        }
        self.publish_bytes(target, &body, FieldTable::default(), priority, sent)
            .await
    }

    /// Publishes bytes that are not a drover message: journal records, and tests' garbage.
    pub async fn publish_raw(&self, target: &Target, payload: &[u8]) -> Result<(), AmqpError> {
        self.publish_bytes(target, payload, FieldTable::default(), 0, &|| {})
            .await
    }

    /// Puts a message that could not be handled on the dead-letter queue, with the reason.
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        source_queue: &str,
        reason: &str,
    ) -> Result<(), AmqpError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        headers.insert(
            SOURCE_HEADER.into(),
            AMQPValue::LongString(source_queue.into()),
        );
        self.publish_bytes(&Target::Dead, payload, headers, 0, &|| {})
            .await
    }

    /// Publishes, retrying on a new channel (and connection) for up to [`PUBLISH_PATIENCE`]
    /// when the broker is unreachable, refuses the message or does not confirm it in time; an
    /// unroutable message or a soft error (a missing exchange) is not retried.
    async fn publish_bytes(
        &self,
        target: &Target,
        payload: &[u8],
        mut headers: FieldTable,
        priority: u8,
        sent: &(dyn Fn() + Send + Sync),
    ) -> Result<(), AmqpError> {
        if let (Target::Job(_), Some(signer)) = (target, &self.signer) {
            headers.insert(
                SIGNATURE_HEADER.into(),
                AMQPValue::LongString(signer.sign(payload).into()),
            );
        }
        let deadline = Instant::now() + PUBLISH_PATIENCE;
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match self.open().await {
                Ok(ch) => {
                    let result = self
                        .publish_on(&ch, target, payload, headers.clone(), priority, sent)
                        .await;
                    if matches!(
                        result,
                        Err(AmqpError::Nacked(_) | AmqpError::Unconfirmed(_))
                    ) {
                        self.forget(&ch).await;
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if retryable(&e) && Instant::now() + delay < deadline => {
                    tracing::warn!("publish failed: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        target: &Target,
        payload: &[u8],
        headers: FieldTable,
        priority: u8,
        sent: &(dyn Fn() + Send + Sync),
    ) -> Result<(), AmqpError> {
        let names = self.broker.names();
        let (exchange, routing_key) = match target {
            Target::Submit => (names.submit_exchange(), names.services()),
            Target::Job(q) => (names.jobs_exchange(), q.clone()),
            Target::Events => (names.events_exchange(), names.events()),
            Target::Dead => (names.dead_exchange(), names.dead()),
            Target::Control(key) => (names.control_exchange(), key.clone()),
            Target::Journal => (names.journal(), names.journal()),
            Target::Snapshot => (names.snapshot(), names.snapshot()),
            Target::Leader => (names.leader(), names.leader()),
            Target::Queue(q) => (String::new(), q.clone()),
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/msgpack".into())
            .with_priority(priority)
            .with_headers(headers);
        let confirmed = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    props,
                )
                .await?;
            sent();
            confirm.await
        };
        let confirm = match tokio::time::timeout(CONFIRM_PATIENCE, confirmed).await {
            Ok(confirm) => confirm?,
            Err(_) => return Err(AmqpError::Unconfirmed(routing_key)),
        };
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(routing_key)),
            Confirmation::Nack(_) => Err(AmqpError::Nacked(routing_key)),
        }
    }
}

/// Whether a failure may pass with a new channel or connection: the broker was unreachable or
/// the connection or channel broke; not when the broker refused the publish itself (a soft
/// error such as a missing exchange).
fn retryable(e: &AmqpError) -> bool {
    match e {
        // The broker is reachable but this process's lost connection still holds its lock.
        AmqpError::Connect { .. } | AmqpError::LockHeld { .. } => true,
        // Tried again on a new channel (see `Publisher::forget`).
        AmqpError::Nacked(_) | AmqpError::Unconfirmed(_) => true,
        AmqpError::Broker(e) => !e.is_amqp_soft_error(),
        _ => false,
    }
}
