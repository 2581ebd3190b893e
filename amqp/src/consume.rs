//! Consuming: each delivery arrives decoded, with ack / requeue / reject at hand, pushed by a
//! consumer with a prefetch ([`Consumer`]) or taken one at a time on request ([`Getter`]).

use super::signing::SIGNATURE_HEADER;
use super::{AmqpError, REASON_HEADER};
use drover_protocol::message::{DecodeError, EnvelopeMeta, Message};
use futures_util::StreamExt;
use lapin::Acker;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};

/// A consumer of one queue on its own channel.
pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    queue: String,
    max_size: usize,
}

/// One delivery: the decoded message (or why it could not be decoded) and its acknowledgement.
pub struct Incoming {
    pub message: Result<(EnvelopeMeta, Message), DecodeError>,
    pub redelivered: bool,
    /// How many messages the queue still held after this one, when it was taken with
    /// `basic.get` ([`Getter::get`]); `None` for a consumer's delivery.
    pub remaining: Option<u32>,
    /// The `x-drover-reason` header, set on dead letters.
    reason: Option<String>,
    /// The `x-drover-signature` header, set on signed jobs.
    signature: Option<String>,

    payload: Vec<u8>,
    queue: String,
    acker: Acker,
}

impl Consumer {
    pub(super) async fn start(
        channel: Channel,
        queue: &str,
        max_size: usize,
    ) -> Result<Self, AmqpError> {
        Self::start_with(channel, queue, max_size, BasicConsumeOptions::default()).await
    }

    /// A consumer the broker lets no other consumer of the queue beside (ACCESS_REFUSED).
    pub(super) async fn start_exclusive(
        channel: Channel,
        queue: &str,
        max_size: usize,
    ) -> Result<Self, AmqpError> {
        let exclusive = BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        };
        Self::start_with(channel, queue, max_size, exclusive).await
    }

    async fn start_with(
        channel: Channel,
        queue: &str,
        max_size: usize,
        options: BasicConsumeOptions,
    ) -> Result<Self, AmqpError> {
        let inner = channel
            .basic_consume(queue.into(), "".into(), options, FieldTable::default())
            .await?;
        Ok(Self {
            channel,
            inner,
            queue: queue.to_string(),
            max_size,
        })
    }

    /// The broker queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` when the consumer or its connection ended.
    pub async fn next(&mut self) -> Option<Result<Incoming, AmqpError>> {
        let delivery = match self.inner.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Ok(Incoming::decode(delivery, &self.queue, self.max_size)))
    }

    /// Stops deliveries; unacked ones stay with the channel until acked, requeued or closed.
    pub async fn cancel(&self) -> Result<(), AmqpError> {
        self.channel
            .basic_cancel(self.inner.tag(), BasicCancelOptions::default())
            .await?;
        Ok(())
    }

    /// Closes the channel: every unacked delivery goes back to its queue.
    pub async fn close(self) {
        close(&self.channel, "consumer closed").await;
    }
}

/// Takes one message at a time off a queue (`basic.get`) on a channel of its own: nothing is
/// sent ahead, so what comes next is the queue's head (its highest priority) at the moment of
/// asking, and nothing waits in this process that another consumer could have run.
pub struct Getter {
    channel: Channel,
    max_size: usize,
}

impl Getter {
    pub(super) fn new(channel: Channel, max_size: usize) -> Self {
        Self { channel, max_size }
    }

    /// The queue's next message, unacked; `None` when the queue is empty.
    pub async fn get(&self, queue: &str) -> Result<Option<Incoming>, AmqpError> {
        let got = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?;
        Ok(got.map(|m| {
            let mut incoming = Incoming::decode(m.delivery, queue, self.max_size);
            incoming.remaining = Some(m.message_count);
            incoming
        }))
    }

    /// Whether the channel is still usable (a broken one is replaced by a new getter).
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel: every unacked message taken through it goes back to its queue.
    pub async fn close(self) {
        close(&self.channel, "getter closed").await;
    }
}

/// How long a channel's close is waited for before it is let go.
const CLOSE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes `channel`, waiting at most [`CLOSE_PATIENCE`]: a close sent on a connection that has
/// just failed may never be answered, and whoever closes is on its way to opening another.
async fn close(channel: &Channel, why: &str) {
    if tokio::time::timeout(CLOSE_PATIENCE, channel.close(200, why.into()))
        .await
        .is_err()
    {
        tracing::warn!(
            "closing channel {} ({why}) took over {CLOSE_PATIENCE:?}; let go",
            channel.id()
        );
    }
}

impl Incoming {
    /// Decodes a delivery from `queue` (anything larger than `max_size` stays undecoded).
    fn decode(delivery: Delivery, queue: &str, max_size: usize) -> Self {
        let header = |name: &str| {
            delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(name))
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => Some(s.to_string()),
                    _ => None,
                })
        };
        let (reason, signature) = (header(REASON_HEADER), header(SIGNATURE_HEADER));
        let size = delivery.data.len();
        let message = if size > max_size {
            Err(DecodeError::TooLarge {
                size,
                limit: max_size,
            })
        } else {
            Message::decode(&delivery.data)
        };
        Incoming {
            message,
            redelivered: delivery.redelivered,
            remaining: None,
            reason,
            signature,
            payload: delivery.data,
            queue: queue.to_string(),
            acker: delivery.acker,
        }
    }

    /// The raw bytes as received.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The broker queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Why it was dead-lettered, when it was.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The job signature it carries, if any.
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref()
    }

    /// Done with it.
    pub async fn ack(&self) -> Result<(), AmqpError> {
        self.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Give it back to the queue for another consumer.
    pub async fn requeue(&self) -> Result<(), AmqpError> {
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Reject without requeue: the broker moves it to the dead-letter queue.
    pub async fn reject(&self) -> Result<(), AmqpError> {
        self.acker
            .reject(BasicRejectOptions { requeue: false })
            .await?;
        Ok(())
    }
}
