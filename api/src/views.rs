//! The JSON documents of `/api/v1` (times in ms since the epoch).

use crate::status::{AttemptOutcome, RunStatus, StepStatus};
use drover_protocol::message::StartKind;
use drover_protocol::{AgentId, AttemptNo, Digest, FileName, QueueName, RunId, StepName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of `GET /api/v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub version: String,
    pub status: RunStatus,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// How many steps have each status.
    #[serde(default)]
    pub steps: BTreeMap<StepStatus, usize>,
    #[serde(default)]
    pub url: String,
}

/// `GET /api/v1/runs`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// When more runs match: the value of `?after=` that lists the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<RunId>,
}

/// `GET /api/v1/runs/{run}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    pub run_id: RunId,
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub version: String,
    pub status: RunStatus,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// The run this one was submitted again from (`drover rerun`, the run page's "New run").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<RunId>,
    /// The schedule or trigger that submitted this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<crate::automation::FiredBy>,
    #[serde(default)]
    pub url: String,
    /// Executed by the process that submitted it (`run_locally()`,
    /// `start_locally(run_pipeline_steps_locally=True)`), not by agents.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// In topological order.
    #[serde(default)]
    pub steps: Vec<StepView>,
}

/// Why a step whose parents are done is still pending (`StepView::pending_reason`):
/// `{"reason": "queue_full", "queue": Q}` or `{"reason": "waiting_for_callback"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PendingReason {
    /// Its queue has as many steps queued or running as its limit allows.
    QueueFull { queue: QueueName },
    /// The process running the pipeline's logic has not answered its `pre_execute_callback`.
    WaitingForCallback,
}

impl std::fmt::Display for PendingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingReason::QueueFull { queue } => write!(f, "queue {queue} full"),
            PendingReason::WaitingForCallback => f.write_str("waiting for callback"),
        }
    }
}

/// A stored output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputView {
    pub digest: Digest,
    pub size: u64,
    pub file_name: FileName,
}

/// What a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Command,
    Function,
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: AttemptNo,
    #[serde(default)]
    pub agent: Option<AgentId>,
    #[serde(default)]
    pub queued_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `None` while the attempt runs.
    #[serde(default)]
    pub outcome: Option<AttemptOutcome>,
    #[serde(default)]
    pub message: Option<String>,
    /// How a Python function step's process started (`warm` or `cold`); `None` for command
    /// steps and attempts that ended before their process started.
    #[serde(default)]
    pub start: Option<StartKind>,
    /// The attempt's complete log as kept in the artifact store, when the controller keeps it
    /// there (with the state journal and a shared store); `None` while the log is only in the
    /// controller's data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_archive: Option<ArchivedLog>,
}

/// An attempt's complete log, stored in the artifact store as the blob `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedLog {
    pub digest: Digest,
    pub size: u64,
}

/// A step within a [`RunView`], and `GET /api/v1/runs/{run}/steps/{step}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    pub name: StepName,
    pub status: StepStatus,
    pub queue: QueueName,
    #[serde(default)]
    pub parents: Vec<StepName>,
    /// `STEP.OUTPUT` of every artifact consumed.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputView>,
    /// The current attempt; 0 until the first dispatch.
    #[serde(default)]
    pub attempt: AttemptNo,
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    #[serde(default)]
    pub cache_key: Option<String>,
    #[serde(default)]
    pub cache_hit: bool,
    pub kind: StepKind,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub function: Option<FunctionView>,
    /// Environment variables the step sets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: u32,
    /// When the next attempt is due, while a pending step waits out a retry backoff.
    #[serde(default)]
    pub retry_at: Option<u64>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
    /// Why a pending step whose parents are done is not dispatched yet; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<PendingReason>,
    /// The run's driver (a decorator pipeline's function), which adds the other steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub driver: bool,
}

/// A function step's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionView {
    pub entry: String,
    pub source: String,
    /// Keyword arguments as JSON text; `"${STEP.OUTPUT}"` values are artifacts (see `inputs`).
    #[serde(default)]
    pub kwargs: BTreeMap<String, String>,
    #[serde(default)]
    pub requirements: Vec<String>,
    #[serde(default)]
    pub python: Option<String>,
}

