//! The controller's state journal and its snapshots on RabbitMQ streams (`x-queue-type:
//! stream`): each declared with a direct exchange of the same name in front of it and a bound
//! on its size, appended to through [`Target::Journal`] and [`Target::Snapshot`] with publisher
//! confirms, and read from an offset with [`JournalReader`].
//!
//! [`Target::Journal`]: crate::Target::Journal
//! [`Target::Snapshot`]: crate::Target::Snapshot

use super::{AmqpError, Broker};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Deliveries a journal reader holds unacked: a stream consumer needs a prefetch, and its
/// credit only comes back with acks.
const READ_PREFETCH: u16 = 256;

/// Bytes the journal stream keeps at most (`x-max-length-bytes`): RabbitMQ drops its oldest
/// segments beyond that. Snapshots are taken far more often (every
/// `--state-snapshot-every`, 64 MiB by default), so a replay starts well inside it.
pub const JOURNAL_MAX_BYTES: u64 = 4 << 30;

/// Bytes the snapshot stream keeps at most: the last few snapshots, as many as fit.
pub const SNAPSHOT_MAX_BYTES: u64 = 4 << 30;

/// Segment size of both streams (`x-stream-max-segment-size-bytes`): retention drops whole
/// segments, so a stream holds between its bound less one segment and its bound.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The size bounds of the journal and snapshot streams, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    pub journal: u64,
    pub snapshot: u64,
    pub segment: u64,
}

impl Default for StreamBounds {
    fn default() -> Self {
        Self {
            journal: JOURNAL_MAX_BYTES,
            snapshot: SNAPSHOT_MAX_BYTES,
            segment: SEGMENT_BYTES,
        }
    }
}

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

/// Reads a stream from a start offset on, record by record, in order; it never ends by itself
/// (a stream has no end, only records not written yet).
pub struct JournalReader {
    channel: Channel,
    inner: lapin::Consumer,
    queue: String,
}

/// How a stream's declaration went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// Declared (or found) with the size bounds of this release.
    Bounded,
    /// It existed with other arguments (declared by a release without bounds): it is used
    /// as it is, unbounded unless a policy bounds it.
    KeptExisting { stream: String, error: String },
}

impl Broker {
    /// Declares the namespace's journal and snapshot streams and the exchanges the controller
    /// appends through; says for each stream that existed with other arguments.
    pub async fn declare_journal(&self) -> Result<Vec<Declared>, AmqpError> {
        let names = self.names();
        let bounds = self.stream_bounds;
        let mut declared = Vec::new();
        for (name, max) in [
            (names.journal(), bounds.journal),
            (names.snapshot(), bounds.snapshot),
        ] {
            declared.push(self.declare_bounded_stream(&name, max).await?);
            let ch = self.channel().await?;
            super::topology::exchange(&ch, &name, ExchangeKind::Direct).await?;
            super::topology::bind(&ch, &name, &name).await?;
            let _ = ch.close(200, "stream declared".into()).await;
        }
        Ok(declared)
    }

    /// Declares the stream `name` bounded to `max` bytes; one that exists with other arguments
    /// (a redeclaration fails with 406 PRECONDITION_FAILED and closes the channel) is kept as it
    /// is, checked to exist on a new channel.
    async fn declare_bounded_stream(&self, name: &str, max: u64) -> Result<Declared, AmqpError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(max).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(self.stream_bounds.segment).unwrap_or(i64::MAX)),
        );
        let ch = self.channel().await?;
        let declared = match super::topology::declare_stream(&ch, name, args).await {
            Ok(()) => Declared::Bounded,
            Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
                let ch = self.channel().await?;
                ch.queue_declare(
                    name.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
                let _ = ch.close(200, "stream found".into()).await;
                Declared::KeptExisting {
                    stream: name.to_string(),
                    error: e.to_string(),
                }
            }
            Err(e) => return Err(e),
        };
        let _ = ch.close(200, "stream declared".into()).await;
        Ok(declared)
    }

    /// Reads the journal (declared before) from `start`.
    pub async fn read_journal(&self, start: JournalStart) -> Result<JournalReader, AmqpError> {
        self.read_stream(self.names().journal(), start).await
    }

    /// Reads the snapshot stream (declared with the journal) from `start`.
    pub async fn read_snapshots(&self, start: JournalStart) -> Result<JournalReader, AmqpError> {
        self.read_stream(self.names().snapshot(), start).await
    }

    async fn read_stream(
        &self,
        queue: String,
        start: JournalStart,
    ) -> Result<JournalReader, AmqpError> {
        let ch = self.channel().await?;
        ch.basic_qos(READ_PREFETCH, BasicQosOptions::default())
            .await?;
        let mut args = FieldTable::default();
        let offset = match start {
            JournalStart::First => AMQPValue::LongString("first".into()),
            JournalStart::Offset(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        args.insert("x-stream-offset".into(), offset);
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

    /// Deletes the namespace's journal and snapshot streams and their exchanges (tests, tenant
    /// removal); missing ones are fine.
    pub async fn delete_journal(&self) -> Result<(), AmqpError> {
        for name in [self.names().journal(), self.names().snapshot()] {
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
        }
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
