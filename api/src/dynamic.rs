//! Dynamic runs: what a running step of a decorator pipeline (its driver, or a component that
//! calls a component) sends to add a step, and what it gets back.
//!
//! Steps never call this themselves: they ask their agent over the attempt's channel (see
//! ARCHITECTURE.md, "Drivers and dynamic runs") and the agent relays, with its own credentials.

use drover_protocol::spec::StepSpec;
use drover_protocol::{AttemptNo, RunId, StepName};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/runs/{run}/steps`: add `step` to a running dynamic run.
///
/// Accepted only from the current attempt of a running step of that run. `step.name` is the
/// base name (the component's); the controller names the step `base`, or `base_1`, `base_2`,
/// ... when that name is taken. Adding is idempotent per `(caller, call.seq)`: a second request
/// for a call that already has a step returns that step (`existing: true`) when `component`
/// and `digest` match, and is refused, naming the call, when they do not (a diverging replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddStep {
    /// The step making the call.
    pub caller: StepName,
    /// The caller's attempt; a request from an attempt that is not current is refused.
    pub attempt: AttemptNo,
    pub call: CallKey,
    pub step: StepSpec,
}

/// Identifies one component call within its caller, across the caller's attempts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallKey {
    /// 0 for the caller's first component call, then 1, 2, ...
    pub seq: u32,
    /// The component's name.
    pub component: String,
    /// A digest of the call's arguments that is stable across processes.
    pub digest: String,
}

/// What `POST /api/v1/runs/{run}/steps` answers (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAdded {
    pub run_id: RunId,
    /// The step's final name.
    pub step: StepName,
    /// The call already had this step (a replay); nothing was added.
    #[serde(default)]
    pub existing: bool,
}
