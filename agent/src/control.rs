//! Control messages from the controller: `Cancel` stops an attempt this agent runs; `Revoke`,
//! sent to every agent, names jobs that must not run (an aborted run's jobs still queued).

use crate::Shared;
use drover_amqp::Consumer;
use drover_protocol::message::{AttemptRef, Message};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Listens on the agent's control queue until `stopped`. The queue outlives a lost broker
/// connection and keeps what is sent meanwhile; it is consumed again (declared and bound again
/// too, in case it expired or went with its node) on the next connection.
pub async fn listen(shared: Arc<Shared>, first: Consumer, stopped: CancellationToken) {
    let mut consumer = Some(first);
    let mut delay = Duration::from_millis(100);
    loop {
        let mut current = match consumer.take() {
            Some(c) => c,
            None => match shared.broker.consume_agent_control(&shared.id).await {
                Ok(c) => {
                    tracing::info!("control queue open again");
                    delay = Duration::from_millis(100);
                    c
                }
                Err(e) => {
                    tracing::warn!("cannot open the control queue: {e}; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        if serve(&shared, &mut current, &stopped).await {
            current.close().await;
            return;
        }
        tracing::warn!("the control queue closed (broker connection lost?); opening it again");
        current.close().await;
    }
}

/// Handles control messages until `stopped` (true) or the consumer ends (false).
async fn serve(shared: &Shared, consumer: &mut Consumer, stopped: &CancellationToken) -> bool {
    loop {
        let incoming = tokio::select! {
            next = consumer.next() => next,
            _ = stopped.cancelled() => return true,
        };
        let incoming = match incoming {
            Some(Ok(i)) => i,
            Some(Err(e)) => {
                tracing::warn!("control queue: {e}");
                return false;
            }
            None => return false,
        };
        match &incoming.message {
            Ok((_, Message::Cancel(cancel))) if shared.epochs.admit(cancel.epoch).is_err() => {
                tracing::warn!(
                    "ignoring a cancel of {}/{} attempt {} of epoch {}, sent by a deposed \
                     controller",
                    cancel.run_id,
                    cancel.step,
                    cancel.attempt,
                    cancel.epoch
                );
            }
            Ok((_, Message::Cancel(cancel))) => {
                let attempt = AttemptRef {
                    run_id: cancel.run_id.clone(),
                    step: cancel.step.clone(),
                    attempt: cancel.attempt,
                };
                if shared.cancel(&attempt) {
                    tracing::info!(
                        "cancelling {}/{} attempt {}: {}",
                        cancel.run_id,
                        cancel.step,
                        cancel.attempt,
                        cancel.reason
                    );
                }
            }
            Ok((_, Message::Revoke(revoke))) if shared.epochs.admit(revoke.epoch).is_err() => {
                tracing::warn!(
                    "ignoring a revoke of run {} of epoch {}, sent by a deposed controller",
                    revoke.run_id,
                    revoke.epoch
                );
            }
            Ok((_, Message::Revoke(revoke))) => {
                for attempt in shared.revoke(revoke) {
                    tracing::info!(
                        "cancelling {}/{} attempt {}: revoked ({})",
                        attempt.run_id,
                        attempt.step,
                        attempt.attempt,
                        revoke.reason
                    );
                }
            }
            Ok((_, other)) => {
                tracing::warn!("ignoring a {} message on the control queue", other.kind())
            }
            Err(e) => tracing::warn!("ignoring an undecodable control message: {e}"),
        }
        let _ = incoming.ack().await;
    }
}
