//! The records the scheduler owns: runs, their steps and attempts, the cache index, the agents.
//!
//! These are what the store persists (named-field msgpack) and what the HTTP layer renders; they
//! hold no behaviour beyond small queries. A field older stored data may lack, with a meaningful
//! empty value, is `#[serde(default)]`; unknown fields are ignored on read. Any other change to
//! a stored record's layout bumps `store::SCHEMA_VERSION` (see ARCHITECTURE.md).

pub use drover_api::{ArchivedLog, AttemptOutcome, RunStatus, StepStatus};
use drover_protocol::message::{AgentInfo, ArtifactRef, ArtifactStoreRef, LogDelay, StartKind};
use drover_protocol::validate::{Pipeline, Step};
use drover_protocol::{AgentId, AttemptNo, Names, OutputName, QueueName, RunId, StepName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

/// What the scheduler needs to know about its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Base URL of the HTTP API, put into every `StepJob`.
    pub controller_url: String,
    /// How long an attempt lives without a heartbeat.
    pub lease_ms: u64,
    /// The bucket agents move artifacts to and from directly, put into every `StepJob`;
    /// `None`: through the HTTP API.
    pub artifact_store: Option<ArtifactStoreRef>,
    /// This controller's epoch in the state journal (0 without it), put into every `StepJob`
    /// and `Cancel`.
    pub epoch: u64,
    /// How many bytes of a step's outputs may come inside its `Finished`, put into every
    /// `StepJob` (0: every output is uploaded).
    pub inline_outputs: u64,
}

/// Everything the scheduler decides over.
#[derive(Debug, Clone)]
pub struct State {
    pub config: SchedulerConfig,
    pub runs: BTreeMap<RunId, RunRecord>,
    /// Cache key -> the outputs a step with that key produced.
    pub cache: BTreeMap<String, CachedOutputs>,
    pub agents: BTreeMap<AgentId, AgentRecord>,
    /// Most steps of a queue queued or running at once, across every run and agent.
    pub queue_limits: BTreeMap<QueueName, u32>,
    /// Lost attempts (lease expired) a step is dispatched again after; one more fails it.
    pub max_lost_attempts: u32,
    /// Most steps a pipeline may have; a larger submission is rejected whole.
    pub max_steps: usize,
    /// Whether job queues keep step priorities (classic queues); when not, a step with a
    /// priority is refused rather than run in another order than asked.
    pub step_priorities: bool,
    /// The namespace's names: a step whose queue would land on one of its own objects (its
    /// journal, events queue...) is refused.
    pub names: Names,
}

impl State {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            runs: BTreeMap::new(),
            cache: BTreeMap::new(),
            agents: BTreeMap::new(),
            queue_limits: BTreeMap::new(),
            max_lost_attempts: crate::config::DEFAULT_MAX_LOST_ATTEMPTS,
            max_steps: crate::config::DEFAULT_MAX_STEPS,
            step_priorities: true,
            names: Names::new(drover_protocol::names::DEFAULT_NAMESPACE)
                .expect("the default namespace is a valid name"),
        }
    }
}

/// The outputs stored under one cache key.
pub type CachedOutputs = BTreeMap<OutputName, ArtifactRef>;

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: AttemptNo,
    #[serde(default)]
    pub agent: Option<AgentId>,
    pub queued_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub outcome: Option<AttemptOutcome>,
    #[serde(default)]
    pub message: Option<String>,
    /// Where the attempt's log reached the controller late (from its `Finished`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_delays: Vec<LogDelay>,
    /// How a Python function step's process started (from its `Finished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartKind>,
    /// The log's final size (from its `Finished`): its log is complete once that many bytes are
    /// stored, which may be after the attempt ended. `None` from agents that reported only
    /// once their whole log was confirmed, and for attempts not over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
    /// The complete log as kept in the artifact store (`logs::archive`), recorded once it is
    /// stored there; the log survives the loss of the data dir only through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_archive: Option<ArchivedLog>,
}

/// Why a step whose parents are done is still pending. The scheduler decides on this field,
/// never on the step's message, which only says the same to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PendingReason {
    /// Its queue has as many steps queued or running as its limit allows.
    QueueFull { queue: QueueName },
    /// It has a `pre_execute_callback` (`await_callback`) that the process running the
    /// pipeline's logic has not answered yet.
    WaitingForCallback,
}

