//! The broker connection, opened again on demand after it is lost, with everything that was
//! declared on it declared again, so every drover process survives a broker restart.

use super::{AmqpError, redact, topology};
use drover_protocol::ids::QueueName;
use drover_protocol::names::Names;
use lapin::{Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What was declared through this link; declared again after a reconnect.
#[derive(Debug, Default, Clone)]
struct Declared {
    topology: bool,
    user_queues: BTreeSet<QueueName>,
}

/// One logical connection to the broker: the current lapin connection and how to replace it.
pub(super) struct Link {
    url: String,
    names: Names,
    client: String,
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while a connection is being replaced, so only one caller reconnects.
    reconnecting: tokio::sync::Mutex<()>,
    declared: Mutex<Declared>,
    reconnects: AtomicU64,
    closed: AtomicBool,
}

impl Link {
    /// Connects once.
    pub async fn open(url: &str, names: Names, client: &str) -> Result<Self, AmqpError> {
        let conn = connect(url, &names, client).await?;
        Ok(Self {
            url: url.to_string(),
            names,
            client: client.to_string(),
            current: Mutex::new(Some(Arc::new(conn))),
            reconnecting: tokio::sync::Mutex::new(()),
            declared: Mutex::new(Declared::default()),
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let slot = self.current.lock().ok()?;
        slot.as_ref().filter(|c| c.status().connected()).cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.live().is_some()
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
        let conn = Arc::new(connect(&self.url, &self.names, &self.client).await?);
        let declared = self.declared.lock().map(|d| d.clone()).unwrap_or_default();
        let ch = conn.create_channel().await?;
        if declared.topology {
            topology::declare_shared(&ch, &self.names).await?;
        }
        for queue in &declared.user_queues {
            topology::declare_user_queue(&ch, &self.names, queue).await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(conn.clone());
        }
        let n = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            "reconnected to the broker at {} (reconnect #{n}); declared again: {} queue(s){}",
            redact(&self.url),
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

    /// Closes the connection for good: later calls fail instead of reconnecting.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let conn = self.current.lock().ok().and_then(|mut s| s.take());
        if let Some(conn) = conn {
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

async fn connect(url: &str, names: &Names, client: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("drover {client} ({names})").into());
    Connection::connect(url, props)
        .await
        .map_err(|e| AmqpError::Connect {
            url: redact(url),
            error: e.to_string(),
        })
}
