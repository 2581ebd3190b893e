//! Durable state in sled: runs ([`runs`]), the cache index and the agent registry, each record
//! named-field msgpack, under a layout version checked at open ([`version`], [`schema`]).
//!
//! The owning task writes every changed record and flushes before it publishes anything that
//! follows; the HTTP layer reads from here, so it only ever shows durable state. With the
//! journal on ([`journal`]), every write also goes to a RabbitMQ stream before the flush returns.

mod automation;
pub mod journal;
mod journaled;
mod outputs;
mod runs;
mod scalars;
pub mod schema;
pub mod snapshot;
mod submits;
mod tasks;
mod version;

#[cfg(test)]
mod compat;

pub use runs::{RunPage, RunQuery};
pub use scalars::ScalarsError;
pub use submits::Submitted;
pub use tasks::TaskRecord;
pub use version::SCHEMA_VERSION;

use crate::scheduler::{AgentRecord, CachedOutputs, RunRecord};
use drover_protocol::RunId;
use journaled::{Recorder, Tree};
use runs::RunTrees;
use schema::{Opened, SchemaError, open_versioned};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state store at {path}: {error}; is another controller using this data dir?"
    )]
    Open { path: String, error: sled::Error },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot encode a {what} record: {error}")]
    Encode { what: &'static str, error: String },
    #[error("cannot decode the {what} record {key:?}: {error}")]
    Decode {
        what: &'static str,
        key: String,
        error: String,
    },
    #[error(
        "the state store at {path} predates layout versions and its {what} record {key:?} does not decode ({error}), so this drover ({ours}) cannot take it over: move {path} aside (e.g. to {path}.old) to start with an empty store, or run the drover release that wrote it"
    )]
    Undecodable {
        path: String,
        what: &'static str,
        key: String,
        error: String,
        ours: &'static str,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot use the state journal: {0}")]
    Journal(#[source] drover_amqp::AmqpError),
    #[error(
        "the state store holds state made before the journal was turned on, and the journal \
         {journal} holds other state: move the data dir's state/ aside to take the journal's, \
         or delete the stream (`rabbitmqctl delete_queue {journal}`) to fill it from state/"
    )]
    JournalConflict { journal: String },
    #[error(
        "the state journal sent nothing for {0:?} while it was read to its end; is the broker \
         overloaded or the stream's leader down?"
    )]
    JournalStalled(std::time::Duration),
    #[error(
        "the journal record at offset {offset} was written by drover {written_by} (record \
         version {v}, layout {schema}), newer than this one ({ours}); run that release or newer",
        ours = env!("CARGO_PKG_VERSION")
    )]
    JournalTooNew {
        offset: u64,
        v: u32,
        schema: u32,
        written_by: String,
    },
    #[error("the broker closed the channel reading the state journal before its end; start again")]
    JournalEnded,
    #[error("the state journal is already attached to this store")]
    JournalAttached,
    #[error(
        "the state journal's first record is at offset {found}, but this replay must start at \
         offset {expected} (after {after}): the stream's retention dropped the records between, \
         and no snapshot covers them, so the state cannot be rebuilt from the journal. Start a \
         controller on a data dir that holds the state (with journal_seq in its meta), or, to \
         start over, delete the streams <ns>.journal and <ns>.snapshot, losing every run's \
         record"
    )]
    JournalGap {
        expected: u64,
        found: u64,
        after: String,
    },
    #[error(
        "a snapshot was not taken: the journal holds a leader record of epoch {later} (offset \
         {offset}), above this controller's {ours}, so another controller has taken over"
    )]
    Deposed { ours: u64, later: u64, offset: u64 },
}

/// The most memory sled's page cache holds (its default is 1 GiB). What the scheduler decides
/// on is in memory anyway; the cache serves the HTTP layer's reads, mostly of recent runs, and
/// a read it misses costs a read of the data dir (from the kernel's page cache when warm).
/// sled counts its pages' encoded size, so the memory it really holds is a multiple of this:
/// see ARCHITECTURE.md, "Memory".
const CACHE_BYTES: u64 = 4 << 20;

/// The sled database and its trees; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    runs: Arc<RunTrees>,
    cache: Tree,
    agents: Tree,
    /// Run id -> [`Submitted`], written once per run.
    submits: Tree,
    /// Name -> schedule, name -> trigger, and `trigger/upstream run` -> the run it fired.
    schedules: Tree,
    triggers: Tree,
    trigger_fired: Tree,
    /// Each step's reported scalars, a record per series.
    scalars: scalars::ScalarTree,
    /// Task id -> [`TaskRecord`].
    tasks: Tree,
    /// Digest -> the bytes of an output that came inside a result ([`outputs`]).
    small_outputs: Tree,
    /// Every write since the last flush, for the journal.
    recorder: Arc<Recorder>,
    /// Where flushes append, once [`journal::attach`] replayed the journal.
    journal: Arc<OnceLock<journal::Sink>>,
    /// The id of every run written, for live views; nobody listening is fine.
    run_changes: tokio::sync::broadcast::Sender<RunId>,
}

