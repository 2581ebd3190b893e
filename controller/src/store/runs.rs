//! How a run is laid out in sled: a small header, the validated pipeline (written once, and
//! again each time a dynamic run gains steps) and one record per step, so an event that changes
//! one step writes that step, not the whole run; an index by creation time for listing a page
//! of runs without reading the others.

use super::journaled::{Recorder, Tree};
use super::{StoreError, decode, encode};
use crate::scheduler::{RunRecord, RunStatus, StepRecord};
use drover_protocol::RunId;
use drover_protocol::validate::Pipeline;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A run without its pipeline and steps; fields older data may lack default.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Header {
    run_id: RunId,
    name: String,
    project: String,
    version: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    submitted_by: Option<String>,
    status: RunStatus,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    abort_requested: bool,
    created_at: u64,
    #[serde(default)]
    started_at: Option<u64>,
    #[serde(default)]
    ended_at: Option<u64>,
    has_pipeline: bool,
    steps: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    external: bool,
}

impl Header {
    pub(super) fn of(run: &RunRecord) -> Self {
        Self {
            run_id: run.run_id.clone(),
            name: run.name.clone(),
            project: run.project.clone(),
            version: run.version.clone(),
            params: run.params.clone(),
            submitted_by: run.submitted_by.clone(),
            status: run.status,
            error: run.error.clone(),
            abort_requested: run.abort_requested,
            created_at: run.created_at,
            started_at: run.started_at,
            ended_at: run.ended_at,
            has_pipeline: run.pipeline.is_some(),
            steps: run.steps.len() as u32,
            external: run.external,
        }
    }

    fn into_record(self, pipeline: Option<Pipeline>, steps: Vec<StepRecord>) -> RunRecord {
        let mut run = RunRecord {
            run_id: self.run_id,
            name: self.name,
            project: self.project,
            version: self.version,
            pipeline,
            params: self.params,
            submitted_by: self.submitted_by,
            status: self.status,
            error: self.error,
            abort_requested: self.abort_requested,
            created_at: self.created_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            steps,
            external: self.external,
            index: Default::default(),
        };
        run.reindex();
        run
    }
}

const INDEX_TREE: &str = "run_index";

/// Key of a run in the creation-time index: the time zero-padded, so keys sort by it.
fn index_key(created_at: u64, run: &RunId) -> Vec<u8> {
    format!("{created_at:020}/{run}").into_bytes()
}

fn run_of_index_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key)
        .ok()?
        .split_once('/')
        .map(|(_, id)| id)
}

/// Which runs a listing wants; `None` admits any.
#[derive(Debug, Default, Clone)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub project: Option<String>,
    pub name: Option<String>,
}

impl RunQuery {
    fn admits(&self, h: &Header) -> bool {
        self.status.is_none_or(|s| s == h.status)
            && self.project.as_ref().is_none_or(|p| *p == h.project)
            && self.name.as_ref().is_none_or(|n| *n == h.name)
    }
}

/// One page of a listing: runs newest first (without their pipelines), and the run to list
/// after for the next page when there is one.
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub next: Option<RunId>,
}

/// Key of step `index` of a run: the run id, then the index big-endian, so a prefix scan
/// returns a run's steps in order.
fn step_key(run: &RunId, index: usize) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(b'/');
    key.extend_from_slice(&(index as u32).to_be_bytes());
    key
}