impl std::fmt::Display for PendingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingReason::QueueFull { queue } => {
                write!(f, "waiting for room on queue {queue} (limit reached)")
            }
            PendingReason::WaitingForCallback => f.write_str("waiting for callback"),
        }
    }
}

/// A step within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: StepName,
    pub queue: QueueName,
    pub status: StepStatus,
    /// The current attempt; 0 until the first dispatch.
    pub attempt: AttemptNo,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Attempts that failed (counted against `retries`); lost and released ones are not.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub outputs: BTreeMap<OutputName, ArtifactRef>,
    #[serde(default)]
    pub cache_key: Option<String>,
    #[serde(default)]
    pub cache_hit: bool,
    /// The agent running the current attempt.
    #[serde(default)]
    pub agent: Option<AgentId>,
    /// When the current attempt's lease runs out (ms since epoch).
    #[serde(default)]
    pub lease_until: Option<u64>,
    /// When the next attempt is due, while waiting out a retry backoff.
    #[serde(default)]
    pub retry_at: Option<u64>,
    #[serde(default)]
    pub abort_requested: bool,
    #[serde(default)]
    pub message: Option<String>,
    /// Set while the step is pending for a reason other than its parents or a retry backoff;
    /// absent from records stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<PendingReason>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// The component call that added this step to a dynamic run; `None` for steps of the
    /// submitted spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<StepCall>,
    /// The answer to the step's callback (`await_callback`): run it, or skip it; `None` until
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<bool>,
}

/// Which call of which running step added a step to a dynamic run: what a replay of that call
/// is matched against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCall {
    pub caller: StepName,
    /// The call's position among the caller's component calls (0 for the first).
    pub seq: u32,
    pub component: String,
    /// The digest of the call's arguments.
    pub digest: String,
    /// When the step was added (ms since the epoch).
    pub added_at: u64,
}

impl StepRecord {
    pub fn new(step: &Step) -> Self {
        Self {
            name: step.name.clone(),
            queue: step.queue.clone(),
            status: StepStatus::Pending,
            attempt: AttemptNo(0),
            attempts: Vec::new(),
            failures: 0,
            outputs: BTreeMap::new(),
            cache_key: None,
            cache_hit: false,
            agent: None,
            lease_until: None,
            retry_at: None,
            abort_requested: false,
            message: None,
            pending_reason: None,
            started_at: None,
            ended_at: None,
            call: None,
            callback: None,
        }
    }

    /// The record of the current attempt, if one was dispatched.
    pub fn current(&self) -> Option<&AttemptRecord> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.attempt == self.attempt)
    }

    pub fn current_mut(&mut self) -> Option<&mut AttemptRecord> {
        let attempt = self.attempt;
        self.attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt)
    }

    /// The attempts that ended `lost`, oldest first.
    pub fn lost_attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts
            .iter()
            .filter(|a| a.outcome == Some(AttemptOutcome::Lost))
    }

    /// The exit code of the latest attempt that reported one.
    pub fn exit_code(&self) -> Option<i32> {
        self.attempts.iter().rev().find_map(|a| a.exit_code)
    }
}

/// A submitted run; `pipeline` is `None` when it was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub name: String,
    pub project: String,
    pub version: String,
    pub pipeline: Option<Pipeline>,
    /// Effective parameters (the overrides as given when rejected).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    pub status: RunStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub abort_requested: bool,
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// One record per pipeline step, in the pipeline's (topological) order.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Executed by its submitter, which reports every attempt over HTTP: nothing is dispatched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Derived from `pipeline`, never stored: see [`StepIndex`].
    #[serde(skip)]
    pub index: StepIndex,
}

