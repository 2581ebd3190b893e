//! The AMQP module against the real broker: confirms, mandatory routing, dead letters, stats.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

use drover_amqp::{AmqpError, Broker, Target};
use drover_protocol::message::{Abort, Message};
use drover_protocol::{Names, QueueName, RunId};
use std::time::Duration;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker() -> Broker {
    let ns = format!("t{}", &uuid_like()[..12]);
    let broker = Broker::connect_with_retry(
        URL,
        Names::new(&ns).unwrap(),
        "test",
        Duration::from_secs(10),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)");
    broker.declare_topology().await.unwrap();
    broker
}

fn uuid_like() -> String {
    RunId::generate().to_string().chars().rev().collect()
}

fn abort() -> Message {
    Message::Abort(Abort {
        run_id: RunId::generate(),
        step: None,
        reason: None,
    })
}

#[tokio::test]
async fn publish_consume_and_stats() {
    let broker = broker().await;
    let names = broker.names().clone();
    let publisher = broker.publisher().await.unwrap();
    let msg = abort();
    publisher
        .publish(&Target::Queue(names.services()), &msg)
        .await
        .unwrap();
    let stats = broker
        .queue_stats(&names.services())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stats.messages, stats.consumers), (1, 0));

    let mut consumer = broker.consume(&names.services(), 10).await.unwrap();
    let incoming = consumer.next().await.unwrap().unwrap();
    let (_, got) = incoming.message.as_ref().unwrap();
    assert_eq!(got, &msg);
    incoming.ack().await.unwrap();
    assert!(
        broker
            .queue_stats("no-such-queue-here")
            .await
            .unwrap()
            .is_none()
    );
    broker.delete_namespace(&[]).await.unwrap();
    assert!(
        broker
            .queue_stats(&names.services())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unroutable_publish_is_an_error() {
    let broker = broker().await;
    let publisher = broker.publisher().await.unwrap();
    let err = publisher
        .publish(&Target::Queue("nobody-declared-this".into()), &abort())
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpError::Unroutable(_)), "{err}");
    broker.delete_namespace(&[]).await.unwrap();
}

#[tokio::test]
async fn dead_letters_carry_their_reason_and_rejects_reach_the_dead_queue() {
    let broker = broker().await;
    let names = broker.names().clone();
    let queue = QueueName::new("work").unwrap();
    broker.declare_user_queue(&queue).await.unwrap();
    let publisher = broker.publisher().await.unwrap();
    publisher
        .publish_raw(&Target::Queue(names.user_queue(&queue)), b"garbage")
        .await
        .unwrap();
    let mut consumer = broker.consume(&names.user_queue(&queue), 1).await.unwrap();
    let incoming = consumer.next().await.unwrap().unwrap();
    assert_eq!(incoming.message.as_ref().unwrap_err().code(), "malformed");
    incoming.reject().await.unwrap();
    publisher
        .dead_letter(b"other", &names.services(), "malformed")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = broker.queue_stats(&names.dead()).await.unwrap().unwrap();
        if stats.messages == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.delete_namespace(&[queue]).await.unwrap();
}
