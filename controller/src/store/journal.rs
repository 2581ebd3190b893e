//! The state journal (`--state-journal stream`): every write of the store also goes, batched
//! per flush, to the RabbitMQ stream `<ns>.journal`, and [`Store::flush`] returns only once the
//! broker confirmed the batch, so state is durable off this machine before anything that
//! follows from it is published. At start the journal is replayed into sled (see [`attach`]),
//! which is then a cache of the journal.
//!
//! A record is named-field msgpack: `{v, kind, seq, schema, ops, nonce, written_by, epoch}`.
//! `kind` is `batch` (the writes `ops` of one flush, numbered by `seq`, 1, 2, ... across
//! controllers, values in the layout `schema`, written by a leader of `epoch`), `start` (a
//! controller's mark, with its random `nonce`, appended when it starts reading, so it knows
//! where the journal ended) or `leader` (appended once it has read to its start mark, with an
//! `epoch` one above the highest before it, and a `nonce` of its own). A replay ignores a batch
//! whose epoch is below the highest `leader` record before it: a deposed controller whose
//! journal connection outlived its lock cannot interleave its writes with its successor's.
//! Readers ignore unknown fields and kinds. A `snapshot` record (with the snapshot's id as
//! `nonce`) marks where a snapshot of the store begins ([`super::snapshot`]): a replay from that
//! snapshot reads the journal from it on.

use super::journaled::{DIRTY_KEY, Op, Recorder};
use super::{SCHEMA_VERSION, Store, StoreError, encode};
use drover_amqp::{Broker, Declared, JournalReader, JournalStart, Publisher, Target};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The record layout this binary writes; a reader refuses records of a later one.
pub const JOURNAL_VERSION: u32 = 1;

/// `meta` keys: the `seq` of the last batch sled holds (u64, big-endian), the stream offset of
/// this store's last `leader` record, where the next replay begins, and that record's epoch.
const SEQ_KEY: &str = "journal_seq";
const OFFSET_KEY: &str = "journal_offset";
const EPOCH_KEY: &str = "journal_epoch";

/// How long a replay waits for the next record before it gives up: its own start mark was
/// confirmed before it began reading, so only a broker in trouble keeps it waiting.
pub(super) const READ_PATIENCE: Duration = Duration::from_secs(60);

/// Bytes of keys and values a batch carries at most (unless one value is larger): the writes of
/// one flush beyond it go in further batches, far below RabbitMQ's largest message (128 MiB by
/// default). A store seeding the journal flushes after as many.
pub(super) const BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    v: u32,
    kind: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    schema: u32,
    #[serde(default)]
    ops: Vec<Op>,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    written_by: String,
    #[serde(default)]
    epoch: u64,
}

const BATCH: &str = "batch";
const START: &str = "start";
const LEADER: &str = "leader";
const SNAPSHOT: &str = "snapshot";

/// The fields of a record a snapshot's check reads (the rest, `ops` above all, is skipped).
#[derive(Debug, Default, Deserialize)]
struct Head {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    epoch: u64,
}

impl Record {
    fn new(kind: &str) -> Self {
        Self {
            v: JOURNAL_VERSION,
            kind: kind.to_string(),
            schema: SCHEMA_VERSION,
            written_by: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }
}

/// Appends the store's batches; one per store, set once the replay is done.
pub(super) struct Sink {
    publisher: Publisher,
    /// This controller's epoch, which every batch it appends carries.
    epoch: u64,
    /// The `seq` of the last batch appended; held while a batch is published, so batches reach
    /// the stream in the order of their numbers.
    seq: tokio::sync::Mutex<u64>,
    /// Journal bytes appended since the last snapshot began, and after how many to take one
    /// (0: never).
    written: AtomicU64,
    snapshot_every: u64,
    /// Woken once `snapshot_every` bytes were appended since the last snapshot began.
    pub snapshot_wanted: tokio::sync::Notify,
    /// While a snapshot is taken: every write appended since it began, in order.
    capture: std::sync::Mutex<Option<Vec<Op>>>,
    /// The journal offset up to which this controller has read every record since its own
    /// `leader` record (see [`Sink::check_marks`]).
    checked: tokio::sync::Mutex<u64>,
}

impl Sink {
    /// Publishes the writes pending in `recorder` as one batch and waits for its confirm; on a
    /// failure they stay pending for the next flush.
    pub async fn append(&self, recorder: &Recorder) -> Result<(), StoreError> {
        let mut seq = self.seq.lock().await;
        self.append_locked(&mut seq, recorder).await
    }