/// Where each step of a run is, derived from its pipeline, so the scheduler finds a step by
/// name, a step's children and the driver without scanning the run. It covers the first
/// `len()` steps; lookups check that it covers the run and fall back to a scan otherwise, so a
/// stale index costs time, never a wrong answer. Not part of the run's value: two runs compare
/// equal whatever their indexes hold.
#[derive(Debug, Clone, Default)]
pub struct StepIndex {
    /// Step positions, found by the hash of a step's name and confirmed by comparing the name
    /// of the step at that position: 4 bytes a step where a table of owned names took 32 and a
    /// copy of each name, so a 100k-step run's table stays in the CPU's cache (a `Claimed`
    /// for such a run used to spend more on finding its step than on the rest).
    by_name: hashbrown::HashTable<u32>,
    hasher: RandomState,
    children: Vec<Vec<usize>>,
    /// The positions of every step's parents, one after the other: step `j`'s are
    /// `parents[parents_from[j] as usize..parents_from[j + 1] as usize]`. Settling a step reads
    /// its parents by position, not by hashing and comparing their names (a 10k-step run is
    /// far bigger than the CPU's caches, and each name lookup touched three places in it).
    parents: Vec<u32>,
    parents_from: Vec<u32>,
    driver: Option<usize>,
    /// Every step before this one was terminal when last looked at (see `all_terminal`).
    pub(super) settled: usize,
}

impl PartialEq for StepIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What has a step's name: a step's definition or its record.
trait Named {
    fn name(&self) -> &StepName;
}

impl Named for Step {
    fn name(&self) -> &StepName {
        &self.name
    }
}

impl Named for StepRecord {
    fn name(&self) -> &StepName {
        &self.name
    }
}

/// The position of the step named `name` in `table`, whose positions are those of `steps`.
fn lookup(
    table: &hashbrown::HashTable<u32>,
    hasher: &RandomState,
    steps: &[impl Named],
    name: &StepName,
) -> Option<usize> {
    let found = table.find(hasher.hash_one(name.as_str()), |&p| {
        steps.get(p as usize).is_some_and(|s| s.name() == name)
    });
    found.map(|&p| p as usize)
}

impl StepIndex {
    /// How many steps it covers.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Adds the steps of `steps` it does not cover yet (parents come before their children,
    /// so each new step's parents are already known).
    fn extend(&mut self, steps: &[Step]) {
        let StepIndex {
            by_name,
            hasher,
            children,
            parents,
            parents_from,
            driver,
            ..
        } = self;
        if parents_from.is_empty() {
            parents_from.push(0);
        }
        let rehash = |&p: &u32| hasher.hash_one(steps[p as usize].name.as_str());
        // Sized once for a whole submission instead of growing (and rehashing) step by step.
        let new = steps.len().saturating_sub(children.len());
        by_name.reserve(new, rehash);
        children.reserve(new);
        parents_from.reserve(new);
        for (j, step) in steps.iter().enumerate().skip(children.len()) {
            // Names are unique: validation refuses a name given twice, at submission and when
            // a step is added.
            by_name.insert_unique(hasher.hash_one(step.name.as_str()), j as u32, rehash);
            children.push(Vec::new());
            for parent in &step.parents {
                if let Some(p) = lookup(by_name, hasher, &steps[..j], parent) {
                    children[p].push(j);
                    parents.push(p as u32);
                }
            }
            parents_from.push(parents.len() as u32);
            if step.driver && driver.is_none() {
                *driver = Some(j);
            }
        }
    }

    /// The position of step `name` among `steps`, when the index covers them.
    fn position(&self, steps: &[StepRecord], name: &StepName) -> Option<Option<usize>> {
        if self.children.len() != steps.len() {
            return None;
        }
        Some(lookup(&self.by_name, &self.hasher, steps, name))
    }

    /// The record of step `name` among `steps`.
    pub fn find<'a>(&self, steps: &'a [StepRecord], name: &StepName) -> Option<&'a StepRecord> {
        match self.position(steps, name) {
            Some(i) => i.map(|i| &steps[i]),
            None => steps.iter().find(|s| &s.name == name),
        }
    }

    /// The positions of step `i`'s parents among `steps` (those that exist); `None` when the
    /// index does not cover `steps`.
    fn parents(&self, steps: &[StepRecord], i: usize) -> Option<impl Iterator<Item = usize>> {
        if self.children.len() != steps.len() {
            return None;
        }
        let from = *self.parents_from.get(i)? as usize;
        let to = *self.parents_from.get(i + 1)? as usize;
        Some(self.parents[from..to].iter().map(|&p| p as usize))
    }

    /// The records of step `i`'s parents (`spec` is its definition): by position where the
    /// index covers `steps`, by name otherwise.
    pub fn parent_records<'a>(
        &self,
        spec: &'a Step,
        steps: &'a [StepRecord],
        i: usize,
    ) -> impl Iterator<Item = &'a StepRecord> {
        let known = self.parents(steps, i);
        let named = known.is_none().then(|| spec.parents.iter());
        let known = known.into_iter().flatten().map(|p| &steps[p]);
        let named = named.into_iter().flatten();
        known.chain(named.filter_map(|p| self.find(steps, p)))
    }

    /// The steps that list step `i` as a parent; `None` when the index does not cover it.
    pub fn children(&self, i: usize) -> Option<&[usize]> {
        self.children.get(i).map(Vec::as_slice)
    }
}

