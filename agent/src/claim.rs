//! Claiming a delivered job: publish `Claimed` (confirmed), then ack; anything that is not a
//! job, or not signed by the controller when the agent checks signatures, is dead-lettered
//! with its reason.

use crate::Shared;
use drover_amqp::{Incoming, Target};
use drover_protocol::message::{AttemptRef, Claimed, Message, StepJob};
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
    let target = Target::Events;
    if let Err(e) = shared.publisher.publish(&target, &claimed).await {
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
