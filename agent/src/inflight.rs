//! Claims in flight: a job delivered again while this agent's `Claimed` for it is unconfirmed
//! is held until that claim settles, then acked (claimed) or handed back (the claim failed).
//!
//! A redelivery comes from the broker returning the first delivery (its channel closed), so the
//! first copy can no longer be handed back; acking the second while the first claim might still
//! fail would lose the job.

use drover_protocol::message::AttemptRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The attempts whose claim is being published, each with a switch that says how it ended.
#[derive(Default)]
pub(crate) struct InFlight {
    claims: Mutex<HashMap<AttemptRef, watch::Receiver<Option<bool>>>>,
}

/// The end of one claim: [`Settle::done`] with whether the broker confirmed it. Dropped
/// without that (the claiming task ended early), the claim counts as failed.
pub(crate) struct Settle {
    inflight: Arc<InFlight>,
    attempt: AttemptRef,
    outcome: watch::Sender<Option<bool>>,
}

/// What to do with a duplicate delivery.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Duplicate {
    /// The attempt is claimed here: the copy is acked and dropped.
    Ack,
    /// The claim failed: the copy goes back to the queue to be claimed again.
    Requeue,
}

impl InFlight {
    /// Records that `attempt`'s claim is being published.
    pub fn begin(self: &Arc<Self>, attempt: AttemptRef) -> Settle {
        let (outcome, rx) = watch::channel(None);
        self.lock().insert(attempt.clone(), rx);
        Settle {
            inflight: self.clone(),
            attempt,
            outcome,
        }
    }

    /// The claim of `attempt` in flight, if one is: a duplicate waits for it.
    pub fn pending(&self, attempt: &AttemptRef) -> Option<Pending> {
        self.lock().get(attempt).cloned().map(Pending)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<AttemptRef, watch::Receiver<Option<bool>>>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A claim in flight that a duplicate waits for.
pub(crate) struct Pending(watch::Receiver<Option<bool>>);

impl Pending {
    /// What becomes of the duplicate once the claim settles.
    pub async fn outcome(mut self) -> Duplicate {
        match self.0.wait_for(Option::is_some).await.map(|o| *o) {
            Ok(Some(true)) => Duplicate::Ack,
            _ => Duplicate::Requeue,
        }
    }
}

impl Settle {
    /// Ends the claim: `confirmed` says whether the broker confirmed `Claimed`.
    pub fn done(self, confirmed: bool) {
        self.outcome.send_replace(Some(confirmed));
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.inflight.lock().remove(&self.attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::{RunId, StepName};
    use std::sync::Arc;
    use std::time::Duration;

    fn attempt(n: u32) -> AttemptRef {
        AttemptRef {
            run_id: RunId::new("0123456789abcdef0123456789abcdef").unwrap(),
            step: StepName::new("s").unwrap(),
            attempt: drover_protocol::AttemptNo(n),
        }
    }

    /// Starts asking for a duplicate's fate and checks it is still waiting.
    async fn waiting(inflight: &Arc<InFlight>) -> tokio::task::JoinHandle<Duplicate> {
        let asked = tokio::spawn({
            let pending = inflight.pending(&attempt(1)).expect("a claim in flight");
            async move { pending.outcome().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!asked.is_finished(), "held while the claim is in flight");
        asked
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_claim_and_is_acked_once_it_is_confirmed() {
        let inflight = Arc::new(InFlight::default());
        let settle = inflight.begin(attempt(1));
        let asked = waiting(&inflight).await;
        assert!(inflight.pending(&attempt(2)).is_none(), "another attempt");
        settle.done(true);
        assert_eq!(asked.await.unwrap(), Duplicate::Ack);
    }

    #[tokio::test]
    async fn a_duplicate_goes_back_to_the_queue_when_the_claim_fails_or_is_abandoned() {
        let inflight = Arc::new(InFlight::default());
        let settle = inflight.begin(attempt(1));
        let asked = waiting(&inflight).await;
        settle.done(false);
        assert_eq!(asked.await.unwrap(), Duplicate::Requeue);

        let settle = inflight.begin(attempt(1));
        let asked = waiting(&inflight).await;
        drop(settle);
        assert_eq!(asked.await.unwrap(), Duplicate::Requeue);
    }

    #[test]
    fn a_settled_claim_is_forgotten() {
        let inflight = Arc::new(InFlight::default());
        inflight.begin(attempt(1)).done(false);
        assert!(inflight.lock().is_empty());
        assert!(inflight.pending(&attempt(1)).is_none());
    }
}
