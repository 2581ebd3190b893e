//! Benchmark 1, the floor: what raw lapin gets from this broker on this machine. Persistent
//! 200-byte messages with publisher confirms on a durable queue, as drover publishes them.
//!
//! This module imports lapin directly (the one exception to "only `drover-amqp` imports
//! lapin"): the limit must be measured without drover's wrapper, which awaits each confirm.

use crate::stats;
use anyhow::{Result, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Instant;

/// What one repetition measured.
#[derive(Debug, Clone, Copy)]
pub struct AmqpSample {
    /// Messages per second published with every confirm awaited (pipelined).
    pub publish_rate: f64,
    /// Messages per second consumed and acked.
    pub consume_rate: f64,
    /// One message: publish until both its confirm and its delivery arrived (ms).
    pub rt_p50_ms: f64,
    pub rt_p99_ms: f64,
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct AmqpPlan {
    pub messages: usize,
    pub size: usize,
    pub round_trips: usize,
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/msgpack".into())
}

async fn publish_one(ch: &Channel, queue: &str, payload: &[u8]) -> Result<lapin::PublisherConfirm> {
    Ok(ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            persistent(),
        )
        .await?)
}

/// Runs one repetition against a fresh durable queue in namespace `ns`, then deletes it.
pub async fn measure(url: &str, ns: &str, plan: AmqpPlan) -> Result<AmqpSample> {
    let producer = Connection::connect(url, ConnectionProperties::default()).await?;
    let consumer_conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let queue = format!("{ns}.amqp-limit");
    let pub_ch = producer.create_channel().await?;
    pub_ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let payload = vec![b'x'; plan.size];

    // Publish: all messages in flight, every confirm awaited.
    let start = Instant::now();
    let mut confirms = Vec::with_capacity(plan.messages);
    for _ in 0..plan.messages {
        confirms.push(publish_one(&pub_ch, &queue, &payload).await?);
    }
    for c in confirms {
        if !c.await?.is_ack() {
            bail!("the broker refused a message (nack)");
        }
    }
    let publish_rate = plan.messages as f64 / start.elapsed().as_secs_f64();

    // Consume and ack each one.
    let con_ch = consumer_conn.create_channel().await?;
    con_ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer = con_ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..plan.messages {
        let Some(delivery) = consumer.next().await else {
            bail!("the consumer ended early");
        };
        delivery?.ack(BasicAckOptions::default()).await?;
    }
    let consume_rate = plan.messages as f64 / start.elapsed().as_secs_f64();

    // Round trips: one message at a time, the consumer waiting on the other connection.
    let warmup = 20;
    let mut rts = Vec::with_capacity(plan.round_trips);
    for i in 0..plan.round_trips + warmup {
        let start = Instant::now();
        let confirm = publish_one(&pub_ch, &queue, &payload).await?;
        let (confirmed, delivered) = tokio::join!(confirm, consumer.next());
        let elapsed = start.elapsed();
        if !confirmed?.is_ack() {
            bail!("the broker refused a message (nack)");
        }
        let Some(delivery) = delivered else {
            bail!("the consumer ended early");
        };
        delivery?.ack(BasicAckOptions::default()).await?;
        if i >= warmup {
            rts.push(elapsed.as_secs_f64() * 1000.0);
        }
    }

    let _ = pub_ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = producer.close(200, "bench done".into()).await;
    let _ = consumer_conn.close(200, "bench done".into()).await;
    Ok(AmqpSample {
        publish_rate,
        consume_rate,
        rt_p50_ms: stats::percentile(&rts, 50.0),
        rt_p99_ms: stats::percentile(&rts, 99.0),
    })
}
