//! Runs executed by their submitter: what the submitting process reports about each step of
//! such a run (it takes the step's attempt, keeps its lease, ends it) and what it gets back.
//!
//! A decorator pipeline's `run_locally()` (and `PipelineController.start_locally()` with its
//! steps run locally) runs its driver and steps in the calling process; the run is recorded with
//! the controller as `external`, which dispatches nothing and takes these reports instead of an
//! agent's `Claimed`, `Heartbeat` and `Finished` (see ARCHITECTURE.md, "Runs executed by their
//! submitter").

use crate::StepStatus;
use drover_protocol::message::{ArtifactRef, Outcome};
use drover_protocol::{AgentId, AttemptNo, OutputName, RunId, StepName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /api/v1/runs/{run}/steps/{step}/report`: one report about one step of an external
/// run, from the process running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The process running the step (`local-<host>-<pid>`), recorded as its attempts' agent.
    pub runner: AgentId,
    pub report: Report,
}

/// What happened to the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// The runner takes the step's queued attempt (idempotent while it runs it). A step still
    /// pending (its parents, or a retry's backoff) or already ended is answered as it is.
    Started,
    /// The attempt still runs: its lease is renewed.
    Alive { attempt: AttemptNo },
    /// The runner will not run the step (a `pre_execute_callback` returned False): a step not
    /// yet running ends `skipped` with `reason`, and so do the steps that depend on it.
    Skipped { reason: String },
    /// The attempt ended; its outputs are already stored as blobs.
    Finished {
        attempt: AttemptNo,
        outcome: Outcome,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        outputs: BTreeMap<OutputName, ArtifactRef>,
    },
}

/// The answer (200): where the step stands once the report is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReported {
    pub run_id: RunId,
    pub step: StepName,
    /// The step's current attempt (0 before its first).
    pub attempt: AttemptNo,
    pub status: StepStatus,
    /// How long an attempt lives without another report, in ms.
    pub lease_ms: u64,
    /// Stop the attempt and report it `aborted`: the run or the step is being aborted.
    #[serde(default)]
    pub abort_requested: bool,
    /// The step's outputs once it succeeded or was a cache hit.
    #[serde(default)]
    pub outputs: BTreeMap<OutputName, ArtifactRef>,
}

/// `POST /api/v1/runs/{run}/steps/{step}/callback`: the answer of the process running the
/// pipeline's logic to a step waiting for its `pre_execute_callback` (`await_callback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    /// Run the step (true) or skip it and its descendants (false).
    pub proceed: bool,
}

/// What `POST .../callback` answers (200): the step's status once the answer is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAnswered {
    pub run_id: RunId,
    pub step: StepName,
    pub status: StepStatus,
}

/// `POST /api/v1/runs/{run}/steps/{step}/log?attempt=N&offset=K` (body: the bytes) answers
/// this (200): the attempt's log size once the bytes are appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAppended {
    pub attempt: AttemptNo,
    pub size: u64,
}
