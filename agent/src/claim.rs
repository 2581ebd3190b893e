//! Claiming a delivered job: publish `Claimed` (confirmed), then ack; anything that is not a
//! job, or not signed by the controller when the agent checks signatures, is dead-lettered
//! with its reason. In two halves ([`take`], [`confirm`]) so that a job can be made ready
//! while its claim is in flight; a duplicate delivered meanwhile waits for it ([`inflight`]).

use crate::Shared;
use crate::inflight::{self, Duplicate, Settle};
use drover_amqp::Incoming;
use drover_protocol::message::{AttemptRef, Claimed, Message, StepJob};
use std::collections::hash_map::Entry;
use tokio_util::sync::CancellationToken;

/// A job [`take`] registered, its claim not yet published.
pub(crate) struct Taken {
    pub job: StepJob,
    incoming: Incoming,
    settle: Settle,
}

/// The first half of a claim: dead-letters what is not a job (or not signed), drops a
/// duplicate of an attempt already held (once that attempt's claim is confirmed), acks and
/// drops a job the controller revoked, and registers the job as running here. The job is not
/// claimed yet: its program must not run before [`confirm`] says so.
pub(crate) async fn take(shared: &Shared, incoming: Incoming) -> Option<Taken> {
    if let Some(verifier) = &shared.config.job_verifier
        && let Err(e) = verifier.verify(incoming.payload(), incoming.signature())
    {
        dead_letter(shared, &incoming, e.code(), &e.to_string()).await;
        return None;
    }
    let job = match &incoming.message {
        Ok((_, Message::StepJob(job))) => job.clone(),
        Ok((_, other)) => {
            let why = format!("a {} message does not belong on a job queue", other.kind());
            dead_letter(shared, &incoming, "wrong_queue", &why).await;
            return None;
        }
        Err(e) => {
            dead_letter(shared, &incoming, e.code(), &e.to_string()).await;
            return None;
        }
    };
    if let Err(highest) = shared.epochs.admit(job.epoch) {
        tracing::warn!(
            "refusing {}/{} attempt {}: it carries epoch {}, below {highest}, so a deposed \
             controller sent it (the active one republishes its queued jobs); dropped",
            job.run_id,
            job.step,
            job.attempt,
            job.epoch
        );
        let _ = incoming.ack().await;
        return None;
    }
    let attempt = attempt_of(&job);
    // The claim in flight is looked up under the lock of `running`, which [`confirm`] holds
    // to forget a failed attempt before it ends the claim: a duplicate either waits for the
    // claim or finds the attempt claimed. The revoked jobs too ([`Shared::revoke`]).
    let taken = {
        let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        match shared.revoked.reason(&attempt) {
            Some(why) => Take::Revoked(why),
            None => match running.entry(attempt.clone()) {
                Entry::Occupied(_) => Take::Duplicate(shared.inflight.pending(&attempt)),
                Entry::Vacant(entry) => {
                    entry.insert(CancellationToken::new());
                    Take::New(shared.inflight.begin(attempt))
                }
            },
        }
    };
    match taken {
        Take::New(settle) => Some(Taken {
            job,
            incoming,
            settle,
        }),
        Take::Duplicate(pending) => {
            drop_duplicate(&job, incoming, pending);
            None
        }
        Take::Revoked(why) => {
            // The controller ended the step already: nothing is claimed or reported.
            tracing::info!(
                "dropping {}/{} attempt {}: the controller revoked it ({why})",
                job.run_id,
                job.step,
                job.attempt
            );
            shared.revoked.dropped_one();
            let _ = incoming.ack().await;
            None
        }
    }
}

/// What [`take`] makes of a job.
enum Take {
    /// Registered here; its claim is to be published.
    New(Settle),
    /// Held here already (its claim may still be in flight).
    Duplicate(Option<inflight::Pending>),
    /// Revoked by the controller, for this reason.
    Revoked(String),
}

/// Acks a duplicate of an attempt held here, in a task of its own once the attempt's claim in
/// flight (if any) is confirmed; hands it back to the queue if that claim fails.
fn drop_duplicate(job: &StepJob, incoming: Incoming, pending: Option<inflight::Pending>) {
    let what = format!("{}/{} attempt {}", job.run_id, job.step, job.attempt);
    tokio::spawn(async move {
        let fate = match pending {
            Some(pending) => pending.outcome().await,
            None => Duplicate::Ack,
        };
        match fate {
            Duplicate::Ack => {
                tracing::info!("{what} is already running here; dropping the duplicate");
                let _ = incoming.ack().await;
            }
            Duplicate::Requeue => {
                tracing::info!("{what} was not claimed here; handing its duplicate back");
                let _ = incoming.requeue().await;
            }
        }
    });
}

/// The second half of a claim: publishes `Claimed` for a job [`take`] registered (with other
/// events where the job allows, [`crate::reports`]); `Some` once
/// the broker confirmed it, to be acked ([`Confirmed::ack`]) after the job is told it may run
/// (the ack needs no answer, so nothing waits for it). Otherwise the job is handed back and no
/// longer registered.
pub(crate) async fn confirm(shared: &Shared, taken: Taken) -> Option<Confirmed> {
    let Taken {
        job,
        incoming,
        settle,
    } = taken;
    let claimed = Message::Claimed(Claimed {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: shared.id.clone(),
    });
    if let Err(e) = shared.reports.send(claimed, job.event_batches).await {
        tracing::warn!(
            "cannot claim {}/{}: {e}; handing it back",
            job.run_id,
            job.step
        );
        {
            let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            running.remove(&attempt_of(&job));
            settle.done(false);
        }
        let _ = incoming.requeue().await;
        return None;
    }
    settle.done(true);
    Some(Confirmed { job, incoming })
}

/// A job whose claim the broker confirmed, its delivery not yet acked.
pub(crate) struct Confirmed {
    job: StepJob,
    incoming: Incoming,
}

impl Confirmed {
    /// Acks the claimed job's delivery.
    pub(crate) async fn ack(self) {
        if let Err(e) = self.incoming.ack().await {
            // The job may be delivered again; the controller fences the duplicate claim.
            tracing::warn!(
                "cannot ack the claimed job {}/{}: {e}",
                self.job.run_id,
                self.job.step
            );
        }
    }
}

pub(crate) fn attempt_of(job: &StepJob) -> AttemptRef {
    AttemptRef {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
    }
}

/// Moves a delivery to the dead-letter queue with `reason` (a short code) in its header.
async fn dead_letter(shared: &Shared, incoming: &Incoming, reason: &str, why: &str) {
    tracing::warn!("dead-lettering a message from {}: {why}", incoming.queue());
    match shared
        .publisher
        .dead_letter(incoming.payload(), incoming.queue(), reason)
        .await
    {
        Ok(()) => {
            let _ = incoming.ack().await;
        }
        Err(e) => {
            tracing::warn!("cannot publish the dead letter ({e}); rejecting it instead");
            let _ = incoming.reject().await;
        }
    }
}
