//! The one crate that speaks AMQP (lapin): connect, declare topology, publish with confirms,
//! consume with prefetch. Every other drover crate uses these types and never depends on lapin.

mod consume;
mod leader;
mod link;
mod lock;
mod publish;
pub mod queues;
pub mod signing;
mod stream;
mod topology;
pub mod urls;

pub use consume::{Consumer, Getter, Incoming};
pub use lock::{LOCK_REGAIN_PATIENCE, regain_patience};
pub use publish::{CONFIRM_PATIENCE, Publisher, Target};
pub use queues::{QueueSettings, QueueType};
pub use stream::{
    Declared, JOURNAL_MAX_BYTES, JournalReader, JournalRecord, JournalStart, SEGMENT_BYTES,
    SNAPSHOT_MAX_BYTES, StreamBounds,
};

use drover_protocol::ids::{AgentId, QueueName};
use drover_protocol::names::{ALL_AGENTS_ROUTING_KEY, Names, agent_routing_key};
use lapin::Channel;
use lapin::options::{
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use link::Link;
pub use link::LinkState;
use std::sync::Arc;
use std::time::Duration;

/// Priority levels user queues support (`x-max-priority`); fixed because RabbitMQ refuses to
/// redeclare a queue with other arguments.
pub const MAX_PRIORITY: u8 = drover_protocol::validate::MAX_PRIORITY;

/// How long an agent's control queue outlives its last consumer (`x-expires`). An agent that
/// lost its connection consumes it again within a second when the broker answers (after a node
/// kill, see ARCHITECTURE.md "Queue types"), or once lapin has noticed a silent connection (20
/// to 25 s) and it reconnects; by 30 s (the default lease) its steps are fenced anyway. Five
/// minutes is far above both, and bounds how long a dead agent's queue (holding at most the
/// cancels sent to it) stays behind.
pub const CONTROL_QUEUE_EXPIRY: Duration = Duration::from_secs(300);

/// Header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-drover-reason";
/// Header naming the queue a dead letter came from.
pub const SOURCE_HEADER: &str = "x-drover-source-queue";

/// An AMQP failure, with the broker's words.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to the broker at {url}: {error}; is RabbitMQ running and reachable?")]
    Connect { url: String, error: String },
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("no queue accepted the message for {0:?}: nothing consumes that route yet")]
    Unroutable(String),
    #[error("the broker refused the message for {0:?} (negative confirm)")]
    Nacked(String),
    #[error("the broker did not confirm the message for {0:?} within {CONFIRM_PATIENCE:?}")]
    Unconfirmed(String),
    #[error(
        "queue {queue} already exists with other arguments than --queue-type {kind} declares \
         ({error}); a queue's type cannot change in place. Either keep the namespace's earlier \
         --queue-type (and --delivery-limit), or move it: stop its submitters, controller and \
         agents once no run is left (`drover queues` shows nothing waiting), delete the \
         namespace's queues (`rabbitmqctl delete_queue NAME` for the services, events, dead-letter \
         and job queues), and start everything again with the new --queue-type; or use another \
         --namespace"
    )]
    QueueMismatch {
        queue: String,
        kind: QueueType,
        error: String,
    },
    #[error(
        "a delivery from {0} carries no x-stream-offset header: {0} is not a stream; delete it \
         (`rabbitmqctl delete_queue {0}`) so that it is declared again as one"
    )]
    NotAStream(String),
    #[error("the broker connection was closed by this process")]
    Closed,
    #[error("another broker connection holds the exclusive queue {queue} (RESOURCE_LOCKED)")]
    LockHeld { queue: String },
    #[error(
        "the exclusive queue {queue} was lost with the broker connection and another connection \
         has held it for more than {patience:?} since; this process stops using the broker"
    )]
    LockLost { queue: String, patience: Duration },
    #[error(transparent)]
    Encode(#[from] drover_protocol::message::EncodeError),
    #[error(
        "the {kind} message is {size} bytes, more than the limit of {limit} bytes (--max-message-size / DROVER_MAX_MESSAGE_SIZE); make the pipeline smaller or split it"
    )]
    TooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },
}

