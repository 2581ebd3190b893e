//! Which kind of broker queue a namespace's durable queues are (`--queue-type`): classic queues
//! on one node, or quorum queues replicated by Raft across a cluster, with the arguments each
//! kind is declared with.

use lapin::types::{AMQPValue, FieldTable};
use std::fmt;
use std::str::FromStr;

/// Deliveries of one message a quorum queue makes before it dead-letters it (`x-delivery-limit`),
/// unless `--delivery-limit` says otherwise.
///
/// Before RabbitMQ 4.3 every return of an unacked message counts as a delivery: a
/// `basic.nack`/`basic.reject` with requeue, and a channel or connection closed with the message
/// unacked. An agent acks a job as soon as its claim is confirmed, so a healthy job is returned
/// only while nobody has claimed it yet: a consumer closed with a delivery the agent had no slot
/// for, or a connection lost within that claim. Both are rare per job (ARCHITECTURE.md, "Queue
/// types"); a job that kills the agent taking it stops after 50 deliveries.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 50;

/// The kind of queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// One node holds each queue; priorities (`x-max-priority`) work. The default.
    #[default]
    Classic,
    /// Replicated across the cluster's nodes; no priorities on RabbitMQ 3.x, a delivery limit.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!(
                "unknown queue type {other:?}: use classic (one broker node) or quorum (a cluster)"
            )),
        }
    }
}

/// How a namespace's durable queues are declared; every process of a namespace must use the
/// same, as RabbitMQ refuses to redeclare a queue with other arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub kind: QueueType,
    /// Quorum queues only: deliveries of a message before it is dead-lettered.
    pub delivery_limit: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            kind: QueueType::Classic,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }
}

impl QueueSettings {
    /// Whether job queues keep step priorities (`x-max-priority`).
    pub fn has_priorities(&self) -> bool {
        self.kind == QueueType::Classic
    }

    /// Adds the kind's arguments to a queue's: a quorum queue's type and, when `limited` (a
    /// queue whose messages are consumed and may be returned), its delivery limit.
    pub(super) fn add_args(&self, args: &mut FieldTable, limited: bool) {
        if self.kind == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            if limited {
                args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongUInt(self.delivery_limit),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_explains_others() {
        assert_eq!("classic".parse(), Ok(QueueType::Classic));
        assert_eq!("quorum".parse(), Ok(QueueType::Quorum));
        let err = "stream".parse::<QueueType>().unwrap_err();
        assert!(err.contains("use classic"), "{err}");
    }

    #[test]
    fn only_quorum_adds_arguments() {
        let mut args = FieldTable::default();
        QueueSettings::default().add_args(&mut args, true);
        assert!(args.inner().is_empty());
        let quorum = QueueSettings {
            kind: QueueType::Quorum,
            delivery_limit: 7,
        };
        quorum.add_args(&mut args, false);
        assert_eq!(args.inner().len(), 1);
        quorum.add_args(&mut args, true);
        assert_eq!(
            args.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongUInt(7))
        );
    }
}
