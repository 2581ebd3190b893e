//! Declaring a namespace's queues and exchange on a channel: the same arguments every time, as
//! RabbitMQ refuses a redeclaration with different ones.

use super::{AmqpError, MAX_PRIORITY};
use drover_protocol::ids::QueueName;
use drover_protocol::names::{Names, services_queue};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The dead-letter queue, the events queue, the services queue and the control exchange.
pub(super) async fn declare_shared(ch: &Channel, names: &Names) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions::durable();
    ch.queue_declare(names.dead().into(), durable, FieldTable::default())
        .await?;
    ch.queue_declare(names.events().into(), durable, dead_letter_args(names))
        .await?;
    ch.exchange_declare(
        names.control_exchange().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    declare_user_queue(ch, names, &services_queue()).await
}

/// A user queue (`default`, `gpu`, ...) with its dead-letter route and priorities.
pub(super) async fn declare_user_queue(
    ch: &Channel,
    names: &Names,
    queue: &QueueName,
) -> Result<(), AmqpError> {
    let mut args = dead_letter_args(names);
    args.insert(
        "x-max-priority".into(),
        AMQPValue::ShortShortUInt(MAX_PRIORITY),
    );
    ch.queue_declare(
        names.user_queue(queue).into(),
        QueueDeclareOptions::durable(),
        args,
    )
    .await?;
    Ok(())
}

fn dead_letter_args(names: &Names) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(names.dead().into()),
    );
    args
}
