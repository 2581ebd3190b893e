//! Publishing with publisher confirms and `mandatory`: an unroutable message is an error.

use super::{AmqpError, REASON_HEADER, SOURCE_HEADER};
use crate::message::Message;
use crate::names::Names;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A broker queue by its full name, through the default exchange.
    Queue(String),
    /// The namespace's control exchange with a routing key.
    Control(String),
}

/// Publishes on one confirm-mode channel; cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    names: Names,
}

impl Publisher {
    pub(super) fn new(channel: Channel, names: Names) -> Self {
        Self { channel, names }
    }

    /// Publishes a message persistently and waits until the broker has confirmed it.
    pub async fn publish(&self, target: &Target, msg: &Message) -> Result<(), AmqpError> {
        self.publish_bytes(target, &msg.encode(), FieldTable::default(), 0)
            .await
    }

    /// Publishes a message with a priority (0..=[`super::MAX_PRIORITY`]).
    pub async fn publish_with_priority(
        &self,
        target: &Target,
        msg: &Message,
        priority: u8,
    ) -> Result<(), AmqpError> {
        self.publish_bytes(target, &msg.encode(), FieldTable::default(), priority)
            .await
    }

    /// Publishes arbitrary bytes; tests use it to send garbage.
    pub async fn publish_raw(&self, target: &Target, payload: &[u8]) -> Result<(), AmqpError> {
        self.publish_bytes(target, payload, FieldTable::default(), 0)
            .await
    }

    /// Puts a message that could not be handled on the dead-letter queue, with the reason.
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        source_queue: &str,
        reason: &str,
    ) -> Result<(), AmqpError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        headers.insert(
            SOURCE_HEADER.into(),
            AMQPValue::LongString(source_queue.into()),
        );
        self.publish_bytes(&Target::Queue(self.names.dead()), payload, headers, 0)
            .await
    }

    async fn publish_bytes(
        &self,
        target: &Target,
        payload: &[u8],
        headers: FieldTable,
        priority: u8,
    ) -> Result<(), AmqpError> {
        let (exchange, routing_key) = match target {
            Target::Queue(q) => (String::new(), q.clone()),
            Target::Control(key) => (self.names.control_exchange(), key.clone()),
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/msgpack".into())
            .with_priority(priority)
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(routing_key)),
            Confirmation::Nack(_) => Err(AmqpError::Nacked(routing_key)),
        }
    }
}