/// One agent of `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: AgentId,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub queues: Vec<QueueName>,
    /// 0: services mode, no limit.
    #[serde(default)]
    pub slots: u32,
    #[serde(default)]
    pub busy: u32,
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_mib: u64,
    /// What builds its Python environments and why (`uv on PATH: /usr/bin/uv`); absent until
    /// the agent has chosen, and for older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    #[serde(default)]
    pub last_seen: u64,
    /// Heard from within the last few heartbeats.
    #[serde(default)]
    pub alive: bool,
    /// Steps the controller believes this agent is running.
    #[serde(default)]
    pub current_steps: Vec<AgentStep>,
}

/// A step an agent is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStep {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    #[serde(default)]
    pub started_at: Option<u64>,
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// One queue of `GET /api/v1/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub name: QueueName,
    /// The queue's name on the broker (namespaced).
    pub broker_queue: String,
    /// Whether the broker has the queue at all.
    #[serde(default)]
    pub exists: bool,
    #[serde(default)]
    pub messages: u32,
    #[serde(default)]
    pub consumers: u32,
    #[serde(default)]
    pub waiting_steps: usize,
    /// Steps of this queue an agent is running (agents ack a job when they claim it, so these
    /// are not in `messages`).
    #[serde(default)]
    pub running_steps: usize,
    /// Waiting plus running: the slots this queue needs now, what autoscalers scale on.
    #[serde(default)]
    pub active_steps: usize,
    #[serde(default)]
    pub warning: Option<String>,
}

/// `GET /api/v1/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
    /// Messages in the dead-letter queue now.
    #[serde(default)]
    pub dead_letters: u32,
    /// Messages this controller dead-lettered since it started, by reason.
    #[serde(default)]
    pub dead_lettered_by_controller: BTreeMap<String, u64>,
}

/// Whether the broker is reachable, as `GET /healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    Connected,
    Disconnected,
}

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// `GET /healthz` (200 when ok, 503 when degraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub broker: BrokerState,
}

impl Health {
    pub fn of(broker_connected: bool) -> Self {
        if broker_connected {
            Health {
                status: HealthStatus::Ok,
                broker: BrokerState::Connected,
            }
        } else {
            Health {
                status: HealthStatus::Degraded,
                broker: BrokerState::Disconnected,
            }
        }
    }
}

/// What `POST /api/v1/runs/{run}/abort` accepted (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortAccepted {
    pub run_id: RunId,
    /// The one step aborted, or `None` for the whole run.
    #[serde(default)]
    pub step: Option<StepName>,
}

/// A blob stored by `PUT /api/v1/blobs/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    pub digest: Digest,
    pub size: u64,
}

/// The body of `POST /api/v1/runs/{run}/rerun`: parameter values to change. Parameters not
/// named keep the values the earlier run was submitted with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunRequest {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Who asks (user@host), for display; default: the earlier run's submitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// What `POST /api/v1/runs/{run}/rerun` submitted (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunAccepted {
    /// The new run.
    pub run_id: RunId,
    pub rerun_of: RunId,
    /// The new run's parameter overrides: the earlier run's, changed by the request.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub url: String,
}

/// `GET /api/v1/csrf`: the token a write must carry (header `x-drover-csrf`) together with
/// the cookie this answer sets, when the controller has no access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrfToken {
    pub token: String,
    /// The cookie (`name=value`) the token goes with, for clients without a cookie jar.
    pub cookie: String,
}

impl CsrfToken {
    /// The request header a write carries the token in (with the cookie beside it).
    pub const HEADER: &'static str = "x-drover-csrf";
}

/// One stored output of `GET /api/v1/runs/{run}/artifacts`; `name` is what
/// `.../steps/{step}/artifacts/{name}` fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactView {
    pub step: StepName,
    pub name: String,
    pub file_name: FileName,
    pub size: u64,
    pub digest: Digest,
    #[serde(default)]
    pub url: String,
}

/// `GET /api/v1/runs/{run}/artifacts[?step=S]`: in the run's step order, then by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactList {
    pub run_id: RunId,
    pub artifacts: Vec<ArtifactView>,
}
