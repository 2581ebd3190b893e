//! The payloads of the controller's server-sent event streams, each with its event name.
//!
//! `GET /api/v1/events`: [`Hello`], then [`RunChanged`]. `GET /api/v1/runs/{run}/stream`:
//! [`RunView`](crate::RunView) as `run`, then [`RunEnded`]. `GET .../log/stream`: [`LogData`],
//! [`LogNote`], [`AttemptStarted`], [`LogEnded`] or [`StreamError`].

use crate::status::{RunStatus, StepStatus};
use crate::views::RunView;
use drover_protocol::{AttemptNo, RunId};
use serde::{Deserialize, Serialize};

/// A payload of one event stream, sent as `event: NAME` with its JSON as `data:`.
pub trait SseEvent: Serialize {
    const NAME: &'static str;
}

/// First event of `/api/v1/events`: the stream is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Hello {}

impl SseEvent for Hello {
    const NAME: &'static str = "hello";
}

/// A run changed; `None` when changes were missed and every run may have changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunChanged {
    pub run_id: Option<RunId>,
}

impl SseEvent for RunChanged {
    const NAME: &'static str = "run";
}

/// The run's whole view, at once and whenever it changes.
impl SseEvent for RunView {
    const NAME: &'static str = "run";
}

/// The run has ended; the stream closes after this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnded {
    pub status: RunStatus,
}

impl SseEvent for RunEnded {
    const NAME: &'static str = "end";
}

/// Log bytes of one attempt; the event id is `attempt:end-offset`, so `Last-Event-ID` resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogData {
    pub attempt: AttemptNo,
    /// Where `data` starts in the attempt's log.
    pub offset: u64,
    /// The raw bytes, base64 (standard alphabet, padded).
    pub data: String,
}

impl SseEvent for LogData {
    const NAME: &'static str = "log";
}

/// Something about the followed attempt's log that is not part of its bytes: where it reached
/// the controller late because the broker was unreachable. Sent once per delay, before the
/// attempt's `end` (the agent reports delays when the attempt ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogNote {
    pub attempt: AttemptNo,
    /// The first byte of the log that was delayed.
    pub offset: u64,
    #[serde(default)]
    pub delayed_ms: u64,
    /// What happened, for people: "log of attempt 1 delayed 47 s from byte 1234 (...)".
    pub text: String,
}

impl SseEvent for LogNote {
    const NAME: &'static str = "note";
}

/// A new attempt started while following the latest one; offsets start again at 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptStarted {
    pub attempt: AttemptNo,
    pub previous: AttemptNo,
}

impl SseEvent for AttemptStarted {
    const NAME: &'static str = "attempt";
}

/// The step (or the followed attempt) is over and every byte was sent: every byte its agent
/// reported, or as many as arrived within the controller's patience for a log's last chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEnded {
    /// The step's status; `None` when the run no longer has the step.
    pub status: Option<StepStatus>,
    pub attempt: AttemptNo,
    /// The log's size: the offset after the last byte sent.
    pub size: u64,
    /// Bytes the agent reported that had not reached the controller when the stream stopped
    /// waiting for them (the agent died or cannot reach the broker); absent when none. They
    /// are stored if they arrive later: read the log again then.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SseEvent for LogEnded {
    const NAME: &'static str = "end";
}

/// The stream cannot go on (the log cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamError {
    pub error: String,
}

impl SseEvent for StreamError {
    const NAME: &'static str = "error";
}