impl RunRecord {
    /// Brings the step index up to the pipeline (after submission, loading or added steps).
    pub fn reindex(&mut self) {
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        if self.index.len() > pipeline.steps.len() {
            self.index = StepIndex::default();
        }
        self.index.extend(&pipeline.steps);
    }

    /// Whether the index covers every step (then lookups need no scan).
    pub fn indexed(&self) -> bool {
        self.index.len() == self.steps.len()
            && self
                .pipeline
                .as_ref()
                .is_some_and(|p| p.steps.len() == self.steps.len())
    }

    pub fn step_index(&self, name: &StepName) -> Option<usize> {
        match self.index.position(&self.steps, name) {
            Some(i) => i,
            None => self.steps.iter().position(|s| &s.name == name),
        }
    }

    pub fn step(&self, name: &StepName) -> Option<&StepRecord> {
        self.index.find(&self.steps, name)
    }

    /// The validated definition of a step.
    pub fn step_spec(&self, name: &StepName) -> Option<&Step> {
        let steps = &self.pipeline.as_ref()?.steps;
        match self.indexed() {
            true => self
                .step_index(name)
                .and_then(|i| steps.get(i))
                .filter(|s| &s.name == name),
            false => steps.iter().find(|s| &s.name == name),
        }
    }

    /// The pipeline's driver step, if it has one.
    pub fn driver(&self) -> Option<&Step> {
        let pipeline = self.pipeline.as_ref()?;
        match self.indexed() {
            true => self.index.driver.and_then(|i| pipeline.steps.get(i)),
            false => pipeline.driver(),
        }
    }
}

/// What the controller knows about an agent from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub last_seen: u64,
}

/// A heartbeat older than this means the agent is gone (a few missed heartbeats).
pub const AGENT_ALIVE_MS: u64 = 15_000;

impl AgentRecord {
    /// Whether the agent is alive at `now` (ms since the epoch).
    pub fn alive(&self, now: u64) -> bool {
        now.saturating_sub(self.last_seen) < AGENT_ALIVE_MS
    }