impl AmqpError {
    /// Whether the broker refused an operation for the user's permissions (ACCESS_REFUSED).
    pub fn is_access_refused(&self) -> bool {
        matches!(self, AmqpError::Broker(e) if e.to_string().contains("ACCESS_REFUSED"))
    }
}

/// Largest message drover consumes or publishes by default (64 MiB; RabbitMQ's own default
/// limit is 128 MiB). A submission of 100,000 steps is far below it (see docs/security.md).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Depth and consumers of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub messages: u32,
    pub consumers: u32,
}

/// A connection to RabbitMQ within one namespace; cheap to clone. When the connection is lost,
/// the next use opens a new one and declares again what was declared, so consumers and
/// publishers only need to retry.
#[derive(Clone)]
pub struct Broker {
    link: Arc<Link>,
    max_message_size: usize,
    stream_bounds: StreamBounds,
}

impl Broker {
    /// Connects once, to the first broker of `url` that answers: one URL, or several separated
    /// by whitespace (nodes of one cluster); a lost connection moves on to the next.
    pub async fn connect(url: &str, names: Names, client: &str) -> Result<Self, AmqpError> {
        Ok(Self {
            link: Arc::new(Link::open(url, names, client).await?),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            stream_bounds: StreamBounds::default(),
        })
    }

    /// Sets the largest message consumers of this broker hand on decoded and publishers send;
    /// larger deliveries arrive undecoded as `DecodeError::TooLarge`, larger publishes fail with
    /// [`AmqpError::TooLarge`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets how this namespace's queues are declared (classic by default); every process of a
    /// namespace must use the same settings.
    /// Sets the size bounds the journal and snapshot streams are declared with (tests; every
    /// controller of a namespace uses the defaults).
    pub fn with_stream_bounds(mut self, bounds: StreamBounds) -> Self {
        self.stream_bounds = bounds;
        self
    }

    pub fn with_queues(self, queues: QueueSettings) -> Self {
        self.link.set_queues(queues);
        self
    }

