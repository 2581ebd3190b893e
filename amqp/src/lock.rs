//! A lock held by one broker connection: an exclusive queue, which RabbitMQ lets only the
//! connection that declared it use and deletes when that connection ends (closed, its process
//! killed, its heartbeats missed, or its node lost). The controller takes `<ns>.controller` so
//! that one controller at a time acts on a namespace.

use super::AmqpError;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;

/// How long a reconnecting holder keeps asking for its lock back before it gives up. The broker
/// keeps a connection it has stopped hearing from until its heartbeat check drops it (two
/// 10 s heartbeat intervals, `urls::DEFAULT_HEARTBEAT_SECS`), and until then that old
/// connection of this very process still holds the queue; past this patience another process
/// has it.
pub const LOCK_REGAIN_PATIENCE: Duration = Duration::from_secs(60);

/// Declares `queue` exclusive to this channel's connection; [`AmqpError::LockHeld`] when
/// another connection holds it.
pub(super) async fn take(ch: &Channel, queue: &str) -> Result<(), AmqpError> {
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
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