    /// Whether the agent, alive and not draining, takes jobs from `queue`. Such an agent holds
    /// no consumer on the queue while its slots are busy (it takes jobs with `basic.get` and
    /// opens consumers only on a queue that was empty), so a queue without consumers may well
    /// be served.
    pub fn serves(&self, queue: &QueueName, now: u64) -> bool {
        self.alive(now) && !self.info.draining && self.info.queues.contains(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StepRecord {
        let text = "[pipeline]\nname = \"p\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n";
        let spec = drover_protocol::spec::PipelineSpec::from_toml(text).unwrap();
        let pipeline = drover_protocol::validate::validate(&spec, &BTreeMap::new()).unwrap();
        StepRecord::new(&pipeline.steps[0])
    }

    #[test]
    fn the_index_gives_each_step_its_parents_by_position() {
        let text = "[pipeline]\nname = \"p\"\n\
            [[step]]\nname = \"z\"\ncommand = [\"true\"]\n\
            [[step]]\nname = \"b\"\ncommand = [\"true\"]\nparents = [\"z\"]\n\
            [[step]]\nname = \"a\"\ncommand = [\"true\"]\nparents = [\"z\", \"b\"]\n";
        let spec = drover_protocol::spec::PipelineSpec::from_toml(text).unwrap();
        let mut pipeline = drover_protocol::validate::validate(&spec, &BTreeMap::new()).unwrap();
        let mut steps: Vec<StepRecord> = pipeline.steps.iter().map(StepRecord::new).collect();
        let mut index = StepIndex::default();
        index.extend(&pipeline.steps);
        let parents = |index: &StepIndex, steps: &[StepRecord], i: usize| {
            let mut names: Vec<String> = index
                .parents(steps, i)?
                .map(|p| steps[p].name.to_string())
                .collect();
            names.sort();
            Some(names)
        };
        assert_eq!(parents(&index, &steps, 0), Some(vec![]));
        assert_eq!(parents(&index, &steps, 1), Some(vec!["z".to_string()]));
        assert_eq!(
            parents(&index, &steps, 2),
            Some(vec!["b".into(), "z".into()])
        );
        // A step added later (as a dynamic step is): not covered until the index is extended.
        let mut added = pipeline.steps[1].clone();
        added.name = StepName::new("c").unwrap();
        added.parents = ["a", "z"].map(|p| StepName::new(p).unwrap()).into();
        steps.push(StepRecord::new(&added));
        pipeline.steps.push(added);
        assert_eq!(parents(&index, &steps, 3), None);
        assert_eq!(
            parents(&index, &steps, 1),
            None,
            "a partial index answers nothing"
        );
        index.extend(&pipeline.steps);
        for (i, name) in ["z", "b", "a", "c"].into_iter().enumerate() {
            let name = StepName::new(name).unwrap();
            assert_eq!(index.position(&steps, &name), Some(Some(i)));
        }
        let unknown = StepName::new("y").unwrap();
        assert_eq!(index.position(&steps, &unknown), Some(None));
        assert_eq!(
            parents(&index, &steps, 3),
            Some(vec!["a".into(), "z".into()])
        );
        assert_eq!(
            parents(&index, &steps, 2),
            Some(vec!["b".into(), "z".into()])
        );
    }

    #[test]
    fn an_index_grown_a_step_at_a_time_finds_every_step() {
        let mut text = String::from("[pipeline]\nname = \"p\"\n");
        for i in 0..300 {
            text.push_str(&format!(
                "[[step]]\nname = \"s{i}\"\ncommand = [\"true\"]\n"
            ));
        }
        let spec = drover_protocol::spec::PipelineSpec::from_toml(&text).unwrap();
        let pipeline = drover_protocol::validate::validate(&spec, &BTreeMap::new()).unwrap();
        let steps: Vec<StepRecord> = pipeline.steps.iter().map(StepRecord::new).collect();
        let mut index = StepIndex::default();
        for n in 1..=steps.len() {
            index.extend(&pipeline.steps[..n]);
        }
        for (i, step) in steps.iter().enumerate() {
            assert_eq!(index.position(&steps, &step.name), Some(Some(i)));
        }
        assert_eq!(index.position(&steps[..10], &steps[0].name), None);
    }

    #[test]
    fn step_records_stored_without_a_pending_reason_still_load() {
        let mut old = serde_json::to_value(record()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("pending_reason");
        assert!(fields.contains_key("message"), "{fields:?}");
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let loaded: StepRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(loaded, record());
    }

    #[test]
    fn a_pending_reason_is_stored_as_data() {
        let mut held = record();
        held.pending_reason = Some(PendingReason::QueueFull {
            queue: QueueName::new("gpu").unwrap(),
        });
        let json = serde_json::to_value(&held).unwrap();
        assert_eq!(
            json["pending_reason"],
            serde_json::json!({"reason": "queue_full", "queue": "gpu"})
        );
        let bytes = rmp_serde::to_vec_named(&held).unwrap();
        assert_eq!(rmp_serde::from_slice::<StepRecord>(&bytes).unwrap(), held);
    }

    /// A busy agent holds no consumer on its queue; the idle-queue warning asks this instead.
    #[test]
    fn an_agent_serves_its_queues_while_alive_and_not_draining() {
        let default = QueueName::new("default").unwrap();
        let agent = AgentRecord {
            info: AgentInfo {
                id: AgentId::new("a1").unwrap(),
                host: "host".into(),
                pid: 1,
                version: "0".into(),
                queues: vec![default.clone()],
                slots: 4,
                busy: 4,
                draining: false,
                cpus: 2,
                memory_mib: 4096,
                installer: None,
                warm_parents: Default::default(),
                refused_stale: 0,
                revoked_dropped: 0,
            },
            last_seen: 1_000_000,
        };
        assert!(agent.serves(&default, 1_000_000 + AGENT_ALIVE_MS - 1));
        assert!(!agent.serves(&default, 1_000_000 + AGENT_ALIVE_MS));
        assert!(!agent.serves(&QueueName::new("gpu").unwrap(), 1_000_000));
        let mut draining = agent.clone();
        draining.info.draining = true;
        assert!(!draining.serves(&default, 1_000_000));
    }
}
