//! Claiming a delivered job: publish `Claimed` (confirmed), then ack; anything that is not a
//! job, or not signed by the controller when the agent checks signatures, is dead-lettered
//! with its reason.

use crate::Shared;
use drover_amqp::{AmqpError, Incoming, Target};
use drover_protocol::message::{AttemptRef, Claimed, Message, StepJob};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Dead-letters what is not a job, and with a verify key what is not signed by the
/// controller; claims a job: registers it, publishes `Claimed`, acks.
pub(crate) async fn claim(shared: &Shared, incoming: &Incoming) -> Option<StepJob> {
    if let Some(verifier) = &shared.config.job_verifier
        && let Err(e) = verifier.verify(incoming.payload(), incoming.signature())
    {
        dead_letter(shared, incoming, e.code(), &e.to_string()).await;
        return None;
    }
    let job = match &incoming.message {
        Ok((_, Message::StepJob(job))) => job.clone(),
        Ok((_, other)) => {
            let why = format!("a {} message does not belong on a job queue", other.kind());
            dead_letter(shared, incoming, "wrong_queue", &why).await;
            return None;
        }
        Err(e) => {
            dead_letter(shared, incoming, e.code(), &e.to_string()).await;
            return None;
        }
    };
    let attempt = AttemptRef {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
    };
    let duplicate = {
        let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&attempt) {
            true
        } else {
            running.insert(attempt.clone(), CancellationToken::new());
            false
        }
    };
    if duplicate {
        tracing::info!(
            "{}/{} attempt {} is already running here; dropping the duplicate",
            job.run_id,
            job.step,
            job.attempt
        );
        let _ = incoming.ack().await;
        return None;
    }
    let claimed = Message::Claimed(Claimed {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: shared.id.clone(),
    });
    if let Err(e) = publish_claim(shared, &claimed).await {
        tracing::warn!(
            "cannot claim {}/{}: {e}; handing it back",
            job.run_id,
            job.step
        );
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&attempt);
        let _ = incoming.requeue().await;
        return None;
    }
    if let Err(e) = incoming.ack().await {
        // The job may be delivered again; the controller fences the duplicate claim.
        tracing::warn!(
            "cannot ack the claimed job {}/{}: {e}",
            job.run_id,
            job.step
        );
    }
    Some(job)
}

/// How long a refused claim is tried again, the job held unacked, before it is handed back.
const CLAIM_RETRY: [Duration; 7] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// Publishes `Claimed`, trying again with growing pauses while the broker refuses it. A job
/// handed back counts as a delivery against a quorum queue's delivery limit, so handing it back
/// at once on every refusal (a queue electing a new leader refuses for a while) would
/// dead-letter a healthy job within a second; held here, it comes back at most once a minute.
async fn publish_claim(shared: &Shared, claimed: &Message) -> Result<(), AmqpError> {
    let mut pauses = CLAIM_RETRY.iter();
    loop {
        let Err(e) = shared.publisher.publish(&Target::Events, claimed).await else {
            return Ok(());
        };
        let Some(pause) = pauses.next().filter(|_| !shared.abort.is_cancelled()) else {
            return Err(e);
        };
        tracing::debug!("claim refused ({e}); trying again in {pause:?}");
        tokio::select! {
            () = tokio::time::sleep(*pause) => {}
            () = shared.abort.cancelled() => return Err(e),
        }
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