    async fn append_locked(&self, seq: &mut u64, recorder: &Recorder) -> Result<(), StoreError> {
        let mut ops = recorder.take();
        if ops.is_empty() {
            return Ok(());
        }
        while !ops.is_empty() {
            let rest = ops.split_off(batch_len(&ops));
            let mut record = Record::new(BATCH);
            record.seq = *seq + 1;
            record.epoch = self.epoch;
            record.ops = ops;
            let sent = match encode("journal batch", &record) {
                Ok(bytes) => self
                    .publisher
                    .publish_raw(&Target::Journal, &bytes)
                    .await
                    .map(|()| bytes.len())
                    .map_err(StoreError::Journal),
                Err(e) => Err(e),
            };
            let bytes = match sent {
                Ok(bytes) => bytes,
                Err(e) => {
                    let mut unsent = record.ops;
                    unsent.extend(rest);
                    recorder.restore(unsent);
                    return Err(e);
                }
            };
            *seq = record.seq;
            self.appended(bytes, &record.ops);
            ops = rest;
        }
        recorder.published(&[(SEQ_KEY, seq.to_be_bytes().to_vec())])?;
        Ok(())
    }

    /// Counts a confirmed batch towards the next snapshot, and keeps its writes for the one
    /// being taken.
    fn appended(&self, bytes: usize, ops: &[Op]) {
        if let Some(captured) = self.lock_capture().as_mut() {
            captured.extend_from_slice(ops);
        }
        let written = self.written.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        if self.snapshot_every > 0 && written >= self.snapshot_every {
            self.snapshot_wanted.notify_one();
        }
    }

    fn lock_capture(&self) -> std::sync::MutexGuard<'_, Option<Vec<Op>>> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins a snapshot at a flush boundary: appends its `snapshot` mark (between two
    /// batches, as the batch lock is held) and keeps every write appended from now on; returns
    /// the `seq` of the last batch before the mark.
    pub(super) async fn begin_snapshot(&self, id: &str) -> Result<u64, StoreError> {
        let seq = self.seq.lock().await;
        let mut mark = Record::new(SNAPSHOT);
        mark.nonce = id.to_string();
        mark.seq = *seq;
        mark.epoch = self.epoch;
        self.publisher
            .publish_raw(&Target::Journal, &encode("journal snapshot mark", &mark)?)
            .await
            .map_err(StoreError::Journal)?;
        *self.lock_capture() = Some(Vec::new());
        self.written.store(0, Ordering::SeqCst);
        Ok(*seq)
    }

    /// Ends the capture begun by [`Sink::begin_snapshot`]: appends what is pending (so every
    /// write made so far is in a confirmed batch), then a `start` record carrying `end`; returns
    /// the `seq` of the last batch and the writes appended since the snapshot began.
    pub(super) async fn end_snapshot(
        &self,
        recorder: &Recorder,
        end: &str,
    ) -> Result<(u64, Vec<Op>), StoreError> {
        let mut seq = self.seq.lock().await;
        self.append_locked(&mut seq, recorder).await?;
        let mut mark = Record::new(START);
        mark.nonce = end.to_string();
        self.publisher
            .publish_raw(&Target::Journal, &encode("journal start", &mark)?)
            .await
            .map_err(StoreError::Journal)?;
        let captured = self.lock_capture().take().unwrap_or_default();
        Ok((*seq, captured))
    }

