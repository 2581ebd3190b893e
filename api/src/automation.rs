//! The JSON documents of schedules (`/api/v1/schedules`) and triggers (`/api/v1/triggers`):
//! runs the controller submits by itself, on a cron cadence or when another run ends.

use drover_protocol::RunId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What submitted a run without someone asking: a schedule's slot or a trigger's upstream run.
/// Part of [`crate::RunView`] as `fired_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredBy {
    pub kind: FiredByKind,
    /// The schedule's or trigger's name.
    pub name: String,
    /// The schedule's slot (ms since the epoch) this run is for; `None` for `run-now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// The run whose end fired the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<RunId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FiredByKind {
    Schedule,
    Trigger,
}

/// Where the pipeline a schedule or trigger submits comes from: one of `from_run` (the
/// pipeline as that run was submitted, its parameter values as defaults) or `pipeline` (the
/// text of a TOML pipeline file), captured when it is added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Parameter values, over the run's (for `from_run`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// The body of `POST /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddSchedule {
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week) or six with seconds first.
    pub cron: String,
    /// An IANA time zone (`Europe/Paris`) the cron fields are read in; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Fire even while the schedule's previous run is unfinished.
    #[serde(default)]
    pub overlap: bool,
    #[serde(flatten)]
    pub source: PipelineSource,
}

/// One schedule, as `GET /api/v1/schedules` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[serde(default)]
    pub overlap: bool,
    #[serde(default)]
    pub paused: bool,
    /// The pipeline's project and name.
    pub project: String,
    pub pipeline: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<RunId>,
    pub created_at: u64,
    /// The last slot that fired a run.
    #[serde(default)]
    pub last_fired: Option<Firing>,
    /// The last slot skipped, and why.
    #[serde(default)]
    pub last_skipped: Option<Skipped>,
    /// Slots skipped so far.
    #[serde(default)]
    pub skipped: u64,
    /// The next slot (`None` while paused or when the expression has no future slot).
    #[serde(default)]
    pub next_slot: Option<u64>,
}

/// A run a schedule or trigger submitted (also the answer of `POST .../run-now`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// The schedule's slot; `None` for `run-now` and for triggers.
    #[serde(default)]
    pub slot: Option<u64>,
    pub at: u64,
    pub run_id: RunId,
    /// The trigger's upstream run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<RunId>,
}

/// A slot that did not submit a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub slot: u64,
    pub at: u64,
    pub reason: String,
}

/// `GET /api/v1/schedules`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// Which end of an upstream run fires a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOn {
    Success,
    Failure,
}

impl TriggerOn {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOn::Success => "success",
            TriggerOn::Failure => "failure",
        }
    }
}

/// The body of `POST /api/v1/triggers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddTrigger {
    pub name: String,
    pub on: TriggerOn,
    /// The upstream pipeline, `PROJECT/NAME`.
    pub upstream: String,
    /// The downstream parameter that receives the upstream run's id; default `trigger_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_name: Option<String>,
    #[serde(flatten)]
    pub source: PipelineSource,
}

/// One trigger, as `GET /api/v1/triggers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerView {
    pub name: String,
    pub on: TriggerOn,
    /// `PROJECT/NAME` of the upstream pipeline.
    pub upstream: String,
    /// `PROJECT/NAME` of the pipeline it submits.
    pub downstream: String,
    pub param_name: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<RunId>,
    pub created_at: u64,
    /// Runs it submitted so far.
    #[serde(default)]
    pub fired: u64,
    #[serde(default)]
    pub last_fired: Option<Firing>,
}

/// `GET /api/v1/triggers`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerList {
    pub triggers: Vec<TriggerView>,
}
