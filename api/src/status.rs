//! The status of a run, of a step and of one attempt, as stored and as the API shows them.

use drover_protocol::message::Outcome;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Aborted,
    /// Invalid at the controller; nothing was dispatched.
    Rejected,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Aborted,
        RunStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
            RunStatus::Rejected => "rejected",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }
}

/// A step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting on parents, on a queue's limit, or on the backoff before a retry.
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cached,
    Skipped,
    Aborted,
}

impl StepStatus {
    pub const ALL: [StepStatus; 8] = [
        StepStatus::Pending,
        StepStatus::Queued,
        StepStatus::Running,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Cached,
        StepStatus::Skipped,
        StepStatus::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cached => "cached",
            StepStatus::Skipped => "skipped",
            StepStatus::Aborted => "aborted",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Cached
                | StepStatus::Skipped
                | StepStatus::Aborted
        )
    }

    /// Whether children may use this step's outputs (it ran, or the cache had them).
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Cached)
    }
}

/// How an attempt ended, including the controller's own verdict `lost` (lease expired).
/// `lost` and `released` attempts are not the step's failures: neither counts against its
/// `retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
    Error,
    /// No heartbeat within the lease: the agent is presumed gone.
    Lost,
    /// The agent stopped the step and handed it back (drained past its drain timeout).
    Released,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::TimedOut,
        AttemptOutcome::Aborted,
        AttemptOutcome::Error,
        AttemptOutcome::Lost,
        AttemptOutcome::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Aborted => "aborted",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Released => "released",
        }
    }
}

impl From<Outcome> for AttemptOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Succeeded => AttemptOutcome::Succeeded,
            Outcome::Failed => AttemptOutcome::Failed,
            Outcome::TimedOut => AttemptOutcome::TimedOut,
            Outcome::Aborted => AttemptOutcome::Aborted,
            Outcome::Error => AttemptOutcome::Error,
            Outcome::Released => AttemptOutcome::Released,
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(RunStatus, StepStatus, AttemptOutcome);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_serde_names() {
        for s in RunStatus::ALL {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
        }
        for s in StepStatus::ALL {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
        }
        for o in AttemptOutcome::ALL {
            let json = serde_json::to_string(&o).unwrap_or_default();
            assert_eq!(json, format!("\"{o}\""));
        }
    }
}