    pub fn queues(&self) -> QueueSettings {
        self.link.queues()
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Connects, retrying with exponential backoff (100 ms doubling to 5 s) for up to `patience`.
    pub async fn connect_with_retry(
        url: &str,
        names: Names,
        client: &str,
        patience: Duration,
    ) -> Result<Self, AmqpError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(100);
        loop {
            match Self::connect(url, names.clone(), client).await {
                Ok(b) => return Ok(b),
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!("{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn names(&self) -> &Names {
        self.link.names()
    }

    /// The URL with its password hidden, for messages.
    pub fn url(&self) -> String {
        redact(self.link.url())
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Whether the connection is up now, and if not since when it was found lost and whether
    /// new ones are refused the lock of [`Self::hold_lock`]. Cheap: no I/O. The time is when
    /// this process first found the connection lost (a use of it failed, or lapin missed two
    /// heartbeats), not when the network went.
    pub fn state(&self) -> LinkState {
        self.link.state()
    }

    /// How many times the connection was replaced after it was lost.
    pub fn reconnects(&self) -> u64 {
        self.link.reconnects()
    }

    async fn channel(&self) -> Result<Channel, AmqpError> {
        Ok(self.link.connection().await?.create_channel().await?)
    }

    /// Declares the namespace's shared objects: dead-letter, events, services, control exchange.
    pub async fn declare_topology(&self) -> Result<(), AmqpError> {
        let ch = self.channel().await?;
        topology::declare_shared(&ch, self.names(), &self.link.queues()).await?;
        let _ = ch.close(200, "topology declared".into()).await;
        self.link.remember_topology();
        Ok(())
    }

    /// Declares the topology when this broker user may (the controller's role); a user without
    /// configure permission (submitters and agents under per-role users) relies on the
    /// controller having declared it, and a missing exchange then fails the first publish.
    pub async fn declare_topology_if_permitted(&self) -> Result<(), AmqpError> {
        match self.declare_topology().await {
            Err(e) if e.is_access_refused() => {
                tracing::debug!("not declaring the topology ({e}); the controller declares it");
                Ok(())
            }
            other => other,
        }
    }

    /// [`Self::declare_user_queue`] when this broker user may, as for the topology.
    pub async fn declare_user_queue_if_permitted(
        &self,
        queue: &QueueName,
    ) -> Result<(), AmqpError> {
        match self.declare_user_queue(queue).await {
            Err(e) if e.is_access_refused() => {
                tracing::debug!("not declaring queue {queue} ({e}); the controller declares it");
                Ok(())
            }
            other => other,
        }
    }

    /// Declares a user queue (`default`, `gpu`, ...) with its dead-letter route, and priorities
    /// when its kind has them.
    pub async fn declare_user_queue(&self, queue: &QueueName) -> Result<(), AmqpError> {
        let ch = self.channel().await?;
        topology::declare_user_queue(&ch, self.names(), queue, &self.link.queues()).await?;
        let _ = ch.close(200, "queue declared".into()).await;
        self.link.remember_user_queue(queue);
        Ok(())
    }

    /// A publisher with confirms enabled on its own channel.
    pub async fn publisher(&self) -> Result<Publisher, AmqpError> {
        let publisher = Publisher::new(self.clone());
        publisher.open().await?;
        Ok(publisher)
    }

    /// A fresh channel in confirm mode (the publisher's).
    async fn confirm_channel(&self) -> Result<Channel, AmqpError> {
        let ch = self.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(ch)
    }

    /// Consumes a broker queue (already declared) on its own channel with the given prefetch.
    pub async fn consume(&self, broker_queue: &str, prefetch: u16) -> Result<Consumer, AmqpError> {
        let ch = self.channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        Consumer::start(ch, broker_queue, self.max_message_size).await
    }

    /// A channel that takes messages off queues one at a time (`basic.get`), without prefetch.
    pub async fn getter(&self) -> Result<Getter, AmqpError> {
        Ok(Getter::new(self.channel().await?, self.max_message_size))
    }

    /// An agent's own control queue, bound for its id and for all agents, consumed by this
    /// connection alone (an exclusive consumer: a second agent with the same id is refused,
    /// ACCESS_REFUSED). The queue is not exclusive, so it outlives a lost connection and keeps
    /// what is published meanwhile until the agent consumes it again; it expires once nobody
    /// has used it for [`CONTROL_QUEUE_EXPIRY`]. It is a classic, transient queue in every
    /// namespace: when its node is lost the queue goes with it and the agent declares it anew
    /// on the node it reconnects to.
    pub async fn consume_agent_control(&self, agent: &AgentId) -> Result<Consumer, AmqpError> {
        let ch = self.channel().await?;
        let queue = self.names().agent_control_queue(agent);
        let mut args = FieldTable::default();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongUInt(CONTROL_QUEUE_EXPIRY.as_millis() as u32),
        );
        ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
            .await?;
        for key in [agent_routing_key(agent), ALL_AGENTS_ROUTING_KEY.to_string()] {
            ch.queue_bind(
                queue.as_str().into(),
                self.names().control_exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.basic_qos(64, BasicQosOptions::default()).await?;
        Consumer::start_exclusive(ch, &queue, self.max_message_size).await
    }

    /// Deletes an agent's control queue (an agent that stops for good), so it does not wait for
    /// its expiry; messages still in it are dropped.
    pub async fn delete_agent_control(&self, agent: &AgentId) -> Result<(), AmqpError> {
        let ch = self.channel().await?;
        let queue = self.names().agent_control_queue(agent);
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        let _ = ch.close(200, "control queue deleted".into()).await;
        Ok(())
    }

    /// Depth and consumer count of a broker queue; `None` when it does not exist.
    pub async fn queue_stats(&self, broker_queue: &str) -> Result<Option<QueueStats>, AmqpError> {
        // A passive declare of a missing queue closes the channel, so use a throwaway one.
        let ch = self.channel().await?;
        let result = ch
            .queue_declare(
                broker_queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match result {
            Ok(q) => {
                let _ = ch.close(200, "stats read".into()).await;
                Ok(Some(QueueStats {
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                }))
            }
            Err(e) if e.to_string().contains("NOT_FOUND") || e.to_string().contains("404") => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the messages waiting in a broker queue (already declared); those delivered and
    /// not yet acked stay. Returns how many were removed.
    pub async fn purge_queue(&self, broker_queue: &str) -> Result<u32, AmqpError> {
        let ch = self.channel().await?;
        let purged = ch
            .queue_purge(broker_queue.into(), QueuePurgeOptions::default())
            .await?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(purged)
    }

    /// Deletes a namespace's queues and exchanges (tests and tenant removal); the given user
    /// queues are deleted too, the state journal, the leader queue, and the reserved `drivers` queue
    /// (`drover up` serves it whatever queues it is given). Missing objects are fine.
    pub async fn delete_namespace(&self, user_queues: &[QueueName]) -> Result<(), AmqpError> {
        let mut queues = vec![
            self.names().services(),
            self.names().events(),
            self.names().dead(),
            self.names().user_queue(&QueueName::drivers()),
            self.names().leader(),
        ];
        queues.extend(user_queues.iter().map(|q| self.names().user_queue(q)));
        for queue in queues {
            // Deleting a missing queue is not an error in RabbitMQ 3.x+, but a failure closes
            // the channel, so each delete gets its own.
            let ch = self.channel().await?;
            let _ = ch
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "deleted".into()).await;
        }
        let names = self.names();
        for exchange in [
            names.control_exchange(),
            names.submit_exchange(),
            names.jobs_exchange(),
            names.events_exchange(),
            names.dead_exchange(),
            names.leader(),
        ] {
            let ch = self.channel().await?;
            let _ = ch
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
            let _ = ch.close(200, "deleted".into()).await;
        }
        self.delete_journal().await
    }

    /// Holds the exclusive queue `queue` as a lock for as long as this process is connected:
    /// declared now, and first on every new connection, before anything else is declared or
    /// sent on it. [`AmqpError::LockHeld`] when another connection holds it; nothing was
    /// consumed or published through this broker by then if this is the first call on it.
    pub async fn hold_lock(&self, queue: &str) -> Result<(), AmqpError> {
        self.link.hold_lock(queue).await
    }

    /// Resolves once the lock of [`Self::hold_lock`] was lost for good: after a lost connection
    /// another one held it for longer than [`regain_patience`] of the connection's heartbeat
    /// (60 s at the default 10 s; or the patience set with
    /// [`Self::with_lock_patience`]). Every later use of this broker fails then.
    pub async fn lock_lost(&self) {
        self.link.lock_lost().await
    }

    /// Sets how long a lost lock is asked for again on new connections before it is given up
    /// ([`regain_patience`] of the first connection's heartbeat by default; tests shorten it).
    pub fn with_lock_patience(self, patience: Duration) -> Self {
        self.link.set_lock_patience(patience);
        self
    }

    /// Closes the connection politely; it is not reopened afterwards.
    pub async fn close(&self) {
        self.link.close().await;
    }
}

/// Hides the password in an AMQP URL, or in each URL of a whitespace-separated list.
pub fn redact(url: &str) -> String {
    if url.split_whitespace().nth(1).is_some() {
        return urls::redact_all(url);
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://h:5672"), "amqp://h:5672");
    }
}