/// Everything loaded at start-up.
pub struct Loaded {
    pub runs: Vec<RunRecord>,
    pub cache: BTreeMap<String, CachedOutputs>,
    pub agents: Vec<AgentRecord>,
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode {
        what,
        error: e.to_string(),
    })
}

/// Decodes the record stored under `key` (as text, for messages).
fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Decode {
        what,
        key: key.to_string(),
        error: e.to_string(),
    })
}

fn decode_all<T: DeserializeOwned>(
    what: &'static str,
    tree: &sled::Tree,
) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|item| {
            let (k, v) = item?;
            decode(what, &String::from_utf8_lossy(&k), &v)
        })
        .collect()
}

impl Store {
    /// Opens (or creates) the store in `dir`, bringing its layout to [`SCHEMA_VERSION`]: an
    /// empty store is stamped, an older one migrated, a newer one refused.
    /// [`Store::open`] for tests that open a store just dropped: sled's background flusher
    /// holds the database's file lock for a moment after the last handle goes, so this waits
    /// up to 10 s for the lock; any other error is returned at once.
    #[cfg(test)]
    pub(crate) fn open_after_drop(dir: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open(dir) {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|error| StoreError::Open {
                path: path.clone(),
                error,
            })?;
        let recorder = Arc::new(Recorder::new(db.open_tree(version::META_TREE)?));
        let tree = |name: &str| Tree::open(&db, name, &recorder);
        let store = Self {
            runs: Arc::new(RunTrees::open(&db, &recorder)?),
            cache: tree("cache")?,
            agents: tree("agents")?,
            submits: tree(submits::SUBMITS_TREE)?,
            schedules: tree(automation::SCHEDULES_TREE)?,
            triggers: tree(automation::TRIGGERS_TREE)?,
            trigger_fired: tree(automation::TRIGGER_FIRED_TREE)?,
            scalars: scalars::ScalarTree::open(&db, &recorder)?,
            tasks: tree(tasks::TASKS_TREE)?,
            small_outputs: tree(outputs::SMALL_OUTPUTS_TREE)?,
            recorder: recorder.clone(),
            journal: Arc::new(OnceLock::new()),
            db,
            run_changes: tokio::sync::broadcast::channel(1024).0,
        };
        let layout = version::StateLayout {
            db: &store.db,
            runs: &store.runs,
            cache: &store.cache,
            agents: &store.agents,
            path,
        };
        match open_versioned(&layout, SCHEMA_VERSION)? {
            Opened::Current => {}
            Opened::Fresh => tracing::debug!(
                "new state store at {}, layout version {SCHEMA_VERSION}",
                layout.path
            ),
            Opened::Migrated { from: None } => tracing::info!(
                "state store at {}: every record of its unversioned layout decodes; stamped layout version {SCHEMA_VERSION}",
                layout.path
            ),
            Opened::Migrated { from: Some(v) } => tracing::info!(
                "state store at {}: migrated from layout version {v} to {SCHEMA_VERSION}",
                layout.path
            ),
        }
        let indexed = store.runs.reindex()?;
        if indexed > 0 {
            tracing::info!("indexed {indexed} run(s) by creation time");
        }
        Ok(store)
    }

