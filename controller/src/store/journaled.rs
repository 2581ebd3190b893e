//! sled trees whose every write is also recorded for the state journal ([`super::journal`]):
//! the one place the store's writes pass through, so nothing written escapes the journal.
//!
//! [`Tree`] reads like the `sled::Tree` it wraps (it derefs to it) but shadows every write the
//! store uses (`insert`, `remove`, `compare_and_swap`, a batch, `clear`): each is applied to
//! sled and, while the journal is on, appended to the pending batch under one lock, so the
//! journal sees the writes of one key in the order sled applied them. Write only through these
//! methods; a sled write method reached through the deref would bypass the journal.

use serde::{Deserialize, Serialize};
use sled::IVec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Key of the `meta` tree present while sled holds writes not yet in the journal.
pub(super) const DIRTY_KEY: &str = "journal_dirty";

/// One write: `value` to `key` of `tree`, or its removal (`value` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Op {
    pub tree: String,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// The writes made since the last batch went to the journal.
pub(super) struct Recorder {
    on: AtomicBool,
    pending: Mutex<Vec<Op>>,
    /// Holds [`DIRTY_KEY`] while `pending` (or a batch being published) is not empty.
    meta: sled::Tree,
}

impl Recorder {
    pub fn new(meta: sled::Tree) -> Self {
        Self {
            on: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            meta,
        }
    }

    /// Records every write from now on.
    pub fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `write` to sled and records `ops` when it succeeded and the journal is on. The
    /// dirty mark goes into sled before the first write it covers.
    fn write<T>(
        &self,
        write: impl FnOnce() -> sled::Result<T>,
        ops: impl FnOnce(&T) -> Vec<Op>,
    ) -> sled::Result<T> {
        if !self.on.load(Ordering::SeqCst) {
            return write();
        }
        let mut pending = self.lock();
        if pending.is_empty() {
            self.meta.insert(DIRTY_KEY, &[])?;
        }
        let done = write()?;
        pending.extend(ops(&done));
        Ok(done)
    }

    /// Takes the pending writes, to be published as one batch.
    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back a batch that could not be published, ahead of what was written since.
    pub fn restore(&self, mut batch: Vec<Op>) {
        let mut pending = self.lock();
        batch.append(&mut pending);
        *pending = batch;
    }

    /// After a batch was confirmed: writes `journal_state` into `meta`, and drops the dirty
    /// mark when nothing was written meanwhile.
    pub fn published(&self, journal_state: &[(&str, Vec<u8>)]) -> sled::Result<()> {
        let pending = self.lock();
        for (key, value) in journal_state {
            self.meta.insert(*key, value.as_slice())?;
        }
        if pending.is_empty() {
            self.meta.remove(DIRTY_KEY)?;
        }
        Ok(())
    }
}

/// A sled tree whose writes are recorded (see the module doc).
#[derive(Clone)]
pub(super) struct Tree {
    tree: sled::Tree,
    name: Arc<str>,
    recorder: Arc<Recorder>,
}

impl std::ops::Deref for Tree {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.tree
    }
}

impl Tree {
    pub fn open(db: &sled::Db, name: &str, recorder: &Arc<Recorder>) -> sled::Result<Self> {
        Ok(Self {
            tree: db.open_tree(name)?,
            name: name.into(),
            recorder: recorder.clone(),
        })
    }

    fn op(&self, key: &[u8], value: Option<&[u8]>) -> Op {
        Op {
            tree: self.name.to_string(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<IVec>) -> sled::Result<()> {
        let (key, value) = (key.as_ref(), value.into());
        self.recorder.write(
            || self.tree.insert(key, value.clone()),
            |_| vec![self.op(key, Some(&value))],
        )?;
        Ok(())
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> sled::Result<()> {
        let key = key.as_ref();
        self.recorder
            .write(|| self.tree.remove(key), |_| vec![self.op(key, None)])?;
        Ok(())
    }

    /// Sets `key` to `new` if it holds `old` (`None`: absent); `Err(current)` otherwise.
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        let key = key.as_ref();
        self.recorder.write(
            || self.tree.compare_and_swap(key, old, Some(new.as_slice())),
            |swapped| match swapped {
                Ok(()) => vec![self.op(key, Some(&new))],
                Err(_) => Vec::new(),
            },
        )
    }

    /// Inserts every `(key, value)` at once.
    pub fn insert_all(&self, writes: Vec<(Vec<u8>, Vec<u8>)>) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in &writes {
            batch.insert(key.as_slice(), value.as_slice());
        }
        self.recorder.write(
            || self.tree.apply_batch(batch),
            |_| writes.iter().map(|(k, v)| self.op(k, Some(v))).collect(),
        )
    }

    /// Removes every key.
    pub fn clear(&self) -> sled::Result<()> {
        for key in self.tree.iter().keys() {
            self.remove(key?)?;
        }
        Ok(())
    }
}