    /// Stops keeping writes for a snapshot given up.
    pub(super) fn abandon_snapshot(&self) {
        *self.lock_capture() = None;
    }

    pub(super) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(super) fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    /// Reads the journal from where the last check ended (at first, this controller's `leader`
    /// record; or its first record, if retention dropped that) to the record carrying `end`,
    /// and returns the offset of the one carrying `start`. Refuses if a `leader` record of a
    /// later epoch is among them: this controller was deposed, and its state is no longer the
    /// journal's.
    pub(super) async fn check_marks(
        &self,
        broker: &Broker,
        start: &str,
        end: &str,
    ) -> Result<u64, StoreError> {
        let mut from = self.checked.lock().await;
        let mut reader = broker
            .read_journal(JournalStart::Offset(*from))
            .await
            .map_err(StoreError::Journal)?;
        let read = async {
            let mut start_at = None;
            let mut first = true;
            loop {
                let item = next_record(&mut reader).await?;
                if std::mem::take(&mut first) && item.offset != *from {
                    // Only a journal past its size bound since this controller's last check
                    // (4 GiB with snapshots every 64 MiB by default: they kept failing) gets
                    // here; the records dropped cannot be checked.
                    tracing::warn!(
                        "the journal dropped its records from offset {} to {} before this \
                         controller read them to check its snapshot; checking from {}",
                        *from,
                        item.offset,
                        item.offset
                    );
                }
                let head: Head = rmp_serde::from_slice(&item.payload).unwrap_or_default();
                if head.kind == LEADER && head.epoch > self.epoch {
                    return Err(StoreError::Deposed {
                        ours: self.epoch,
                        later: head.epoch,
                        offset: item.offset,
                    });
                }
                if head.nonce == start {
                    start_at = Some(item.offset);
                }
                if head.nonce == end {
                    return Ok((start_at, item.offset));
                }
            }
        }
        .await;
        reader.close().await;
        let (start_at, end_at) = read?;
        *from = end_at;
        start_at.ok_or(StoreError::JournalEnded)
    }
}

/// The next record of `reader`, waiting at most [`READ_PATIENCE`].
pub(super) async fn next_record(
    reader: &mut JournalReader,
) -> Result<drover_amqp::JournalRecord, StoreError> {
    let next = tokio::time::timeout(READ_PATIENCE, reader.next())
        .await
        .map_err(|_| StoreError::JournalStalled(READ_PATIENCE))?;
    let Some(next) = next else {
        return Err(StoreError::JournalEnded);
    };
    next.map_err(StoreError::Journal)
}

/// How many of `ops`, from the first, go into one batch: as many as fit in [`BATCH_BYTES`] of
/// keys and values, and at least one.
pub(super) fn batch_len(ops: &[Op]) -> usize {
    let mut bytes = 0;
    for (i, op) in ops.iter().enumerate() {
        bytes += op.key.len() + op.value.as_ref().map_or(0, Vec::len);
        if bytes > BATCH_BYTES && i > 0 {
            return i;
        }
    }
    ops.len()
}

/// What [`attach`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Batches applied to sled.
    pub batches: u64,
    /// Journal records read (batches, applied or not, and marks).
    pub records: u64,
    /// The snapshot the replay started from: the `seq` of the last batch it holds.
    pub snapshot: Option<u64>,
    /// The `seq` of the last batch in the journal (0: none).
    pub seq: u64,
    /// Records of an existing store that predates the journal, appended to an empty journal.
    pub seeded: u64,
    /// This controller's epoch, one above every earlier one in the journal.
    pub epoch: u64,
}

