//! The controller's state journal on a RabbitMQ stream (`x-queue-type: stream`): declared with
//! a direct exchange of the same name in front of it, appended to through [`Target::Journal`]
//! with publisher confirms, and read from an offset with [`JournalReader`].
//!
//! [`Target::Journal`]: crate::Target::Journal

use super::{AmqpError, Broker};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Deliveries a journal reader holds unacked: a stream consumer needs a prefetch, and its
/// credit only comes back with acks.
const READ_PREFETCH: u16 = 256;

/// Where reading a journal starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStart {
    /// The first record the stream still holds.
    First,
    /// The record at this offset (or the first one after it that the stream holds).
    Offset(u64),
}

/// One record of the journal: its offset in the stream and its bytes.
#[derive(Debug, Clone)]
pub struct JournalRecord {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Reads the journal from a start offset on, record by record, in order; it never ends by
/// itself (a stream has no end, only records not written yet).
pub struct JournalReader {
    channel: Channel,
    inner: lapin::Consumer,
    queue: String,
}

impl Broker {
    /// Declares the namespace's journal stream and the exchange the controller appends through.
    pub async fn declare_journal(&self) -> Result<(), AmqpError> {
        let ch = self.channel().await?;
        let name = self.names().journal();
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        super::topology::declare_stream(&ch, &name, args).await?;
        super::topology::exchange(&ch, &name, ExchangeKind::Direct).await?;
        super::topology::bind(&ch, &name, &name).await?;
        let _ = ch.close(200, "journal declared".into()).await;
        Ok(())
    }

    /// Reads the journal (declared before) from `start`.
    pub async fn read_journal(&self, start: JournalStart) -> Result<JournalReader, AmqpError> {
        let ch = self.channel().await?;
        ch.basic_qos(READ_PREFETCH, BasicQosOptions::default())
            .await?;
        let mut args = FieldTable::default();
        let offset = match start {
            JournalStart::First => AMQPValue::LongString("first".into()),
            JournalStart::Offset(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        args.insert("x-stream-offset".into(), offset);
        let queue = self.names().journal();
        let inner = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        Ok(JournalReader {
            channel: ch,
            inner,
            queue,
        })
    }

    /// Deletes the namespace's journal stream and its exchange (tests, tenant removal); a
    /// missing one is fine.
    pub async fn delete_journal(&self) -> Result<(), AmqpError> {
        let name = self.names().journal();
        let ch = self.channel().await?;
        let _ = ch
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "deleted".into()).await;
        let ch = self.channel().await?;
        let _ = ch
            .exchange_delete(name.as_str().into(), Default::default())
            .await;
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }
}

impl JournalReader {
    /// The next record, waiting for it to be written; `None` once the channel is gone.
    pub async fn next(&mut self) -> Option<Result<JournalRecord, AmqpError>> {
        let delivery = match self.inner.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e.into())),
        };
        let offset = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let Some(offset) = offset.and_then(|v| as_offset(&v)) else {
            return Some(Err(AmqpError::NotAStream(self.queue.clone())));
        };
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            return Some(Err(e.into()));
        }
        Some(Ok(JournalRecord {
            offset,
            payload: delivery.data,
        }))
    }

    /// Stops reading.
    pub async fn close(self) {
        let _ = self.channel.close(200, "journal read".into()).await;
    }
}

/// The offset header's value, whatever integer type the broker chose.
fn as_offset(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}
