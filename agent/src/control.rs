//! Control messages from the controller: `Cancel` stops an attempt this agent runs.

use crate::Shared;
use drover_protocol::amqp::Consumer;
use drover_protocol::message::{AttemptRef, Message};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn listen(shared: Arc<Shared>, mut consumer: Consumer, stopped: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            next = consumer.next() => next,
            _ = stopped.cancelled() => break,
        };
        let Some(incoming) = incoming else {
            tracing::error!(
                "the control queue closed: this agent can no longer be told to cancel steps"
            );
            break;
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("control queue: {e}");
                break;
            }
        };
        match &incoming.message {
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
            Ok((_, other)) => {
                tracing::warn!("ignoring a {} message on the control queue", other.kind())
            }
            Err(e) => tracing::warn!("ignoring an undecodable control message: {e}"),
        }
        let _ = incoming.ack().await;
    }
    consumer.close().await;
}