/// Declares the journal, brings sled up to its end and makes every later flush append to it
/// (and, every `snapshot_every` bytes of batches, wake [`super::snapshot::run`]):
///
/// - a store that holds nothing, or whose `meta` has the dirty mark (it may hold writes that
///   never reached the journal: the controller died between a write and its flush), is emptied
///   and rebuilt from the latest complete snapshot and the journal from that snapshot's mark
///   on, or from the journal's first record without a snapshot;
/// - a store that went through this before (`journal_seq` in `meta`, no dirty mark) reads on
///   from its last start mark, skipping the batches it holds (`seq` at most its own); if
///   retention dropped that mark, it is rebuilt as above;
/// - a store with data but no journal state (made before the journal was turned on) seeds an
///   empty journal with all its records, and is refused when the journal holds batches already.
///
/// Having read to its start mark, it appends a `leader` record with an epoch one above the
/// highest seen and reads on to it (applying what was appended meanwhile, as every later replay
/// will); its batches then carry that epoch. A replay whose first record is not the one it
/// starts from (retention dropped records it needs) is refused.
pub async fn attach(
    store: &Store,
    broker: &Broker,
    snapshot_every: u64,
) -> Result<Replayed, StoreError> {
    let declared = broker
        .declare_journal()
        .await
        .map_err(StoreError::Journal)?;
    for kept in declared {
        if let Declared::KeptExisting { stream, error } = kept {
            tracing::warn!(
                "the stream {stream} exists without this release's size bound ({error}): it is \
                 used as it is and grows without bound; bound it with a policy, e.g. \
                 `rabbitmqctl set_policy {stream}-bound '^{}$' '{{\"max-length-bytes\":{}}}' \
                 --apply-to queues` (see ARCHITECTURE.md, \"The state journal\")",
                regex_escape(&stream),
                drover_amqp::JOURNAL_MAX_BYTES
            );
        }
    }
    let meta = store.db.open_tree(super::version::META_TREE)?;
    let dirty = meta.contains_key(DIRTY_KEY)?;
    let seq = read_u64(&meta, SEQ_KEY)?;
    let has_data = has_data(&store.db)?;
    if dirty {
        tracing::warn!(
            "the state store may hold writes that never reached the journal {}: rebuilding it from the journal",
            broker.names().journal()
        );
        forget(store)?;
    }
    let seed = !dirty && has_data && seq.is_none();
    let resume = match read_u64(&meta, OFFSET_KEY)? {
        Some(offset) if !dirty => Some(offset),
        _ => None,
    };
    let publisher = broker.publisher().await.map_err(StoreError::Journal)?;
    let nonce = uuid::Uuid::new_v4().to_string();
    let mut mark = Record::new(START);
    mark.nonce = nonce.clone();
    publisher
        .publish_raw(&Target::Journal, &encode("journal start", &mark)?)
        .await
        .map_err(StoreError::Journal)?;
    let (mut start, mut at, mut snapshot) = match resume {
        Some(offset) => (
            JournalStart::Offset(offset),
            Position {
                applied: seq.unwrap_or(0),
                epoch: read_u64(&meta, EPOCH_KEY)?.unwrap_or(0),
                expect: Some(offset),
                ..Position::default()
            },
            None,
        ),
        None if seed => (JournalStart::First, Position::default(), None),
        None => rebuild(store, broker, &publisher).await?,
    };
    let leader_offset = loop {
        let mut reader = broker
            .read_journal(start)
            .await
            .map_err(StoreError::Journal)?;
        let read = lead(store, &publisher, &mut reader, &nonce, &mut at, seed).await;
        reader.close().await;
        match read {
            Err(StoreError::JournalGap {
                expected, found, ..
            }) if resume.is_some() && at.records == 0 => {
                tracing::warn!(
                    "the journal {} begins at offset {found}, after this store's offset \
                     {expected}: rebuilding the store from the latest snapshot",
                    broker.names().journal()
                );
                forget(store)?;
                (start, at, snapshot) = rebuild(store, broker, &publisher).await?;
            }
            read => break read?,
        }
    };
    let (batches, last) = (at.batches, at.applied);
    if seed && last > 0 {
        return Err(StoreError::JournalConflict {
            journal: broker.names().journal(),
        });
    }
    meta.insert(SEQ_KEY, &last.to_be_bytes())?;
    meta.insert(OFFSET_KEY, &leader_offset.to_be_bytes())?;
    meta.insert(EPOCH_KEY, &at.epoch.to_be_bytes())?;
    store.runs.reindex()?;
    store.db.flush_async().await?;
    let sink = Sink {
        publisher,
        epoch: at.epoch,
        seq: tokio::sync::Mutex::new(last),
        written: AtomicU64::new(0),
        snapshot_every,
        snapshot_wanted: tokio::sync::Notify::new(),
        capture: std::sync::Mutex::new(None),
        checked: tokio::sync::Mutex::new(leader_offset),
    };
    if store.journal.set(sink).is_err() {
        return Err(StoreError::JournalAttached);
    }
    store.recorder.start();
    let seeded = if seed { seed_from(store).await? } else { 0 };
    Ok(Replayed {
        batches,
        records: at.records,
        snapshot,
        seq: last,
        seeded,
        epoch: at.epoch,
    })
}

