//! Queue consumption within the slot limit: claim a job (publish `Claimed`, then ack), run it,
//! and never hold more jobs than free slots so idle agents elsewhere can take the rest.

use crate::{Shared, heartbeat, job};
use drover_protocol::amqp::{Consumer, Incoming, Target};
use drover_protocol::message::{AttemptRef, Claimed, Message, StepJob};
use futures_util::future::select_all;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves the queues until `shutdown`, then drains and cancels `stopped`.
pub async fn serve(
    shared: Arc<Shared>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency as usize));
    let mut consumers: Vec<Consumer> = Vec::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        if consumers.is_empty() {
            match open(&shared).await {
                Ok(c) => consumers = c,
                Err(e) => {
                    tracing::error!("cannot consume the job queues: {e}; retrying in {backoff:?}");
                    drop(permit);
                    if pause(&shutdown, &mut backoff).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let next = tokio::select! {
            next = next_delivery(&mut consumers) => next,
            _ = shutdown.cancelled() => break,
        };
        match next {
            Some(incoming) => {
                backoff = Duration::from_millis(200);
                if let Some(job) = claim(&shared, &incoming).await {
                    start(&shared, &jobs, job, permit);
                }
            }
            None => {
                tracing::error!("a job queue consumer ended (broker connection lost?); reopening");
                close(&mut consumers).await;
                drop(permit);
                if pause(&shutdown, &mut backoff).await {
                    break;
                }
                continue;
            }
        }
        // Full: give back what the broker sent ahead so other agents can run it.
        if slots.available_permits() == 0 {
            close(&mut consumers).await;
        }
    }
    close(&mut consumers).await;
    drain(&shared, jobs).await;
    stopped.cancel();
}

/// Waits out the backoff (doubling it); true when shutdown came first.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.cancelled() => true,
    }
}

async fn open(shared: &Shared) -> Result<Vec<Consumer>, drover_protocol::amqp::AmqpError> {
    let prefetch = u16::try_from(shared.config.concurrency).unwrap_or(u16::MAX);
    let mut consumers = Vec::new();
    for q in &shared.config.queues {
        consumers.push(
            shared
                .broker
                .consume(&shared.config.names.user_queue(q), prefetch)
                .await?,
        );
    }
    Ok(consumers)
}

/// Closing a consumer's channel returns its unacked deliveries to the queue.
async fn close(consumers: &mut Vec<Consumer>) {
    for c in consumers.drain(..) {
        c.close().await;
    }
}

/// The next delivery from any queue; earlier queues win when several are ready.
async fn next_delivery(consumers: &mut [Consumer]) -> Option<Incoming> {
    let futures = consumers.iter_mut().map(|c| Box::pin(c.next()));
    let (next, _, _) = select_all(futures).await;
    match next {
        Some(Ok(incoming)) => Some(incoming),
        Some(Err(e)) => {
            tracing::error!("job queue: {e}");
            None
        }
        None => None,
    }
}

/// Dead-letters what is not a job; claims a job: registers it, publishes `Claimed`, acks.
async fn claim(shared: &Shared, incoming: &Incoming) -> Option<StepJob> {
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
    let target = Target::Queue(shared.config.names.events());
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

fn start(shared: &Arc<Shared>, jobs: &TaskTracker, job: StepJob, permit: OwnedSemaphorePermit) {
    let attempt = AttemptRef {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
    };
    let cancel = shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&attempt)
        .cloned()
        .unwrap_or_default();
    let shared = shared.clone();
    jobs.spawn(async move {
        job::run(shared.clone(), job, cancel).await;
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&attempt);
        drop(permit);
    });
}

/// Lets running jobs finish within the drain timeout (or until `abort`), then aborts the rest.
async fn drain(shared: &Shared, jobs: TaskTracker) {
    shared.draining.store(true, Ordering::Relaxed);
    heartbeat::send(shared).await;
    jobs.close();
    let running = shared.running_attempts().len();
    if running > 0 {
        tracing::info!(
            "draining: waiting up to {:?} for {running} running step(s)",
            shared.config.drain_timeout
        );
    }
    let why = tokio::select! {
        _ = jobs.wait() => return,
        _ = tokio::time::sleep(shared.config.drain_timeout) => "drain timeout",
        _ = shared.abort.cancelled() => "asked to abort",
    };
    tracing::warn!("{why}: aborting the steps still running");
    for attempt in shared.running_attempts() {
        shared.cancel(&attempt);
    }
    jobs.wait().await;
}
