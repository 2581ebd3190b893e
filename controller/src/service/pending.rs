//! Deliveries whose state change is written but not yet flushed: a batch of events that
//! publishes nothing (a `Claimed`, a heartbeat, a `Finished` that readies no step) waits for
//! the next flush instead of paying for its own, and is acked after it.

use crate::logs::archive::EndedLog;
use drover_amqp::Incoming;
use drover_protocol::RunId;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// Most deliveries held unacked for a flush: well below the consumers' prefetch (64), so
/// holding them never stops a consumer.
const MOST_DELIVERIES: usize = 32;
/// Longest a written change waits for its flush.
pub(super) const MOST_DELAY: Duration = Duration::from_millis(5);

/// What a flush settles once it is done.
#[derive(Default)]
pub(super) struct Pending {
    /// Acked after the flush; requeued if it fails.
    pub deliveries: Vec<Incoming>,
    /// Runs changed, for what follows a durable change (ended runs noted and let go).
    pub runs: BTreeSet<RunId>,
    /// Ended attempts whose logs are archived once their end is durable.
    pub ended_logs: Vec<EndedLog>,
    /// When the oldest change was written.
    since: Option<Instant>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.runs.is_empty() && self.ended_logs.is_empty()
    }

    pub fn add(
        &mut self,
        deliveries: impl IntoIterator<Item = Box<Incoming>>,
        runs: BTreeSet<RunId>,
        ended_logs: Vec<EndedLog>,
    ) {
        self.since.get_or_insert_with(Instant::now);
        self.deliveries.extend(deliveries.into_iter().map(|d| *d));
        self.runs.extend(runs);
        self.ended_logs.extend(ended_logs);
    }

    /// When the held changes must be flushed at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + MOST_DELAY)
    }

    /// Whether they must be flushed now.
    pub fn due(&self) -> bool {
        self.deliveries.len() >= MOST_DELIVERIES
            || self.deadline().is_some_and(|at| at <= Instant::now())
    }
}