/// `name` as a regular expression matching itself.
fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// Empties every tree and drops the journal state from `meta`, before a rebuild.
fn forget(store: &Store) -> Result<(), StoreError> {
    let meta = store.db.open_tree(super::version::META_TREE)?;
    clear_data(&store.db)?;
    for key in [SEQ_KEY, OFFSET_KEY, EPOCH_KEY, DIRTY_KEY] {
        meta.remove(key)?;
    }
    Ok(())
}

/// Loads the latest complete snapshot into the (empty) store and says where the journal is
/// read from after it: the snapshot's mark, or the journal's first record without one.
async fn rebuild(
    store: &Store,
    broker: &Broker,
    publisher: &Publisher,
) -> Result<(JournalStart, Position, Option<u64>), StoreError> {
    let Some(snapshot) = super::snapshot::latest(broker, publisher).await? else {
        let at = Position {
            expect: Some(0),
            ..Position::default()
        };
        return Ok((JournalStart::First, at, None));
    };
    let mut trees = HashMap::new();
    apply(&store.db, &mut trees, &snapshot.ops)?;
    let meta = store.db.open_tree(super::version::META_TREE)?;
    meta.insert(SEQ_KEY, &snapshot.seq.to_be_bytes())?;
    tracing::info!(
        "loaded the state snapshot {} ({} record(s), up to batch {}, journal offset {})",
        snapshot.id,
        snapshot.ops.len(),
        snapshot.seq,
        snapshot.offset
    );
    let at = Position {
        applied: snapshot.seq,
        epoch: snapshot.epoch,
        expect: Some(snapshot.offset),
        ..Position::default()
    };
    Ok((
        JournalStart::Offset(snapshot.offset),
        at,
        Some(snapshot.seq),
    ))
}

/// Where a replay stands: the last batch applied, the highest epoch seen, batches applied,
/// records read, and the offset its first record must have (`None`: any).
#[derive(Debug, Default)]
struct Position {
    applied: u64,
    epoch: u64,
    batches: u64,
    records: u64,
    expect: Option<u64>,
}

/// Reads to the start mark `nonce`, appends a `leader` record one epoch above the highest seen
/// and reads on to it; returns its offset.
async fn lead(
    store: &Store,
    publisher: &Publisher,
    reader: &mut JournalReader,
    nonce: &str,
    at: &mut Position,
    dry: bool,
) -> Result<u64, StoreError> {
    replay(store, reader, nonce, at, dry).await?;
    let mut leader = Record::new(LEADER);
    leader.epoch = at.epoch + 1;
    leader.nonce = uuid::Uuid::new_v4().to_string();
    publisher
        .publish_raw(&Target::Journal, &encode("journal leader", &leader)?)
        .await
        .map_err(StoreError::Journal)?;
    replay(store, reader, &leader.nonce, at, dry).await
}

