//! Publishing claims and results: while one is on its way to the broker, those made meanwhile
//! wait and then go out together in one [`Events`] message, so that the broker stores,
//! delivers and settles one message for them instead of one each. Only events of jobs whose
//! controller reads such messages ([`StepJob::event_batches`]) are put together; the others go
//! out alone, in the order they came. Each caller's event counts as sent only once the broker
//! confirmed the message that holds it, as when it was published alone.
//!
//! Nothing waits to be put together: an event made while nothing is in flight goes out at
//! once, so a lone claim or result is as quick as before.

use drover_amqp::{AmqpError, Publisher, Target};
#[cfg(doc)]
use drover_protocol::message::StepJob;
use drover_protocol::message::{Events, Message};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most events in one message.
const MOST_EVENTS: usize = 64;
/// Most bytes of encoded events in one message (a result may carry outputs of up to the job's
/// `inline_outputs`); an event larger than this goes alone.
const MOST_BYTES: usize = 256 * 1024;

/// Why an event was not sent: the error of the publish that should have carried it.
pub(crate) type NotSent = Arc<AmqpError>;

/// The agent's queue of events to publish on the events queue.
pub(crate) struct Reports {
    queued: mpsc::UnboundedSender<Queued>,
}

struct Queued {
    message: Message,
    /// Whether the job lets it travel with other events.
    together: bool,
    sent: oneshot::Sender<Result<(), NotSent>>,
}

impl Reports {
    /// Starts the task that publishes what is queued; it ends once `Reports` is dropped and
    /// every queued event is published.
    pub fn start(publisher: Publisher) -> Self {
        let (queued, waiting) = mpsc::unbounded_channel();
        tokio::spawn(publish_queued(publisher, waiting));
        Reports { queued }
    }

    /// Publishes `message` (a `Claimed` or `Finished`), with other events when `together`;
    /// returns once the broker confirmed it.
    pub async fn send(&self, message: Message, together: bool) -> Result<(), NotSent> {
        let (sent, confirmed) = oneshot::channel();
        let queued = Queued {
            message,
            together,
            sent,
        };
        let stopping = || Arc::new(AmqpError::Unconfirmed("the agent is stopping".to_string()));
        if self.queued.send(queued).is_err() {
            return Err(stopping());
        }
        confirmed.await.unwrap_or_else(|_| Err(stopping()))
    }
}

/// Publishes the queued events in order: each time, every event waiting that may go together
/// (up to [`MOST_EVENTS`] and [`MOST_BYTES`]) in one message, or one that may not alone.
async fn publish_queued(publisher: Publisher, mut waiting: mpsc::UnboundedReceiver<Queued>) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = Batch::default();
        batch.add(first);
        while batch.open() {
            match waiting.try_recv() {
                Ok(queued) if queued.together && batch.fits(&queued) => batch.add(queued),
                Ok(queued) => {
                    next = Some(queued);
                    break;
                }
                Err(_) => break,
            }
        }
        batch.publish(&publisher).await;
    }
}

/// Events going out in one message.
#[derive(Default)]
struct Batch {
    events: Vec<Queued>,
    /// About how many bytes they take encoded: outputs carried inside results, and
    /// [`EVENT_BYTES`] for the rest of each.
    bytes: usize,
}

/// About how many bytes an event takes encoded, apart from the outputs a result carries.
const EVENT_BYTES: usize = 512;

impl Batch {
    fn add(&mut self, queued: Queued) {
        self.bytes += size_of_event(&queued.message);
        self.events.push(queued);
    }

    /// Whether more may join: the first event may go with others (only such events join it)
    /// and there is room.
    fn open(&self) -> bool {
        self.events.first().is_some_and(|first| first.together)
            && self.events.len() < MOST_EVENTS
            && self.bytes < MOST_BYTES
    }

    fn fits(&self, queued: &Queued) -> bool {
        self.bytes + size_of_event(&queued.message) <= MOST_BYTES
    }

    async fn publish(mut self, publisher: &Publisher) {
        tracing::trace!("publishing {} event(s) in one message", self.events.len());
        if self.events.len() == 1 {
            let result = publisher
                .publish(&Target::Events, &self.events[0].message)
                .await
                .map_err(Arc::new);
            return self.settle(result);
        }
        let mut events = Vec::with_capacity(self.events.len());
        for queued in std::mem::take(&mut self.events) {
            match queued.message.encode() {
                Ok(bytes) => {
                    events.push(serde_bytes::ByteBuf::from(bytes));
                    self.events.push(queued);
                }
                // Cannot happen with the events sent here; fails that event alone.
                Err(e) => {
                    let _ = queued.sent.send(Err(Arc::new(AmqpError::Encode(e))));
                }
            }
        }
        if events.is_empty() {
            return;
        }
        let message = Message::Events(Events { events });
        let result = publisher
            .publish(&Target::Events, &message)
            .await
            .map_err(Arc::new);
        self.settle(result);
    }

    /// Tells every event's sender how its message fared.
    fn settle(self, result: Result<(), NotSent>) {
        for queued in self.events {
            let _ = queued.sent.send(result.clone());
        }
    }
}

fn size_of_event(message: &Message) -> usize {
    match message {
        Message::Finished(f) => EVENT_BYTES + f.inline.values().map(|b| b.len()).sum::<usize>(),
        _ => EVENT_BYTES,
    }
}

#[cfg(test)]
mod tests;
