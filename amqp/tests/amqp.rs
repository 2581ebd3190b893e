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
    publisher.publish(&Target::Submit, &msg).await.unwrap();
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
async fn a_purge_removes_the_waiting_messages_and_says_how_many() {
    let broker = broker().await;
    let names = broker.names().clone();
    let publisher = broker.publisher().await.unwrap();
    for _ in 0..3 {
        publisher.publish(&Target::Submit, &abort()).await.unwrap();
    }
    assert_eq!(broker.purge_queue(&names.services()).await.unwrap(), 3);
    let stats = broker.queue_stats(&names.services()).await.unwrap();
    assert_eq!(stats.map(|s| s.messages), Some(0));
    assert_eq!(broker.purge_queue(&names.services()).await.unwrap(), 0);
    broker.delete_namespace(&[]).await.unwrap();
}

/// What an agent decides claiming ahead on: a message taken with `basic.get` says how many
/// are left behind it; a consumer's delivery says nothing.
#[tokio::test]
async fn a_message_taken_from_its_queue_says_how_many_are_left() {
    let broker = broker().await;
    let names = broker.names().clone();
    let publisher = broker.publisher().await.unwrap();
    for _ in 0..3 {
        publisher.publish(&Target::Submit, &abort()).await.unwrap();
    }
    let getter = broker.getter().await.unwrap();
    let mut left = Vec::new();
    while let Some(incoming) = getter.get(&names.services()).await.unwrap() {
        left.push(incoming.remaining);
        incoming.ack().await.unwrap();
    }
    assert_eq!(left, [Some(2), Some(1), Some(0)]);
    publisher.publish(&Target::Submit, &abort()).await.unwrap();
    let mut consumer = broker.consume(&names.services(), 1).await.unwrap();
    let delivered = consumer.next().await.unwrap().unwrap();
    assert_eq!(delivered.remaining, None);
    delivered.ack().await.unwrap();
    getter.close().await;
    broker.delete_namespace(&[]).await.unwrap();
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
        .publish_raw(&Target::Job(names.user_queue(&queue)), b"garbage")
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

/// Each role's exchange reaches its queue and nothing else: the submit exchange only the
/// services queue, the jobs exchange only job queues, the events exchange only the events queue.
#[tokio::test]
async fn each_exchange_reaches_its_own_queues_only() {
    let broker = broker().await;
    let names = broker.names().clone();
    let queue = QueueName::new("work").unwrap();
    broker.declare_user_queue(&queue).await.unwrap();
    let publisher = broker.publisher().await.unwrap();
    for target in [
        Target::Submit,
        Target::Job(names.user_queue(&queue)),
        Target::Events,
    ] {
        publisher.publish(&target, &abort()).await.unwrap();
    }
    for queue in [names.services(), names.user_queue(&queue), names.events()] {
        let stats = broker.queue_stats(&queue).await.unwrap().unwrap();
        assert_eq!(stats.messages, 1, "{queue}");
    }
    // The jobs exchange does not reach the services or events queue.
    for wrong in [names.services(), names.events()] {
        let err = publisher
            .publish(&Target::Job(wrong.clone()), &abort())
            .await
            .unwrap_err();
        assert!(matches!(err, AmqpError::Unroutable(_)), "{wrong}: {err}");
    }
    broker.delete_namespace(&[queue]).await.unwrap();
}

/// A delivery past the consumer's limit arrives undecoded as `too_large`; a publish past the
/// publisher's limit fails before it is sent.
#[tokio::test]
async fn messages_past_the_size_limit_are_refused_on_both_sides() {
    let broker = broker().await.with_max_message_size(1_000);
    let names = broker.names().clone();
    let publisher = broker.publisher().await.unwrap();
    publisher
        .publish_raw(&Target::Submit, &[0u8; 1_001])
        .await
        .unwrap();
    publisher.publish(&Target::Submit, &abort()).await.unwrap();
    let mut consumer = broker.consume(&names.services(), 10).await.unwrap();
    let big = consumer.next().await.unwrap().unwrap();
    let err = big.message.as_ref().unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(err.to_string().contains("1001 bytes"), "{err}");
    big.ack().await.unwrap();
    let small = consumer.next().await.unwrap().unwrap();
    assert!(small.message.is_ok());
    small.ack().await.unwrap();

    let mut large = abort();
    if let Message::Abort(a) = &mut large {
        a.reason = Some("x".repeat(2_000));
    }
    let err = publisher
        .publish(&Target::Submit, &large)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AmqpError::TooLarge { limit: 1_000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--max-message-size"), "{err}");
    broker.delete_namespace(&[]).await.unwrap();
}

/// With a signer, jobs carry a signature that verifies over the body as delivered; other
/// targets and publishers without a signer send none.
#[tokio::test]
async fn jobs_carry_a_signature_that_verifies_over_the_delivered_body() {
    use drover_amqp::signing::{JobSigner, generate};
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = generate().unwrap();
    std::fs::write(dir.path().join("k.pem"), private).unwrap();
    let signer = std::sync::Arc::new(JobSigner::from_file(&dir.path().join("k.pem")).unwrap());
    let verifier = signer.verifier();

    let broker = broker().await;
    let names = broker.names().clone();
    let queue = QueueName::new("work").unwrap();
    broker.declare_user_queue(&queue).await.unwrap();
    let mut signing = broker.publisher().await.unwrap();
    signing.sign_jobs(signer);
    let plain = broker.publisher().await.unwrap();
    let target = Target::Job(names.user_queue(&queue));
    signing.publish(&target, &abort()).await.unwrap();
    plain.publish(&target, &abort()).await.unwrap();
    signing.publish(&Target::Submit, &abort()).await.unwrap();

    let mut jobs = broker.consume(&names.user_queue(&queue), 10).await.unwrap();
    let signed = jobs.next().await.unwrap().unwrap();
    assert!(signed.signature().is_some());
    assert_eq!(
        verifier.verify(signed.payload(), signed.signature()),
        Ok(())
    );
    let unsigned = jobs.next().await.unwrap().unwrap();
    assert_eq!(unsigned.signature(), None);
    let mut services = broker.consume(&names.services(), 10).await.unwrap();
    assert_eq!(services.next().await.unwrap().unwrap().signature(), None);
    broker.delete_namespace(&[queue]).await.unwrap();
}
