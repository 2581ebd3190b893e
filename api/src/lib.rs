//! The controller's HTTP contract, written once: the JSON views of `/api/v1`, the payloads of
//! its server-sent event streams, the status enums and the error body. The controller
//! serialises these types and every Rust client deserialises the same ones; golden files in
//! `api/tests/golden/` pin their JSON, and the Python SDK's tests read the same files.
//!
//! Readers are tolerant: fields a newer controller may add are ignored, and fields an older one
//! lacks default where a default means something.

pub mod automation;
pub mod dynamic;
pub mod error;
pub mod events;
pub mod external;
pub mod scalars;
pub mod status;
pub mod tasks;
pub mod views;

pub use automation::{
    AddSchedule, AddTrigger, FiredBy, FiredByKind, Firing, PipelineSource, ScheduleList,
    ScheduleView, Skipped, TriggerList, TriggerOn, TriggerView,
};
pub use dynamic::{AddStep, CallKey, StepAdded};
pub use error::{ApiError, ErrorCode, INACTIVE_HEADER, INACTIVE_STATES, STALE_HEADER};
pub use events::SseEvent;
pub use external::{
    CallbackAnswer, CallbackAnswered, LogAppended, Report, StepReport, StepReported,
};
pub use scalars::{
    ScalarBatch, ScalarList, ScalarPoint, ScalarsChanged, ScalarsStored, SeriesView,
};
pub use status::{AttemptOutcome, RunStatus, StepStatus};
pub use tasks::{RegisterTask, TaskList, TaskView};
pub use views::*;
