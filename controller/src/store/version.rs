//! The state store's layout version ([`SCHEMA_VERSION`], kept in the `meta` tree) and its
//! migrations from older layouts.
//!
//! Layouts: unversioned stores hold the layout of version 1 without a stamp, and possibly runs
//! of the layout before it (a whole [`RunRecord`] per run in the `runs` tree), which are split
//! into header, pipeline and steps on the way.

use super::runs::{Header, RunTrees, step_key_text};
use super::schema::{SchemaError, Stamp, Versioned};
use super::{StoreError, decode};
use crate::scheduler::{AgentRecord, CachedOutputs, RunRecord, StepRecord};
use drover_protocol::validate::Pipeline;
use serde::de::DeserializeOwned;

/// The layout this binary writes. Changing a stored record's layout bumps it, adds a migration
/// to [`StateLayout::migrate`], and updates the golden files and the fixture.
pub const SCHEMA_VERSION: u32 = 1;

pub(super) const META_TREE: &str = "meta";
const VERSION_KEY: &str = "schema_version";
const WRITTEN_BY_KEY: &str = "written_by";
/// Where the layout before version 1 kept whole runs.
const LEGACY_RUNS_TREE: &str = "runs";

/// The sled database seen as versioned data.
pub(super) struct StateLayout<'a> {
    pub db: &'a sled::Db,
    pub runs: &'a RunTrees,
    pub cache: &'a sled::Tree,
    pub agents: &'a sled::Tree,
    pub path: String,
}

impl StateLayout<'_> {
    fn meta(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(META_TREE)?)
    }

    /// Every record decodes as this binary's types, or the error names the first that does not.
    fn check_records(&self) -> Result<(), StoreError> {
        self.check::<Header>("run", &self.runs.headers, text)?;
        self.check::<Pipeline>("pipeline", &self.runs.pipelines, text)?;
        self.check::<StepRecord>("step", &self.runs.steps, step_key_text)?;
        self.check::<CachedOutputs>("cache", self.cache, text)?;
        self.check::<AgentRecord>("agent", self.agents, text)
    }

    fn check<T: DeserializeOwned>(
        &self,
        what: &'static str,
        tree: &sled::Tree,
        key_text: impl Fn(&[u8]) -> String,
    ) -> Result<(), StoreError> {
        for item in tree.iter() {
            let (k, v) = item?;
            decode::<T>(what, &key_text(&k), &v).map_err(|e| self.undecodable(e))?;
        }
        Ok(())
    }

    fn undecodable(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Decode { what, key, error } => StoreError::Undecodable {
                path: self.path.clone(),
                what,
                key,
                error,
                ours: env!("CARGO_PKG_VERSION"),
            },
            other => other,
        }
    }

    /// Splits the runs of the layout before version 1 into header, pipeline and steps.
    fn split_legacy_runs(&self) -> Result<usize, StoreError> {
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_RUNS_TREE.as_bytes());
        if !exists {
            return Ok(0);
        }
        let legacy = self.db.open_tree(LEGACY_RUNS_TREE)?;
        let mut moved = 0;
        for item in legacy.iter() {
            let (k, v) = item?;
            let run: RunRecord = decode("run", &text(&k), &v).map_err(|e| self.undecodable(e))?;
            self.runs.put(&run)?;
            moved += 1;
        }
        self.db.flush()?;
        self.db.drop_tree(LEGACY_RUNS_TREE)?;
        Ok(moved)
    }
}

fn text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Versioned for StateLayout<'_> {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "state store"
    }

    fn path(&self) -> String {
        self.path.clone()
    }

    fn stamp(&self) -> Result<Option<Stamp>, StoreError> {
        let meta = self.meta()?;
        let Some(raw) = meta.get(VERSION_KEY)? else {
            return Ok(None);
        };
        let bytes: [u8; 4] = raw
            .as_ref()
            .try_into()
            .map_err(|_| SchemaError::Unreadable {
                what: self.what(),
                path: self.path.clone(),
                detail: format!("{VERSION_KEY} is {} bytes, not 4", raw.len()),
            })?;
        let written_by = meta
            .get(WRITTEN_BY_KEY)?
            .map_or_else(|| "unknown".to_string(), |v| text(&v));
        Ok(Some(Stamp {
            version: u32::from_be_bytes(bytes),
            written_by,
        }))
    }

    fn has_data(&self) -> Result<bool, StoreError> {
        for name in self.db.tree_names() {
            if name.as_ref() != META_TREE.as_bytes() && !self.db.open_tree(name)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn migrate(&self, from: Option<u32>) -> Result<u32, StoreError> {
        match from {
            None => {
                let moved = self.split_legacy_runs()?;
                if moved > 0 {
                    tracing::info!(
                        "split {moved} run(s) of the layout before version 1 into header, pipeline and steps"
                    );
                }
                self.check_records()?;
                Ok(1)
            }
            Some(v) => Err(SchemaError::NoMigration {
                what: self.what(),
                path: self.path.clone(),
                found: v.to_string(),
                ours: env!("CARGO_PKG_VERSION"),
            }
            .into()),
        }
    }

    fn write_stamp(&self, stamp: &Stamp) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(VERSION_KEY, stamp.version.to_be_bytes().to_vec());
        batch.insert(WRITTEN_BY_KEY, stamp.written_by.as_bytes());
        self.meta()?.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}
