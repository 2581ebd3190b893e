//! The consumers of the services and events queues: decode, route to the owner task, and
//! dead-letter whatever cannot be handled. `Log` chunks go straight to the log store.

use super::{Command, Inline};
use crate::http::files::UploadLimits;
use crate::logs::LogStore;
use crate::metrics::Metrics;
use crate::scheduler::Event;
use crate::store::Store;
use bytes::Bytes;
use drover_amqp::{Broker, Incoming, Publisher, Target};
use drover_protocol::message::{Cancel, Claimed, Events, Finished, LogChunk, Message, Outcome};
use drover_protocol::names::agent_routing_key;
use drover_protocol::{OutputName, RunId};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
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
    /// This controller's epoch in the state journal (0 without it), put into every `Cancel`.
    pub epoch: u64,
    /// Most bytes of outputs a `Finished` may carry (what jobs say in `inline_outputs`).
    pub inline_most: u64,
    /// The free space that storing them must leave, as for uploads.
    pub uploads: UploadLimits,
}

/// Consumes `queue` until shutdown; when the broker connection is lost, opens the consumer
/// again (the broker reconnects on demand) with a backoff of 100 ms doubling to 2 s.
pub(crate) async fn consume(
    source: Source,
    broker: Broker,
    queue: String,
    prefetch: u16,
    routing: Routing,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    let mut again = false;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = broker.consume(&queue, prefetch) => c,
        };
        let mut consumer = match opened {
            Ok(c) => {
                if again {
                    tracing::info!("consuming {queue} again");
                }
                c
            }
            Err(e) => {
                tracing::warn!("cannot consume {queue}: {e}; retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    consumer.close().await;
                    return;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(incoming)) => routing.route(source, incoming).await,
                Some(Err(e)) => {
                    tracing::warn!("consuming {queue} failed: {e}; consuming it again");
                    break;
                }
                None => {
                    tracing::warn!("the broker connection closed; consuming {queue} again");
                    break;
                }
            }
        }
        again = true;
        consumer.close().await;
    }
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
            (Source::Events, Message::Events(batch)) => {
                self.metrics.handled(kind);
                return self.route_batch(batch, incoming).await;
            }
            (_, _) => {
                let why = format!("a {kind} message does not belong on {}", incoming.queue());
                return self.dead_letter(incoming, "wrong_queue", &why).await;
            }
        };
        match self.admit(event, kind).await {
            Ok(admitted) => self.deliver(admitted, Some(incoming)).await,
            Err(refused) => self.dead_letter(incoming, refused.code, &refused.why).await,
        }
    }

    /// Routes each event of an `Events` message on its own: one that cannot be read or acted
    /// on is dead-lettered alone (its own envelope's bytes), the others go to the owner task in
    /// their order. The message is acked with the last of them, once every one is durable
    /// (the owner applies them in order and a flush covers every write before it); a
    /// controller that dies before gets the whole message again, whose events it has seen
    /// are then duplicates, as any redelivered event may be.
    async fn route_batch(&self, batch: Events, incoming: Incoming) {
        let mut admitted = Vec::with_capacity(batch.events.len());
        for bytes in &batch.events {
            let event = match event_in_batch(bytes) {
                Ok((event, kind)) => self.admit(event, kind).await,
                Err(refused) => Err(refused),
            };
            match event {
                Ok(event) => admitted.push(event),
                Err(refused) => {
                    let queue = incoming.queue().to_string();
                    if let Err(e) = self.publish_dead_letter(bytes, &queue, &refused).await {
                        // Nothing of the message is acted on yet: it comes back whole.
                        tracing::warn!(
                            "cannot publish the dead letter of one event from {queue} ({e}); \
                             handing back the message that holds it"
                        );
                        let _ = incoming.requeue().await;
                        return;
                    }
                }
            }
        }
        let Some(last) = admitted.pop() else {
            // Every event was dead-lettered.
            if let Err(e) = incoming.ack().await {
                tracing::warn!("cannot ack a message from {}: {e}", incoming.queue());
            }
            return;
        };
        for event in admitted {
            self.deliver(event, None).await;
        }
        self.deliver(last, Some(incoming)).await;
    }

    /// Checks an event against the store before the owner task acts on it: an event of a run
    /// this controller does not know is refused (a claim's agent is told to stop the job), as
    /// are outputs carried inside a result that do not match their references; outputs that
    /// cannot be stored for lack of space make the result an error.
    async fn admit(&self, event: Event, kind: &'static str) -> Result<Admitted, Refused> {
        if let Some(run_id) = unknown_run_of(&event, &self.store) {
            if let Event::Claimed(c) = &event {
                self.cancel_unknown(c).await;
            }
            return Err(Refused {
                code: "unknown_run",
                why: format!(
                    "a {kind} message for run {run_id}, which this controller does not know"
                ),
            });
        }
        let (event, inline) = match event {
            Event::Finished(mut f) if !f.inline.is_empty() => {
                if let Some(why) = f.inline_mismatch(self.inline_most) {
                    return Err(Refused {
                        code: "invalid_inline_output",
                        why: format!("a finished message of run {}: {why}", f.run_id),
                    });
                }
                let inline = std::mem::take(&mut f.inline);
                let carried = inline.values().map(|b| b.len() as u64).sum();
                match self.uploads.space_for(carried) {
                    Ok(()) => {
                        let inline = self.inline_outputs(&f, inline);
                        (Event::Finished(f), Some(inline))
                    }
                    Err(why) => (Event::Finished(not_stored(f, &why)), None),
                }
            }
            event => (event, None),
        };
        Ok(Admitted {
            event,
            inline,
            kind,
        })
    }

    /// Hands an admitted event to the owner task, with the delivery to ack once it is durable
    /// (`None` for all but the last event of an `Events` message).
    async fn deliver(&self, admitted: Admitted, incoming: Option<Incoming>) {
        let Admitted {
            event,
            inline,
            kind,
        } = admitted;
        self.metrics.handled(kind);
        if self
            .commands
            .send(Command::Delivery {
                event,
                incoming: incoming.map(Box::new),
                inline,
            })
            .await
            .is_err()
        {
            // The owner task is gone (shutting down): the unacked delivery returns to its queue.
            tracing::debug!("the owner task has stopped; a {kind} message stays queued");
        }
    }

    /// The outputs `f` carried inside it, by the digests its references give them; the owner
    /// keeps them in the state store with the record that names them.
    fn inline_outputs(&self, f: &Finished, inline: BTreeMap<OutputName, ByteBuf>) -> Inline {
        let bytes = inline
            .into_iter()
            .filter_map(|(name, bytes)| {
                let digest = f.outputs.get(&name)?.digest.clone();
                Some((digest, Bytes::from(bytes.into_vec())))
            })
            .collect();
        Inline { bytes }
    }

    /// Tells the agent that claimed a job of an unknown run to stop it.
    async fn cancel_unknown(&self, c: &Claimed) {
        let cancel = Message::Cancel(Cancel {
            run_id: c.run_id.clone(),
            step: c.step.clone(),
            attempt: c.attempt,
            reason: "this controller does not know the run".to_string(),
            epoch: self.epoch,
        });
        let target = Target::Control(agent_routing_key(&c.agent));
        if let Err(e) = self.publisher.publish(&target, &cancel).await {
            tracing::warn!(
                "cannot tell agent {} to stop a job of unknown run {}: {e}",
                c.agent,
                c.run_id
            );
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
    async fn dead_letter(&self, incoming: Incoming, reason: &'static str, why: &str) {
        let queue = incoming.queue().to_string();
        let refused = Refused {
            code: reason,
            why: why.to_string(),
        };
        let settled = match self
            .publish_dead_letter(incoming.payload(), &queue, &refused)
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

    /// Publishes `payload`, refused, to the dead-letter queue with its reason and counts it.
    async fn publish_dead_letter(
        &self,
        payload: &[u8],
        queue: &str,
        refused: &Refused,
    ) -> Result<(), drover_amqp::AmqpError> {
        tracing::warn!("dead-lettering a message from {queue}: {}", refused.why);
        self.metrics.dead_lettered(refused.code);
        self.publisher
            .dead_letter(payload, queue, refused.code)
            .await
    }
}

/// An event ready for the owner task.
struct Admitted {
    event: Event,
    /// The outputs a `Finished` carried.
    inline: Option<Inline>,
    kind: &'static str,
}

/// Why a message or one event of an `Events` message is dead-lettered: the reason's short
/// code (the dead letter's header) and what to tell the operator.
struct Refused {
    code: &'static str,
    why: String,
}

/// One event of an `Events` message, decoded: a `Claimed` or a `Finished`, with its kind.
fn event_in_batch(bytes: &[u8]) -> Result<(Event, &'static str), Refused> {
    let message = match Message::decode(bytes) {
        Ok((_, message)) => message,
        Err(e) => {
            return Err(Refused {
                code: e.code(),
                why: e.to_string(),
            });
        }
    };
    let kind = message.kind();
    match message {
        Message::Claimed(c) => Ok((Event::Claimed(c), kind)),
        Message::Finished(f) => Ok((Event::Finished(f), kind)),
        _ => Err(Refused {
            code: "wrong_queue",
            why: format!("a {kind} message does not belong in an events message"),
        }),
    }
}

/// `f` as an attempt whose outputs could not be stored, as when their upload is refused: an
/// error, with the reason, and no outputs.
fn not_stored(mut f: Finished, why: &str) -> Finished {
    let names: Vec<String> = f.outputs.keys().map(|n| format!("'{n}'")).collect();
    tracing::warn!(
        "cannot store the outputs of attempt {} of step {} of run {}: {why}",
        f.attempt,
        f.step,
        f.run_id
    );
    f.message = Some(format!("cannot store output {}: {why}", names.join(", ")));
    f.outcome = Outcome::Error;
    f.exit_code = None;
    f.outputs.clear();
    f
}

/// The run a claim or result refers to, when the store has never heard of it (a job left in a
/// queue by another controller, or forged): such events are dead-lettered, not applied.
fn unknown_run_of(event: &Event, store: &Store) -> Option<RunId> {
    let run_id = match event {
        Event::Claimed(c) => &c.run_id,
        Event::Finished(f) => &f.run_id,
        _ => return None,
    };
    match store.has_run(run_id) {
        Ok(false) => Some(run_id.clone()),
        Ok(true) => None,
        Err(e) => {
            tracing::warn!("cannot look up run {run_id}: {e}");
            None
        }
    }
}