/// Applies the batches after `at.applied` of an epoch at least the highest before them, up to
/// the record that carries `nonce`; returns that record's offset. With `dry`, applies nothing.
async fn replay(
    store: &Store,
    reader: &mut JournalReader,
    nonce: &str,
    at: &mut Position,
    dry: bool,
) -> Result<u64, StoreError> {
    let meta = store.db.open_tree(super::version::META_TREE)?;
    let mut trees: HashMap<String, sled::Tree> = HashMap::new();
    loop {
        let item = next_record(reader).await?;
        if let Some(expected) = at.expect.take()
            && item.offset != expected
        {
            return Err(StoreError::JournalGap {
                expected,
                found: item.offset,
                after: if expected == 0 {
                    "no snapshot, so from the first record".into()
                } else {
                    format!("batch {}", at.applied)
                },
            });
        }
        at.records += 1;
        let record: Record =
            rmp_serde::from_slice(&item.payload).map_err(|e| StoreError::Decode {
                what: "journal",
                key: format!("offset {}", item.offset),
                error: e.to_string(),
            })?;
        if record.v > JOURNAL_VERSION || record.schema > SCHEMA_VERSION {
            return Err(StoreError::JournalTooNew {
                offset: item.offset,
                v: record.v,
                schema: record.schema,
                written_by: record.written_by,
            });
        }
        match record.kind.as_str() {
            LEADER => at.epoch = at.epoch.max(record.epoch),
            BATCH if record.epoch < at.epoch => tracing::warn!(
                "journal offset {}: ignored batch {} of epoch {}, written by a controller \
                 deposed by epoch {}",
                item.offset,
                record.seq,
                record.epoch,
                at.epoch
            ),
            BATCH if record.seq > at.applied => {
                if !dry {
                    apply(&store.db, &mut trees, &record.ops)?;
                    meta.insert(SEQ_KEY, &record.seq.to_be_bytes())?;
                }
                at.applied = record.seq;
                at.batches += 1;
            }
            _ => {}
        }
        if !record.nonce.is_empty() && record.nonce == nonce {
            return Ok(item.offset);
        }
    }
}

fn apply(
    db: &sled::Db,
    trees: &mut HashMap<String, sled::Tree>,
    ops: &[Op],
) -> Result<(), StoreError> {
    for op in ops {
        let tree = match trees.get(&op.tree) {
            Some(tree) => tree,
            None => {
                let opened = db.open_tree(&op.tree)?;
                trees.entry(op.tree.clone()).or_insert(opened)
            }
        };
        match &op.value {
            Some(value) => tree.insert(&op.key, value.as_slice())?,
            None => tree.remove(&op.key)?,
        };
    }
    Ok(())
}

/// Appends every record of a store made before the journal was turned on, in batches.
async fn seed_from(store: &Store) -> Result<u64, StoreError> {
    let mut records = 0;
    for name in data_trees(&store.db) {
        let tree = super::journaled::Tree::open(&store.db, &name, &store.recorder)?;
        let mut bytes = 0;
        for item in tree.iter() {
            let (key, value) = item?;
            bytes += key.len() + value.len();
            tree.insert(key, value)?;
            records += 1;
            if bytes >= BATCH_BYTES {
                store.flush().await?;
                bytes = 0;
            }
        }
    }
    store.flush().await?;
    tracing::info!("seeded the journal with the {records} record(s) of the existing state store");
    Ok(records)
}

fn read_u64(meta: &sled::Tree, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(meta
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
}

/// The names of the trees that hold state (all but `meta` and sled's default tree).
pub(super) fn data_trees(db: &sled::Db) -> Vec<String> {
    let default = db.name();
    db.tree_names()
        .into_iter()
        .filter(|n| *n != default && n.as_ref() != super::version::META_TREE.as_bytes())
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

fn has_data(db: &sled::Db) -> Result<bool, StoreError> {
    for name in data_trees(db) {
        if !db.open_tree(name)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn clear_data(db: &sled::Db) -> Result<(), StoreError> {
    for name in data_trees(db) {
        db.open_tree(name)?.clear()?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests;

/// The cost of the journal against sled alone (a measurement, run by name).
#[cfg(test)]
mod cost;
