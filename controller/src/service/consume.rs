//! The consumers of the services and events queues: decode, route to the owner task, and
//! dead-letter whatever cannot be handled. `Log` chunks go straight to the log store.

use super::Command;
use crate::logs::LogStore;
use crate::metrics::Metrics;
use crate::scheduler::Event;
use crate::store::Store;
use drover_protocol::amqp::{Consumer, Incoming, Publisher};
use drover_protocol::message::{LogChunk, Message};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which queue a consumer serves, so messages of the wrong kind are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Submissions and aborts from the CLI and SDK.
    Services,
    /// Claims, heartbeats, logs and results from agents.
    Events,
}

/// What a consumer needs besides its queue.
#[derive(Clone)]
pub(crate) struct Routing {
    pub commands: mpsc::Sender<Command>,
    pub publisher: Publisher,
    pub logs: LogStore,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// Consumes until shutdown or until the broker connection ends.
pub(crate) async fn consume(
    source: Source,
    mut consumer: Consumer,
    routing: Routing,
    shutdown: CancellationToken,
) {
    let queue = consumer.queue().to_string();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(incoming)) => routing.route(source, incoming).await,
            Some(Err(e)) => {
                tracing::error!(
                    "consuming {queue} failed: {e}; the controller no longer receives from it, restart it once the broker is reachable"
                );
                break;
            }
            None => {
                tracing::error!(
                    "the broker connection closed: the controller no longer receives from {queue}; restart it once the broker is reachable"
                );
                break;
            }
        }
    }
    consumer.close().await;
}

impl Routing {
    async fn route(&self, source: Source, incoming: Incoming) {
        let message = match &incoming.message {
            Ok((_, message)) => message.clone(),
            Err(e) => {
                let (code, why) = (e.code(), e.to_string());
                return self.dead_letter(incoming, code, &why).await;
            }
        };
        let kind = message.kind();
        let event = match (source, message) {
            (Source::Services, Message::Submit(s)) => Event::Submit(s),
            (Source::Services, Message::Abort(a)) => Event::Abort(a),
            (Source::Events, Message::Claimed(c)) => Event::Claimed(c),
            (Source::Events, Message::Heartbeat(h)) => Event::Heartbeat(h),
            (Source::Events, Message::Finished(f)) => Event::Finished(f),
            (Source::Events, Message::Log(chunk)) => {
                self.metrics.handled(kind);
                self.append_log(&chunk).await;
                if let Err(e) = incoming.ack().await {
                    tracing::warn!("cannot ack a log chunk: {e}");
                }
                return;
            }
            (_, _) => {
                let why = format!("a {kind} message does not belong on {}", incoming.queue());
                return self.dead_letter(incoming, "wrong_queue", &why).await;
            }
        };
        self.metrics.handled(kind);
        if self
            .commands
            .send(Command::Delivery {
                event,
                incoming: Box::new(incoming),
            })
            .await
            .is_err()
        {
            // The owner task is gone (shutting down): the unacked delivery returns to its queue.
            tracing::debug!("the owner task has stopped; a {kind} message stays queued");
        }
    }

    /// Appends a chunk to its attempt's log; chunks of runs this controller never saw are dropped.
    async fn append_log(&self, chunk: &LogChunk) {
        match self.store.has_run(&chunk.run_id) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("dropping a log chunk of unknown run {}", chunk.run_id);
                return;
            }
            Err(e) => tracing::warn!("cannot look up run {}: {e}", chunk.run_id),
        }
        let (run, step, attempt) = (&chunk.run_id, &chunk.step, chunk.attempt);
        match self.logs.append(chunk).await {
            Ok(appended) if appended.gap => tracing::warn!(
                "log of attempt {attempt} of step {step} of run {run} has a gap before offset {}; some output was lost",
                chunk.offset
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(
                "cannot append to the log of attempt {attempt} of step {step} of run {run}: {e}"
            ),
        }
    }

    /// Puts the message on the dead-letter queue with the reason, then acks it; when that
    /// publish fails, rejects it so the broker dead-letters it.
    async fn dead_letter(&self, incoming: Incoming, reason: &str, why: &str) {
        let queue = incoming.queue().to_string();
        tracing::warn!("dead-lettering a message from {queue}: {why}");
        self.metrics.dead_lettered(reason);
        let settled = match self
            .publisher
            .dead_letter(incoming.payload(), &queue, reason)
            .await
        {
            Ok(()) => incoming.ack().await,
            Err(e) => {
                tracing::warn!(
                    "cannot publish the dead letter from {queue} ({e}); rejecting it instead"
                );
                incoming.reject().await
            }
        };
        if let Err(e) = settled {
            tracing::warn!("cannot settle a dead letter from {queue}: {e}");
        }
    }
}