/// A step key as text, `<run>/<index>`, for messages.
pub(super) fn step_key_text(key: &[u8]) -> String {
    match key.len().checked_sub(4).map(|at| key.split_at(at)) {
        Some((run, index)) if run.ends_with(b"/") => {
            let index = u32::from_be_bytes(index.try_into().unwrap_or_default());
            format!("{}{index}", String::from_utf8_lossy(run))
        }
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

fn step_prefix(run: &RunId) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(b'/');
    key
}

/// The trees of runs, and what was last written for each unfinished run.
pub(super) struct RunTrees {
    pub headers: Tree,
    pub pipelines: Tree,
    pub steps: Tree,
    /// `<created_at, 20 digits>/<run id>` -> nothing: runs in creation order, whatever their ids.
    /// Derived from the headers, so it is rebuilt at open when the two disagree.
    pub index: Tree,
    /// Steps as last written, per unfinished run; finished runs are forgotten.
    written: Mutex<HashMap<RunId, Vec<StepRecord>>>,
}

impl RunTrees {
    pub fn open(db: &sled::Db, recorder: &Arc<Recorder>) -> Result<Self, StoreError> {
        Ok(Self {
            headers: Tree::open(db, "run_headers", recorder)?,
            pipelines: Tree::open(db, "run_pipelines", recorder)?,
            steps: Tree::open(db, "run_steps", recorder)?,
            index: Tree::open(db, INDEX_TREE, recorder)?,
            written: Mutex::new(HashMap::new()),
        })
    }

    /// Rebuilds the creation-time index from the headers when they do not hold the same runs
    /// (a store written before the index existed, or by a release that ignored it).
    pub fn reindex(&self) -> Result<usize, StoreError> {
        if self.index.len() == self.headers.len() {
            return Ok(0);
        }
        self.index.clear()?;
        let mut n = 0;
        for item in self.headers.iter() {
            let (k, v) = item?;
            let header: Header = decode("run", &String::from_utf8_lossy(&k), &v)?;
            self.index
                .insert(index_key(header.created_at, &header.run_id), &[])?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes the header, the pipeline the first time and whenever it gained steps (a dynamic
    /// run), and the steps that changed.
    pub fn put(&self, run: &RunRecord) -> Result<(), StoreError> {
        let id = &run.run_id;
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let before = written.remove(id);
        let grew = before.as_ref().is_none_or(|b| b.len() != run.steps.len());
        if let (true, Some(p)) = (grew, &run.pipeline) {
            self.pipelines.insert(id.as_str(), encode("pipeline", p)?)?;
        }
        if before.is_none() {
            self.index.insert(index_key(run.created_at, id), &[])?;
        }
        for (i, step) in run.steps.iter().enumerate() {
            if before.as_ref().and_then(|b| b.get(i)) != Some(step) {
                self.steps.insert(step_key(id, i), encode("step", step)?)?;
            }
        }
        self.headers
            .insert(id.as_str(), encode("run", &Header::of(run))?)?;
        if !run.status.is_terminal() {
            written.insert(id.clone(), run.steps.clone());
        }
        Ok(())
    }

    /// Writes the header and the steps at `changed`, the only steps that changed since the run
    /// was last written; the whole run as [`RunTrees::put`] does when the run was not written
    /// before (by this process) or its number of steps changed. Costs what changed, not the
    /// size of the run.
    pub fn put_steps(&self, run: &RunRecord, changed: &BTreeSet<usize>) -> Result<(), StoreError> {
        let id = &run.run_id;
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let Some(before) = written.get_mut(id).filter(|b| b.len() == run.steps.len()) else {
            drop(written);
            return self.put(run);
        };
        for &i in changed {
            let Some(step) = run.steps.get(i) else {
                continue;
            };
            if before[i] != *step {
                self.steps.insert(step_key(id, i), encode("step", step)?)?;
                before[i] = step.clone();
            }
        }
        self.headers
            .insert(id.as_str(), encode("run", &Header::of(run))?)?;
        if run.status.is_terminal() {
            written.remove(id);
        }
        Ok(())
    }

    fn assemble(&self, key: &[u8], header: &[u8]) -> Result<RunRecord, StoreError> {
        let key = String::from_utf8_lossy(key);
        let header: Header = decode("run", &key, header)?;
        let id = header.run_id.clone();
        let pipeline = match header.has_pipeline {
            true => self
                .pipelines
                .get(id.as_str())?
                .map(|v| decode("pipeline", &key, &v))
                .transpose()?,
            false => None,
        };
        let mut steps = Vec::with_capacity(header.steps as usize);
        for item in self.steps.scan_prefix(step_prefix(&id)) {
            let (k, v) = item?;
            steps.push(decode("step", &step_key_text(&k), &v)?);
        }
        steps.truncate(header.steps as usize);
        Ok(header.into_record(pipeline, steps))
    }

    /// A run's header and steps without its pipeline: enough for a summary.
    fn summary_record(&self, header: Header) -> Result<RunRecord, StoreError> {
        let mut steps = Vec::with_capacity(header.steps as usize);
        for item in self.steps.scan_prefix(step_prefix(&header.run_id)) {
            let (k, v) = item?;
            steps.push(decode("step", &step_key_text(&k), &v)?);
        }
        steps.truncate(header.steps as usize);
        Ok(header.into_record(None, steps))
    }

    /// Up to `limit` runs that `query` admits, newest first, starting after the run `after`;
    /// reads the index and the headers it walks past, and the steps of the runs it returns.
    pub fn page(
        &self,
        query: &RunQuery,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Option<RunPage>, StoreError> {
        let end = match after {
            None => None,
            Some(id) => match self.headers.get(id.as_str())? {
                None => return Ok(None),
                Some(h) => {
                    let header: Header = decode("run", id.as_str(), &h)?;
                    Some(index_key(header.created_at, id))
                }
            },
        };
        let walk = match &end {
            Some(end) => self.index.range(..end.as_slice()),
            None => self.index.iter(),
        };
        let mut runs = Vec::new();
        let mut more = false;
        for item in walk.rev() {
            let (k, _) = item?;
            let Some(id) = run_of_index_key(&k) else {
                continue;
            };
            let Some(h) = self.headers.get(id)? else {
                continue; // an index entry ahead of its header: not written yet
            };
            let header: Header = decode("run", id, &h)?;
            if !query.admits(&header) {
                continue;
            }
            if runs.len() == limit {
                more = true;
                break;
            }
            runs.push(self.summary_record(header)?);
        }
        let next = more
            .then(|| runs.last().map(|r| r.run_id.clone()))
            .flatten();
        Ok(Some(RunPage { runs, next }))
    }

    pub fn get(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let key = id.as_str().as_bytes();
        self.headers
            .get(key)?
            .map(|h| self.assemble(key, &h))
            .transpose()
    }

    /// Every run not yet ended, oldest first: what the scheduler holds. Ended runs stay in
    /// the store only, read on demand.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::new();
        for item in self.headers.iter() {
            let (k, v) = item?;
            let header: Header = decode("run", &String::from_utf8_lossy(&k), &v)?;
            if !header.status.is_terminal() {
                runs.push(self.assemble(&k, &v)?);
            }
        }
        Ok(runs)
    }

    /// A run's header as a record without its pipeline and steps.
    pub fn summary(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.headers
            .get(id.as_str())?
            .map(|v| {
                let header: Header = decode("run", id.as_str(), &v)?;
                Ok(header.into_record(None, Vec::new()))
            })
            .transpose()
    }

    /// The ended runs that ended at or after `since` (ms since the epoch), without their
    /// pipelines and steps, oldest first.
    pub fn ended_since(&self, since: u64) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::new();
        for item in self.headers.iter() {
            let (k, v) = item?;
            let header: Header = decode("run", &String::from_utf8_lossy(&k), &v)?;
            if header.status.is_terminal() && header.ended_at >= Some(since) {
                runs.push(header.into_record(None, Vec::new()));
            }
        }
        Ok(runs)
    }

    /// Every run, newest first (run ids are time-ordered).
    pub fn all_newest_first(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.headers
            .iter()
            .rev()
            .map(|item| {
                let (k, v) = item?;
                self.assemble(&k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::scheduler::{Event, SchedulerConfig, State, StepStatus, handle};
    use crate::store::Store;
    use drover_protocol::RunId;
    use drover_protocol::message::Submit;
    use drover_protocol::spec::PipelineSpec;

    fn snapshot(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        store
            .runs
            .steps
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    /// A scheduler holding one just-submitted run of `steps` independent `true` steps.
    fn submitted(steps: usize) -> (State, RunId) {
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let mut toml = "[pipeline]\nname = \"p\"\n".to_string();
        for i in 0..steps {
            toml.push_str(&format!(
                "[[step]]\nname = \"s{i}\"\ncommand = [\"true\"]\n"
            ));
        }
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec: PipelineSpec::from_toml(&toml).unwrap(),
            params: Default::default(),
            submitted_by: None,
            external: false,
        };
        handle(&mut state, Event::Submit(submit), 1);
        (state, run_id)
    }

    #[tokio::test]
    async fn a_changed_step_is_written_alone_and_runs_reassemble_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, run_id) = submitted(50);
        {
            let store = Store::open(dir.path()).unwrap();
            let run = state.runs.get_mut(&run_id).unwrap();
            store.put_run(run).unwrap();
            let before = snapshot(&store);
            run.steps[7].status = StepStatus::Running;
            store.put_run(run).unwrap();
            let after = snapshot(&store);
            let changed: Vec<usize> = (0..before.len())
                .filter(|&i| before[i] != after[i])
                .collect();
            assert_eq!(changed, vec![7], "only the changed step is rewritten");
            assert_eq!(after[7].0, super::step_key(&run_id, 7));
            store.flush().await.unwrap();
        }
        let store = Store::open_after_drop(dir.path()).unwrap();
        let expected = &state.runs[&run_id];
        let got = store.run(&run_id).unwrap();
        assert!(
            got.as_ref() == Some(expected),
            "reassembled after reopening"
        );
        let loaded = store.load().unwrap().runs;
        assert!(loaded == vec![expected.clone()], "loaded after reopening");
    }

    #[tokio::test]
    async fn listed_steps_are_written_alone_and_the_run_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, run_id) = submitted(20);
        let store = Store::open(dir.path()).unwrap();
        let run = state.runs.get_mut(&run_id).unwrap();
        store.put_run(run).unwrap();
        let before = snapshot(&store);
        run.steps[3].status = StepStatus::Running;
        run.steps[9].status = StepStatus::Running;
        let listed = std::collections::BTreeSet::from([3, 9, 12]);
        store.put_run_steps(run, &listed).unwrap();
        let after = snapshot(&store);
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert_eq!(
            changed,
            vec![3, 9],
            "listed steps that changed, and no others"
        );
        assert!(store.run(&run_id).unwrap().as_ref() == Some(&*run));

        // A run this store has not written yet is written whole, whatever the list says.
        let fresh = tempfile::tempdir().unwrap();
        let other = Store::open(fresh.path()).unwrap();
        other
            .put_run_steps(run, &std::collections::BTreeSet::from([3]))
            .unwrap();
        assert!(other.run(&run_id).unwrap().as_ref() == Some(&*run));
    }

    #[tokio::test]
    async fn a_pipeline_that_gains_a_step_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let toml = "[pipeline]\nname = \"p\"\n[[step]]\nname = \"d\"\ndriver = true\n\
                    function = { source = \"def d():\\n    pass\\n\", entry = \"d\" }\n";
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec: PipelineSpec::from_toml(toml).unwrap(),
            params: Default::default(),
            submitted_by: None,
            external: false,
        };
        handle(&mut state, Event::Submit(submit), 1);
        let store = Store::open(dir.path()).unwrap();
        store.put_run(&state.runs[&run_id]).unwrap();
        let request = drover_api::AddStep {
            caller: drover_protocol::StepName::new("d").unwrap(),
            attempt: drover_protocol::AttemptNo(1),
            call: drover_api::CallKey {
                seq: 0,
                component: "c".into(),
                digest: "x".into(),
            },
            step: drover_protocol::spec::StepSpec {
                name: "c".into(),
                command: Some(vec!["true".into()]),
                ..Default::default()
            },
        };
        crate::scheduler::add_step(&mut state, request, &run_id, 2).unwrap();
        store.put_run(&state.runs[&run_id]).unwrap();
        let got = store.run(&run_id).unwrap().unwrap();
        assert_eq!(got.pipeline.as_ref().unwrap().steps.len(), 2);
        assert!(got == state.runs[&run_id], "the added step reads back");
    }
}
