//! The records the scheduler owns: runs, their steps and attempts, the cache index, the agents.
//!
//! These are what the store persists (msgpack) and what the HTTP layer renders; they hold no
//! behaviour beyond small queries.

pub use drover_api::{AttemptOutcome, RunStatus, StepStatus};
use drover_protocol::message::{AgentInfo, ArtifactRef, ArtifactStoreRef, LogDelay};
use drover_protocol::validate::{Pipeline, Step};
use drover_protocol::{AgentId, AttemptNo, OutputName, QueueName, RunId, StepName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
}

impl State {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            runs: BTreeMap::new(),
            cache: BTreeMap::new(),
            agents: BTreeMap::new(),
            queue_limits: BTreeMap::new(),
        }
    }
}

/// The outputs stored under one cache key.
pub type CachedOutputs = BTreeMap<OutputName, ArtifactRef>;

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: AttemptNo,
    pub agent: Option<AgentId>,
    pub queued_at: u64,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub exit_code: Option<i32>,
    pub outcome: Option<AttemptOutcome>,
    pub message: Option<String>,
    /// Where the attempt's log reached the controller late (from its `Finished`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_delays: Vec<LogDelay>,
}

/// A step within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: StepName,
    pub queue: QueueName,
    pub status: StepStatus,
    /// The current attempt; 0 until the first dispatch.
    pub attempt: AttemptNo,
    pub attempts: Vec<AttemptRecord>,
    /// Attempts that failed (counted against `retries`).
    pub failures: u32,
    pub outputs: BTreeMap<OutputName, ArtifactRef>,
    pub cache_key: Option<String>,
    pub cache_hit: bool,
    /// The agent running the current attempt.
    pub agent: Option<AgentId>,
    /// When the current attempt's lease runs out (ms since epoch).
    pub lease_until: Option<u64>,
    /// When the next attempt is due, while waiting out a retry backoff.
    pub retry_at: Option<u64>,
    pub abort_requested: bool,
    pub message: Option<String>,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
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
            started_at: None,
            ended_at: None,
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
    pub params: BTreeMap<String, String>,
    pub submitted_by: Option<String>,
    pub status: RunStatus,
    pub error: Option<String>,
    pub abort_requested: bool,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    /// One record per pipeline step, in the pipeline's (topological) order.
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    pub fn step_index(&self, name: &StepName) -> Option<usize> {
        self.steps.iter().position(|s| &s.name == name)
    }

    pub fn step(&self, name: &StepName) -> Option<&StepRecord> {
        self.steps.iter().find(|s| &s.name == name)
    }

    /// The validated definition of a step.
    pub fn step_spec(&self, name: &StepName) -> Option<&Step> {
        self.pipeline
            .as_ref()?
            .steps
            .iter()
            .find(|s| &s.name == name)
    }
}

/// What the controller knows about an agent from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub last_seen: u64,
}
