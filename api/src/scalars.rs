//! Scalars a step reports while it runs (`Logger.report_scalar`): the batch its agent relays,
//! the stored series as read back, and the event that tells a live view to read them again.
//!
//! A point belongs to a series of a title of a step (one chart per title, one line per series).
//! The controller keeps at most [`MAX_POINTS_PER_SERIES`] points of a series: past that it keeps
//! every other point and doubles the series' `stride`, so a long series stays evenly sampled
//! over its whole length, and its latest point is always kept as `last`.

use drover_protocol::{AttemptNo, RunId, StepName};
use serde::{Deserialize, Serialize};

/// The most points kept of one series; past it the series is downsampled.
pub const MAX_POINTS_PER_SERIES: usize = 10_000;
/// The most series one step may report (titles times series).
pub const MAX_SERIES_PER_STEP: usize = 1_000;
/// The most points one batch may carry.
pub const MAX_POINTS_PER_BATCH: usize = 5_000;
/// The longest title or series name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// One reported value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarPoint {
    pub title: String,
    pub series: String,
    pub iteration: i64,
    pub value: f64,
}

/// `POST /api/v1/runs/{run}/steps/{step}/scalars`: points of the step's `attempt`, which must be
/// the step's current attempt and running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarBatch {
    pub attempt: AttemptNo,
    pub points: Vec<ScalarPoint>,
}

/// What `POST .../scalars` answers (200): how many points were taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalarsStored {
    pub stored: u64,
}

/// One series as stored, its points in the order they were reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    pub step: StepName,
    pub title: String,
    pub series: String,
    /// `[iteration, value]` pairs: every `stride`-th point reported.
    pub points: Vec<(i64, f64)>,
    /// 1 until the series outgrew [`MAX_POINTS_PER_SERIES`], then doubled each time it did.
    pub stride: u64,
    /// How many points were reported.
    pub count: u64,
    /// The latest point reported, kept whatever the stride.
    pub last: (i64, f64),
}

/// `GET /api/v1/runs/{run}/scalars[?step=S]`: every series of the run (or of one step), by step
/// in the run's order, then title, then series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarList {
    pub run_id: RunId,
    pub series: Vec<SeriesView>,
}

/// `GET /api/v1/runs/{run}/scalars/stream[?step=S]`: the scalars of `step` changed; read them
/// again (`GET .../scalars?step=S`). Sent at most about twice a second per step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalarsChanged {
    pub step: StepName,
}

impl crate::SseEvent for ScalarsChanged {
    const NAME: &'static str = "scalars";
}
