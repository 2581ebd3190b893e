//! The broker connection, opened again on demand after it is lost (to the next broker of the
//! list when there are several), with everything that was declared on it declared again, so
//! every drover process survives a broker restart or the loss of one node of a cluster.

use super::queues::QueueSettings;
use super::{AmqpError, lock, redact, topology, urls};
use drover_protocol::ids::QueueName;
use drover_protocol::names::Names;
use lapin::{Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether a link is connected, as its users find it (see [`crate::Broker::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected; a link holding a lock holds it on this connection (a new connection takes it
    /// before it is used).
    Up,
    /// The connection was lost (first found so at `since`) and no new one has replaced it yet;
    /// `lock_refused_since` is set while new connections are refused the lock the link held.
    Down {
        since: tokio::time::Instant,
        lock_refused_since: Option<tokio::time::Instant>,
    },
    /// Closed for good: by its owner, or after its lock was given up.
    Closed,
}

/// What was declared through this link; declared again after a reconnect.
#[derive(Debug, Default, Clone)]
struct Declared {
    topology: bool,
    user_queues: BTreeSet<QueueName>,
    /// The exclusive queue held as a lock ([`lock`]), taken again first on a new connection.
    lock: Option<String>,
}

/// One logical connection to the broker: the current lapin connection and how to replace it.
pub(super) struct Link {
    /// The brokers to try, in order; never empty.
    urls: Vec<String>,
    /// Index into `urls` of the broker connected to last: reconnects try it first.
    at: AtomicUsize,
    names: Names,
    /// How the namespace's queues are declared; set before the first declaration.
    queues: Mutex<QueueSettings>,
    client: String,
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while a connection is being replaced, so only one caller reconnects.
    reconnecting: tokio::sync::Mutex<()>,
    declared: Mutex<Declared>,
    reconnects: AtomicU64,
    closed: AtomicBool,
    /// Since when a new connection has been refused the lock this link held.
    lock_refused_since: Mutex<Option<tokio::time::Instant>>,
    /// When the current connection was first found lost (by any use of the link), until a new
    /// one replaces it.
    down_since: Mutex<Option<tokio::time::Instant>>,
    /// Set once the lock is given up for good (the link is closed then).
    lock_lost: tokio::sync::watch::Sender<bool>,
    /// How long refusals of the lock on new connections are borne before it is given up
    /// ([`lock::regain_patience`] of the first connection's heartbeat unless set).
    lock_patience: Mutex<Duration>,
}

impl Link {
    /// Connects once, to the first broker of `spec` (whitespace-separated URLs) that answers.
    pub async fn open(spec: &str, names: Names, client: &str) -> Result<Self, AmqpError> {
        let urls = urls::split(spec);
        if urls.is_empty() {
            return Err(AmqpError::Connect {
                url: String::new(),
                error: "no broker URL given (--amqp / DROVER_AMQP_URL is empty)".into(),
            });
        }
        let (at, conn) = connect_any(&urls, 0, &names, client).await?;
        let patience = lock::regain_patience(conn.configuration().heartbeat());
        Ok(Self {
            urls,
            at: AtomicUsize::new(at),
            names,
            queues: Mutex::new(QueueSettings::default()),
            client: client.to_string(),
            current: Mutex::new(Some(Arc::new(conn))),
            reconnecting: tokio::sync::Mutex::new(()),
            declared: Mutex::new(Declared::default()),
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lock_refused_since: Mutex::new(None),
            down_since: Mutex::new(None),
            lock_lost: tokio::sync::watch::Sender::new(false),
            lock_patience: Mutex::new(patience),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn queues(&self) -> QueueSettings {
        self.queues.lock().map(|q| *q).unwrap_or_default()
    }

    pub fn set_queues(&self, queues: QueueSettings) {
        if let Ok(mut q) = self.queues.lock() {
            *q = queues;
        }
    }

    /// The broker connected to last.
    pub fn url(&self) -> &str {
        &self.urls[self.at.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// The current connection while it is connected; else notes when it was found lost.
    fn live(&self) -> Option<Arc<Connection>> {
        let live = {
            let slot = self.current.lock().ok()?;
            slot.as_ref().filter(|c| c.status().connected()).cloned()
        };
        if let Ok(mut down) = self.down_since.lock() {
            match live {
                Some(_) => *down = None,
                None => {
                    down.get_or_insert_with(tokio::time::Instant::now);
                }
            }
        }
        live
    }

    pub fn is_connected(&self) -> bool {
        self.live().is_some()
    }

    /// Whether the link is connected now, and if not since when and why.
    pub fn state(&self) -> LinkState {
        if self.closed.load(Ordering::Relaxed) {
            return LinkState::Closed;
        }
        if self.live().is_some() {
            return LinkState::Up;
        }
        let now = tokio::time::Instant::now();
        let since = self.down_since.lock().ok().and_then(|d| *d).unwrap_or(now);
        let lock_refused_since = self.lock_refused_since.lock().ok().and_then(|s| *s);
        LinkState::Down {
            since,
            lock_refused_since,
        }
    }

    /// How many times the connection was replaced after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The live connection; when it was lost, one attempt to open a new one and declare again
    /// what was declared. Callers retry with their own backoff.
    pub async fn connection(&self) -> Result<Arc<Connection>, AmqpError> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(AmqpError::Closed);
        }
        let from = self.at.load(Ordering::Relaxed);
        let (at, conn) = connect_any(&self.urls, from, &self.names, &self.client).await?;
        let conn = Arc::new(conn);
        self.at.store(at, Ordering::Relaxed);
        let declared = self.declared.lock().map(|d| d.clone()).unwrap_or_default();
        let ch = conn.create_channel().await?;
        if let Some(queue) = &declared.lock {
            // Nothing may use the new connection before it holds the lock again.
            if let Err(e) = self.take_lock_again(&ch, queue).await {
                let _ = conn.close(200, "lock held elsewhere".into()).await;
                return Err(e);
            }
        }
        let queues = self.queues();
        if declared.topology {
            topology::declare_shared(&ch, &self.names, &queues).await?;
        }
        for queue in &declared.user_queues {
            topology::declare_user_queue(&ch, &self.names, queue, &queues).await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(conn.clone());
        }
        if let Ok(mut down) = self.down_since.lock() {
            *down = None;
        }
        let n = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            "reconnected to the broker at {} (reconnect #{n}); declared again: {} queue(s){}",
            redact(self.url()),
            declared.user_queues.len(),
            if declared.topology {
                " and the shared topology"
            } else {
                ""
            }
        );
        Ok(conn)
    }

    pub fn remember_topology(&self) {
        if let Ok(mut d) = self.declared.lock() {
            d.topology = true;
        }
    }

    pub fn remember_user_queue(&self, queue: &QueueName) {
        if let Ok(mut d) = self.declared.lock() {
            d.user_queues.insert(queue.clone());
        }
    }

    /// Takes the exclusive queue `queue` on the live connection and takes it again first on
    /// every new one; [`AmqpError::LockHeld`] when another connection holds it.
    pub async fn hold_lock(&self, queue: &str) -> Result<(), AmqpError> {
        let ch = self.connection().await?.create_channel().await?;
        let taken = lock::take(&ch, queue).await;
        let _ = ch.close(200, "lock taken".into()).await;
        taken?;
        if let Ok(mut d) = self.declared.lock() {
            d.lock = Some(queue.to_string());
        }
        Ok(())
    }

    /// Sets how long refusals of the lock on new connections are borne before it is given up.
    pub fn set_lock_patience(&self, patience: Duration) {
        if let Ok(mut p) = self.lock_patience.lock() {
            *p = patience;
        }
    }

    /// Resolves once the lock this link held could not be taken again on a new connection
    /// within its patience ([`lock::regain_patience`] by default); the link is closed by
    /// then.
    pub async fn lock_lost(&self) {
        let mut lost = self.lock_lost.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// The lock on a new connection; refused, the caller tries again with its backoff until the
    /// patience runs out, and then the link closes for good.
    async fn take_lock_again(&self, ch: &lapin::Channel, queue: &str) -> Result<(), AmqpError> {
        let now = tokio::time::Instant::now();
        match lock::take(ch, queue).await {
            Ok(()) => {
                if let Ok(mut since) = self.lock_refused_since.lock() {
                    *since = None;
                }
                Ok(())
            }
            Err(AmqpError::LockHeld { queue }) => {
                let since = self
                    .lock_refused_since
                    .lock()
                    .map(|mut s| *s.get_or_insert(now))
                    .unwrap_or(now);
                let patience = self
                    .lock_patience
                    .lock()
                    .map(|p| *p)
                    .unwrap_or(lock::LOCK_REGAIN_PATIENCE);
                if now.duration_since(since) < patience {
                    tracing::warn!(
                        "the lock queue {queue} is still held by another connection (this \
                         process's lost one, until the broker drops it); asking again"
                    );
                    return Err(AmqpError::LockHeld { queue });
                }
                self.closed.store(true, Ordering::Relaxed);
                self.lock_lost.send_replace(true);
                Err(AmqpError::LockLost { queue, patience })
            }
            Err(e) => Err(e),
        }
    }

    /// Closes the connection for good: later calls fail instead of reconnecting.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let conn = self.current.lock().ok().and_then(|mut s| s.take());
        if let Some(conn) = conn {
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

/// Tries every broker once, starting with `urls[from]` (the one that served last, so a
/// transient failure does not move a process to another node); the index and connection of the
/// first that answers, or every broker's error.
async fn connect_any(
    urls: &[String],
    from: usize,
    names: &Names,
    client: &str,
) -> Result<(usize, Connection), AmqpError> {
    let mut errors = Vec::new();
    for i in (0..urls.len()).map(|k| (from + k) % urls.len()) {
        match connect(&urls[i], names, client).await {
            Ok(conn) => return Ok((i, conn)),
            Err(e) if urls.len() == 1 => return Err(e),
            Err(AmqpError::Connect { url, error }) => errors.push(format!("{url}: {error}")),
            Err(e) => errors.push(format!("{}: {e}", redact(&urls[i]))),
        }
    }
    Err(AmqpError::Connect {
        url: urls::redact_all(&urls.join(" ")),
        error: format!("no broker of the list answered ({})", errors.join("; ")),
    })
}

async fn connect(url: &str, names: &Names, client: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("drover {client} ({names})").into());
    Connection::connect(&urls::with_defaults(url), props)
        .await
        .map_err(|e| AmqpError::Connect {
            url: redact(url),
            error: e.to_string(),
        })
}
