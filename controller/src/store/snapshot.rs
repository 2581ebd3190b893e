//! Snapshots of the journaled store on the RabbitMQ stream `<ns>.snapshot`, so that a replay
//! loads the latest one and reads only the journal written after it, not all of its history.
//!
//! A snapshot is every record of every tree but `meta`, in messages ("chunks") of up to 8 MiB
//! of keys and values, each named-field msgpack `{v, kind: "chunk", id, index, count, seq,
//! epoch, offset, schema, written_by, ops}`; it counts only when chunks `0..count` of one `id`
//! are read in order. Applying its `ops` in order gives the state after batch `seq` of the
//! journal, and the journal is read on from offset `offset` (the snapshot's `snapshot` mark),
//! skipping batches up to `seq`, with `epoch` the highest so far.
//!
//! Taking one ([`run`], every `--state-snapshot-every` bytes of batches) does not stop writes:
//! it appends a `snapshot` mark to the journal between two batches and from then on keeps a copy
//! of every batch appended; it then reads the trees as they are (writes go on meanwhile, so the
//! reading is no single point in time); then, under the batch lock again, it appends what is
//! pending, so every write the reading can have seen is in a confirmed batch, and stops
//! copying. The snapshot is the trees as read followed by the copied writes: replaying those
//! after the reading leaves each key as the last batch up to `seq` left it, whatever the reading
//! saw of it. Flushes wait only for two appends. Before it publishes, the controller reads the
//! journal from its last check to the snapshot's end to be sure no later controller took over
//! meanwhile (its state would then not be the journal's).

use super::journal::{Sink, batch_len, next_record};
use super::journaled::Op;
use super::{SCHEMA_VERSION, Store, StoreError, encode};
use drover_amqp::{Broker, JournalStart, Publisher, Target};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The chunk layout this binary writes; a reader refuses chunks of a later one.
pub const SNAPSHOT_VERSION: u32 = 1;

const CHUNK: &str = "chunk";
/// A reader's own mark: it reads the stream until it meets it, which marks the stream's end.
const PROBE: &str = "probe";

/// A chunk as read.
#[derive(Debug, Default, Deserialize)]
struct Chunk {
    v: u32,
    kind: String,
    id: String,
    #[serde(default)]
    index: u32,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    schema: u32,
    #[serde(default)]
    written_by: String,
    #[serde(default)]
    ops: Vec<Op>,
}

/// A chunk as written: the same fields, its writes borrowed.
#[derive(Debug, Serialize)]
struct ChunkOut<'a> {
    v: u32,
    kind: &'a str,
    id: &'a str,
    index: u32,
    count: u32,
    seq: u64,
    epoch: u64,
    offset: u64,
    schema: u32,
    written_by: &'a str,
    ops: &'a [Op],
}

impl<'a> ChunkOut<'a> {
    fn new(kind: &'a str, id: &'a str) -> Self {
        Self {
            v: SNAPSHOT_VERSION,
            kind,
            id,
            index: 0,
            count: 0,
            seq: 0,
            epoch: 0,
            offset: 0,
            schema: SCHEMA_VERSION,
            written_by: env!("CARGO_PKG_VERSION"),
            ops: &[],
        }
    }
}

/// A complete snapshot, read back.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub id: String,
    pub seq: u64,
    pub epoch: u64,
    pub offset: u64,
    pub ops: Vec<Op>,
}

/// What [`take`] published.
#[derive(Debug)]
pub struct Taken {
    pub id: String,
    /// The last batch it holds, and the journal offset of its mark.
    pub seq: u64,
    pub offset: u64,
    pub records: usize,
    pub chunks: usize,
    pub bytes: usize,
}

/// Takes a snapshot whenever the journal has grown by `--state-snapshot-every` bytes since the
/// last one began, until `shutdown`; a failed one is logged and the next tried after as many
/// bytes again; a deposed controller takes no more.
pub async fn run(store: Store, broker: Broker, shutdown: CancellationToken) {
    let Some(sink) = store.journal.get() else {
        return;
    };
    if sink.snapshot_every() == 0 {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sink.snapshot_wanted.notified() => {}
        }
        let began = Instant::now();
        let taken = tokio::select! {
            () = shutdown.cancelled() => return,
            taken = take(&store, sink, &broker) => taken,
        };
        match taken {
            Ok(t) => tracing::info!(
                "state snapshot {} to {}: {} record(s) in {} chunk(s), {} bytes, up to batch \
                 {} (journal offset {}), in {:.2?}",
                t.id,
                broker.names().snapshot(),
                t.records,
                t.chunks,
                t.bytes,
                t.seq,
                t.offset,
                began.elapsed()
            ),
            Err(e @ StoreError::Deposed { .. }) => {
                tracing::warn!("{e}; this controller takes no more snapshots");
                return;
            }
            Err(e) => tracing::warn!(
                "the state snapshot failed ({e}); the next is tried after another {} bytes of \
                 journal",
                sink.snapshot_every()
            ),
        }
    }
}

/// Stops the capture of a snapshot that did not finish (also when its task is dropped).
struct Abandon<'a>(&'a Sink);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        self.0.abandon_snapshot();
    }
}

