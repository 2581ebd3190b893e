//! Why warm parents stop: every stop or replacement of a parent goes through [`Tally::stopped`],
//! which logs its reason at info level and counts it, so the agent's heartbeat can report the
//! counts (`/metrics` on the controller) and no parent is ever replaced without a word.

use drover_protocol::message::WarmParents;
use std::sync::Mutex;

/// Why a parent was stopped or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its process had ended when the agent next looked.
    Died,
    /// A preloaded module started a thread: the parent exited by itself.
    Thread,
    /// It could not preload (no answer in time, a broken control socket).
    Preload,
    /// It could not fork a step.
    Fork,
    /// All parents held more than `--python-prewarm-memory`.
    Memory,
    /// No fork for `--python-prewarm-idle`.
    Idle,
    /// The pool stopped with its agents.
    Shutdown,
}

impl Stop {
    /// The reason's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Died => "died",
            Stop::Thread => "thread",
            Stop::Preload => "preload_failed",
            Stop::Fork => "fork_failed",
            Stop::Memory => "memory",
            Stop::Idle => "idle",
            Stop::Shutdown => "shutdown",
        }
    }
}

/// Starts and stops of one pool's parents.
#[derive(Debug, Default)]
pub struct Tally(Mutex<WarmParents>);

impl Tally {
    pub fn started(&self) {
        self.lock().started += 1;
    }

    /// Logs the stop of parent `pid` of `key` (after `forks` forks) for `reason`, with `detail`
    /// saying what happened, and counts it.
    pub fn stopped(&self, key: &str, pid: i32, forks: u64, reason: Stop, detail: &str) {
        tracing::info!(
            "warm parent {pid} of environment {key} stopped after {forks} forks ({}): {detail}",
            reason.name()
        );
        *self
            .lock()
            .stopped
            .entry(reason.name().to_string())
            .or_default() += 1;
    }

    /// The counts so far.
    pub fn counts(&self) -> WarmParents {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WarmParents> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
