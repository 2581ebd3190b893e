//! A lock held by one broker connection: an exclusive queue, which RabbitMQ lets only the
//! connection that declared it use and deletes when that connection ends (closed, its process
//! killed, its heartbeats missed, or its node lost). The controller takes `<ns>.controller` so
//! that one controller at a time acts on a namespace. On a cluster the queue is placed on the
//! node of the connection that declares it ([`CLIENT_LOCAL`]), so the holder's connection and
//! its lock are lost together: the lock's node cannot die while the holder, connected to
//! another node, goes on believing it holds the lock.

use super::AmqpError;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// How long a reconnecting holder keeps asking for its lock back before it gives up, at the
/// default 10 s heartbeat (`urls::DEFAULT_HEARTBEAT_SECS`); see [`regain_patience`].
pub const LOCK_REGAIN_PATIENCE: Duration = Duration::from_secs(60);

/// How many heartbeat intervals of its connection a reconnecting holder asks for its lock back.
/// The broker keeps a connection it has stopped hearing from until its heartbeat check drops it
/// (about two intervals), and until then that old connection of this very process still holds
/// the queue; a new connection is opened only once this process has noticed the old one dead
/// (lapin: two intervals of silence), so six leave ample margin. Past them another process has
/// the lock, and this one gives it up.
const REGAIN_HEARTBEATS: u64 = 6;

/// How long a holder whose connection negotiated `heartbeat_secs` keeps asking for its lock back:
/// [`REGAIN_HEARTBEATS`] intervals, so a short heartbeat (quick failover) also makes a deposed
/// holder stop sooner. Without heartbeats (0) nothing bounds how long the broker keeps a dead
/// connection; the default patience applies then.
pub fn regain_patience(heartbeat_secs: u16) -> Duration {
    match heartbeat_secs {
        0 => LOCK_REGAIN_PATIENCE,
        secs => Duration::from_secs(REGAIN_HEARTBEATS * u64::from(secs)),
    }
}

/// The argument that places a classic queue on the node of its declaring connection. It is
/// RabbitMQ 3.x's default (`queue_master_locator`), but a policy may change the default and the
/// argument wins over a policy. RabbitMQ 3.10 refuses the newer `x-queue-leader-locator` on a
/// classic queue (406 "invalid arg"), so this one is given.
const CLIENT_LOCAL: (&str, &str) = ("x-queue-master-locator", "client-local");

/// Declares `queue` exclusive to this channel's connection, on that connection's node;
/// [`AmqpError::LockHeld`] when another connection holds it.
pub(super) async fn take(ch: &Channel, queue: &str) -> Result<(), AmqpError> {
    let mut args = FieldTable::default();
    args.insert(
        CLIENT_LOCAL.0.into(),
        AMQPValue::LongString(CLIENT_LOCAL.1.into()),
    );
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await;
    match declared {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("RESOURCE_LOCKED") => Err(AmqpError::LockHeld {
            queue: queue.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patience_is_six_heartbeats_and_the_default_without_them() {
        assert_eq!(
            regain_patience(crate::urls::DEFAULT_HEARTBEAT_SECS),
            LOCK_REGAIN_PATIENCE
        );
        assert_eq!(regain_patience(2), Duration::from_secs(12));
        assert_eq!(regain_patience(0), LOCK_REGAIN_PATIENCE);
    }
}