/// Takes one snapshot (see the module doc) and publishes it.
pub(super) async fn take(store: &Store, sink: &Sink, broker: &Broker) -> Result<Taken, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let end = uuid::Uuid::new_v4().to_string();
    sink.begin_snapshot(&id).await?;
    let _abandon = Abandon(sink);
    let db = store.db.clone();
    let mut ops = tokio::task::spawn_blocking(move || read_trees(&db))
        .await
        .map_err(|e| StoreError::Encode {
            what: "state snapshot",
            error: e.to_string(),
        })??;
    let (seq, copied) = sink.end_snapshot(&store.recorder, &end).await?;
    ops.extend(copied);
    let offset = sink.check_marks(broker, &id, &end).await?;
    let mut ranges = Vec::new();
    let mut from = 0;
    while from < ops.len() || ranges.is_empty() {
        let len = batch_len(&ops[from..]);
        ranges.push(from..from + len);
        from += len;
    }
    let count = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
    let mut bytes = 0;
    for (index, range) in ranges.iter().enumerate() {
        let mut chunk = ChunkOut::new(CHUNK, &id);
        chunk.index = u32::try_from(index).unwrap_or(u32::MAX);
        chunk.count = count;
        chunk.seq = seq;
        chunk.epoch = sink.epoch();
        chunk.offset = offset;
        chunk.ops = &ops[range.clone()];
        let encoded = encode("state snapshot chunk", &chunk)?;
        bytes += encoded.len();
        sink.publisher()
            .publish_raw(&Target::Snapshot, &encoded)
            .await
            .map_err(StoreError::Journal)?;
    }
    if bytes as u64 > drover_amqp::SNAPSHOT_MAX_BYTES / 3 {
        tracing::warn!(
            "the state snapshot {id} takes {bytes} bytes, more than a third of what {} keeps \
             ({} bytes): it may keep fewer than three snapshots",
            broker.names().snapshot(),
            drover_amqp::SNAPSHOT_MAX_BYTES
        );
    }
    Ok(Taken {
        id,
        seq,
        offset,
        records: ops.len(),
        chunks: ranges.len(),
        bytes,
    })
}

/// Every record of every tree but `meta`, as writes.
fn read_trees(db: &sled::Db) -> Result<Vec<Op>, StoreError> {
    let mut ops = Vec::new();
    for name in super::journal::data_trees(db) {
        for item in db.open_tree(&name)?.iter() {
            let (key, value) = item?;
            ops.push(Op {
                tree: name.clone(),
                key: key.to_vec(),
                value: Some(value.to_vec()),
            });
        }
    }
    Ok(ops)
}

/// The chunks of one snapshot read so far, in order.
struct Partial {
    first: Chunk,
    next: u32,
}

/// The latest complete snapshot in the snapshot stream (declared with the journal), if any:
/// appends a probe and reads the stream from its first record to it.
pub(super) async fn latest(
    broker: &Broker,
    publisher: &Publisher,
) -> Result<Option<Snapshot>, StoreError> {
    let probe = uuid::Uuid::new_v4().to_string();
    publisher
        .publish_raw(
            &Target::Snapshot,
            &encode("snapshot probe", &ChunkOut::new(PROBE, &probe))?,
        )
        .await
        .map_err(StoreError::Journal)?;
    let mut reader = broker
        .read_snapshots(JournalStart::First)
        .await
        .map_err(StoreError::Journal)?;
    let read = async {
        let mut best = None;
        let mut partial: Option<Partial> = None;
        loop {
            let item = next_record(&mut reader).await?;
            let chunk: Chunk =
                rmp_serde::from_slice(&item.payload).map_err(|e| StoreError::Decode {
                    what: "state snapshot",
                    key: format!("offset {}", item.offset),
                    error: e.to_string(),
                })?;
            if chunk.v > SNAPSHOT_VERSION || chunk.schema > SCHEMA_VERSION {
                return Err(StoreError::JournalTooNew {
                    offset: item.offset,
                    v: chunk.v,
                    schema: chunk.schema,
                    written_by: chunk.written_by,
                });
            }
            match chunk.kind.as_str() {
                PROBE if chunk.id == probe => return Ok(best),
                CHUNK => {
                    if let Some(done) = gather(&mut partial, chunk) {
                        best = Some(done);
                    }
                }
                _ => {}
            }
        }
    }
    .await;
    reader.close().await;
    read
}

/// Adds `chunk` to the snapshot being read; returns it once complete. A first chunk begins a
/// new one, dropping an incomplete one (its writer stopped before its last chunk); a chunk of
/// another snapshot, or out of order, is ignored.
fn gather(partial: &mut Option<Partial>, chunk: Chunk) -> Option<Snapshot> {
    if chunk.index == 0 {
        if let Some(dropped) = partial.take() {
            tracing::warn!(
                "the state snapshot {} has {} of its {} chunk(s): ignored",
                dropped.first.id,
                dropped.next,
                dropped.first.count
            );
        }
        *partial = Some(Partial {
            first: chunk,
            next: 1,
        });
    } else {
        match partial.as_mut() {
            Some(p) if p.first.id == chunk.id && p.next == chunk.index => {
                p.first.ops.extend(chunk.ops);
                p.next += 1;
            }
            _ => {
                tracing::warn!(
                    "state snapshot {} chunk {} out of order: ignored",
                    chunk.id,
                    chunk.index
                );
                return None;
            }
        }
    }
    if partial.as_ref().is_some_and(|p| p.next >= p.first.count) {
        let done = partial.take()?.first;
        return Some(Snapshot {
            id: done.id,
            seq: done.seq,
            epoch: done.epoch,
            offset: done.offset,
            ops: done.ops,
        });
    }
    None
}

#[cfg(test)]
mod tests;