    /// Every record, for the scheduler's state at start-up.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut loaded = self.load_unfinished()?;
        loaded.runs = {
            let mut all = self.runs.all_newest_first()?;
            all.reverse();
            all
        };
        Ok(loaded)
    }

    /// What the scheduler holds at start-up: the runs not yet ended (ended ones are read from
    /// the store when something asks about them), the cache index and the agents.
    pub fn load_unfinished(&self) -> Result<Loaded, StoreError> {
        let mut cache = BTreeMap::new();
        for item in self.cache.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let outputs = decode("cache", &key, &v)?;
            cache.insert(key, outputs);
        }
        Ok(Loaded {
            runs: self.runs.unfinished()?,
            cache,
            agents: decode_all("agent", &self.agents)?,
        })
    }

    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.runs.put(run)?;
        let _ = self.run_changes.send(run.run_id.clone());
        Ok(())
    }

    /// Writes a run of which only the steps at `changed` changed since it was last written
    /// (see [`crate::scheduler::Effects::steps`]).
    pub fn put_run_steps(
        &self,
        run: &RunRecord,
        changed: &std::collections::BTreeSet<usize>,
    ) -> Result<(), StoreError> {
        self.runs.put_steps(run, changed)?;
        let _ = self.run_changes.send(run.run_id.clone());
        Ok(())
    }

    /// Tells of every run written from now on (a lagging receiver should re-read everything).
    pub fn watch_runs(&self) -> tokio::sync::broadcast::Receiver<RunId> {
        self.run_changes.subscribe()
    }

    /// Records what was submitted for `run`, unless something already is (a redelivery).
    pub fn put_submitted(&self, run: &RunId, submitted: &Submitted) -> Result<(), StoreError> {
        let bytes = encode("submission", submitted)?;
        // Err(current value) only means the run's submission is already stored.
        let _ = self.submits.compare_and_swap(run.as_str(), None, bytes)?;
        Ok(())
    }

    /// What was submitted for `run`; `None` for an unknown run or one submitted to a release
    /// that did not keep submissions.
    pub fn submitted(&self, run: &RunId) -> Result<Option<Submitted>, StoreError> {
        self.submits
            .get(run.as_str())?
            .map(|v| decode("submission", run.as_str(), &v))
            .transpose()
    }

    /// One page of runs, newest first (by creation time); `None` when `after` names no run.
    pub fn runs_page(
        &self,
        query: &RunQuery,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Option<RunPage>, StoreError> {
        self.runs.page(query, after, limit)
    }

    pub fn put_cache(&self, key: &str, outputs: &CachedOutputs) -> Result<(), StoreError> {
        self.cache.insert(key, encode("cache", outputs)?)?;
        Ok(())
    }

    pub fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.agents
            .insert(agent.info.id.as_str(), encode("agent", agent)?)?;
        Ok(())
    }

    /// Makes every write so far durable: in the journal first when it is on (one batch,
    /// confirmed by the broker), then in sled.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if let Some(journal) = self.journal.get() {
            journal.append(&self.recorder).await?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.runs.get(id)
    }

    /// A run without its pipeline and steps (its header alone is read).
    pub fn run_summary(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.runs.summary(id)
    }

    /// The runs that ended at or after `since`, without their pipelines and steps.
    pub fn runs_ended_since(&self, since: u64) -> Result<Vec<RunRecord>, StoreError> {
        self.runs.ended_since(since)
    }

    /// Whether a run is known, without decoding it.
    pub fn has_run(&self, id: &RunId) -> Result<bool, StoreError> {
        Ok(self.runs.headers.contains_key(id.as_str())?)
    }

    /// Every run, newest first (run ids are time-ordered).
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs.all_newest_first()
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        decode_all("agent", &self.agents)
    }

    /// Appends reported points to the step's series (see [`scalars`]).
    pub fn append_scalars(
        &self,
        run: &RunId,
        step: &drover_protocol::StepName,
        points: &[drover_api::ScalarPoint],
    ) -> Result<(), ScalarsError> {
        self.scalars.append(run, step, points)
    }

    /// Tells of every step whose scalars are written from now on.
    pub fn watch_scalars(
        &self,
    ) -> tokio::sync::broadcast::Receiver<(RunId, drover_protocol::StepName)> {
        self.scalars.watch()
    }

    /// The stored series of the run, or of one of its steps, by step name, title and series.
    pub fn scalars(
        &self,
        run: &RunId,
        step: Option<&drover_protocol::StepName>,
    ) -> Result<Vec<drover_api::SeriesView>, StoreError> {
        self.scalars.read(run, step)
    }

    /// Writes a registered task and makes it durable before its registration is answered.
    pub async fn put_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.tasks.insert(task.id.as_str(), encode("task", task)?)?;
        self.flush().await
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.tasks
            .get(id)?
            .map(|v| decode("task", id, &v))
            .transpose()
    }

    /// Every registered task, newest first (task ids are time-ordered).
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut all: Vec<TaskRecord> = decode_all("task", &self.tasks)?;
        all.reverse();
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Event, SchedulerConfig, State, handle};
    use drover_protocol::message::Submit;
    use drover_protocol::spec::PipelineSpec;

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let spec = PipelineSpec::from_toml(
            "[pipeline]\nname = \"p\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\ncache = true\n",
        )
        .unwrap();
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec,
            params: BTreeMap::new(),
            submitted_by: Some("me@here".into()),
            external: false,
        };
        handle(&mut state, Event::Submit(submit), 42);
        let outputs = CachedOutputs::new();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_run(&state.runs[&run_id]).unwrap();
            store.put_cache("k1", &outputs).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open_after_drop(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.runs, vec![state.runs[&run_id].clone()]);
        assert_eq!(loaded.cache.get("k1"), Some(&outputs));
        assert_eq!(store.run(&run_id).unwrap().unwrap().created_at, 42);
        assert!(store.run(&RunId::generate()).unwrap().is_none());
    }

    #[test]
    fn runs_are_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = RunId::generate();
            let spec = PipelineSpec::from_toml("[pipeline]\nname = \"p\"\n").unwrap();
            handle(
                &mut state,
                Event::Submit(Submit {
                    run_id: id.clone(),
                    spec,
                    params: BTreeMap::new(),
                    submitted_by: None,
                    external: false,
                }),
                1,
            );
            store.put_run(&state.runs[&id]).unwrap();
            ids.push(id);
        }
        ids.reverse();
        let listed: Vec<RunId> = store
            .runs()
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(listed, ids);
    }
}
