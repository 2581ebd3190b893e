//! Declaring a namespace's queues and exchanges on a channel: the same arguments every time, as
//! RabbitMQ refuses a redeclaration with different ones.
//!
//! Every drover message is published through an exchange of its role, never the default
//! exchange, so broker permissions per user can say who may send what: `<ns>.submit` reaches
//! the services queue, `<ns>.jobs` the job queues, `<ns>.events` the events queue and
//! `<ns>.dead` the dead-letter queue; `<ns>.control` reaches agents' control queues;
//! `<ns>.journal` the controller's state journal (`stream`); `<ns>.leader` the active
//! controller's URL (`leader`).

use super::queues::QueueSettings;
use super::{AmqpError, MAX_PRIORITY};
use drover_protocol::ids::QueueName;
use drover_protocol::names::{Names, services_queue};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The dead-letter and events queues, the services queue, and the exchanges in front of them.
pub(super) async fn declare_shared(
    ch: &Channel,
    names: &Names,
    queues: &QueueSettings,
) -> Result<(), AmqpError> {
    let mut dead_args = FieldTable::default();
    // Nothing dead-letters out of the dead-letter queue, and operators read it: no limit.
    queues.add_args(&mut dead_args, false);
    declare_queue(ch, &names.dead(), dead_args, queues).await?;
    let mut events_args = dead_letter_args(names);
    queues.add_args(&mut events_args, true);
    declare_queue(ch, &names.events(), events_args, queues).await?;
    exchange(ch, &names.control_exchange(), ExchangeKind::Topic).await?;
    for name in [
        names.submit_exchange(),
        names.jobs_exchange(),
        names.events_exchange(),
        names.dead_exchange(),
    ] {
        exchange(ch, &name, ExchangeKind::Direct).await?;
    }
    bind(ch, &names.dead(), &names.dead_exchange()).await?;
    bind(ch, &names.events(), &names.events_exchange()).await?;
    declare_user_queue(ch, names, &services_queue(), queues).await
}

/// A user queue (`default`, `gpu`, ...) with its dead-letter route, and priorities on classic
/// queues, bound to the jobs exchange; the `services` queue is bound to the submit exchange
/// instead.
pub(super) async fn declare_user_queue(
    ch: &Channel,
    names: &Names,
    queue: &QueueName,
    queues: &QueueSettings,
) -> Result<(), AmqpError> {
    let mut args = dead_letter_args(names);
    if queues.has_priorities() {
        args.insert(
            "x-max-priority".into(),
            AMQPValue::ShortShortUInt(MAX_PRIORITY),
        );
    }
    queues.add_args(&mut args, true);
    let broker_queue = names.user_queue(queue);
    declare_queue(ch, &broker_queue, args, queues).await?;
    let via = if *queue == services_queue() {
        names.submit_exchange()
    } else {
        names.jobs_exchange()
    };
    bind(ch, &broker_queue, &via).await
}

/// Declares a durable queue; a queue that exists with other arguments (another `--queue-type`,
/// typically) is [`AmqpError::QueueMismatch`], which says what to do.
pub(super) async fn declare_queue(
    ch: &Channel,
    queue: &str,
    args: FieldTable,
    queues: &QueueSettings,
) -> Result<(), AmqpError> {
    match ch
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("PRECONDITION_FAILED") => Err(AmqpError::QueueMismatch {
            queue: queue.to_string(),
            kind: queues.kind,
            error: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Declares a durable stream queue (`args` hold its `x-queue-type`).
pub(super) async fn declare_stream(
    ch: &Channel,
    queue: &str,
    args: FieldTable,
) -> Result<(), AmqpError> {
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await?;
    Ok(())
}

pub(super) async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), AmqpError> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Binds `queue` to the direct exchange `exchange` under the queue's own name.
pub(super) async fn bind(ch: &Channel, queue: &str, exchange: &str) -> Result<(), AmqpError> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Messages a queue rejects go to the dead-letter queue through the default exchange: the
/// broker moves them itself, whoever rejected them, so no user needs write on that exchange.
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
