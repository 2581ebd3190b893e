//! Quorum queues against the real broker (a single node is a valid quorum): the namespace's
//! queues are declared as quorum queues, a job returned past the delivery limit is dead-lettered,
//! and a namespace declared with the other queue type fails with what to do.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

use drover_amqp::{AmqpError, Broker, QueueSettings, QueueType, Target};
use drover_protocol::message::{Abort, Message};
use drover_protocol::{Names, QueueName, RunId};
use std::time::Duration;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn namespace() -> Names {
    let id: String = RunId::generate().to_string().chars().rev().collect();
    Names::new(&format!("q{}", &id[..12])).unwrap()
}

async fn broker(names: &Names, queues: QueueSettings) -> Broker {
    Broker::connect_with_retry(URL, names.clone(), "test", Duration::from_secs(10))
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)")
        .with_queues(queues)
}

fn quorum(delivery_limit: u32) -> QueueSettings {
    QueueSettings {
        kind: QueueType::Quorum,
        delivery_limit,
    }
}

fn abort() -> Message {
    Message::Abort(Abort {
        run_id: RunId::generate(),
        step: None,
        reason: None,
    })
}

async fn wait_for_depth(broker: &Broker, queue: &str, want: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = broker.queue_stats(queue).await.unwrap().unwrap();
        if stats.messages == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {stats:?}, wanted {want} messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On RabbitMQ 3.x a consumer's channel closed with the job unacked counts as a delivery, as a
/// requeue does; past the limit the job goes to the dead-letter queue, itself a quorum queue.
#[tokio::test]
async fn a_job_returned_past_the_delivery_limit_is_dead_lettered() {
    let names = namespace();
    let broker = broker(&names, quorum(2)).await;
    broker.declare_topology().await.unwrap();
    let queue = QueueName::new("work").unwrap();
    broker.declare_user_queue(&queue).await.unwrap();
    let job_queue = names.user_queue(&queue);
    let publisher = broker.publisher().await.unwrap();
    publisher
        .publish(&Target::Job(job_queue.clone()), &abort())
        .await
        .unwrap();

    let mut deliveries = 0;
    while broker
        .queue_stats(&names.dead())
        .await
        .unwrap()
        .unwrap()
        .messages
        == 0
    {
        let getter = broker.getter().await.unwrap();
        match getter.get(&job_queue).await.unwrap() {
            Some(incoming) => {
                deliveries += 1;
                if deliveries % 2 == 0 {
                    incoming.requeue().await.unwrap();
                }
                // Otherwise the channel closes with the job unacked.
                getter.close().await;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(deliveries <= 10, "still not dead-lettered");
    }
    assert_eq!(deliveries, 3, "the limit 2 allows two returns");
    wait_for_depth(&broker, &job_queue, 0).await;

    let types = queue_types(&names);
    for queue in [names.dead(), names.events(), names.services(), job_queue] {
        assert_eq!(
            types.get(&queue).map(String::as_str),
            Some("quorum"),
            "{types:?}"
        );
    }
    broker.delete_namespace(&[queue]).await.unwrap();
}

/// The namespace's queues and their types, as the broker lists them.
fn queue_types(names: &Names) -> std::collections::BTreeMap<String, String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", "type"])
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(name, _)| name.starts_with(&format!("{}.", names.namespace())))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// A namespace declared with classic queues cannot be declared again with quorum queues (or
/// the other way round): the error names the queue and says how to move or keep it.
#[tokio::test]
async fn a_namespace_of_the_other_queue_type_fails_with_what_to_do() {
    let names = namespace();
    let classic = broker(&names, QueueSettings::default()).await;
    classic.declare_topology().await.unwrap();
    let quorum = broker(&names, quorum(50)).await;
    let err = quorum.declare_topology().await.unwrap_err();
    assert!(
        matches!(
            &err,
            AmqpError::QueueMismatch {
                kind: QueueType::Quorum,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    for hint in [
        "--queue-type quorum",
        "rabbitmqctl delete_queue",
        "x-queue-type",
    ] {
        assert!(text.contains(hint), "{hint} missing from: {text}");
    }
    classic.delete_namespace(&[]).await.unwrap();

    quorum.declare_topology().await.unwrap();
    let err = classic.declare_topology().await.unwrap_err();
    assert!(
        matches!(
            &err,
            AmqpError::QueueMismatch {
                kind: QueueType::Classic,
                ..
            }
        ),
        "{err}"
    );
    quorum.delete_namespace(&[]).await.unwrap();
}
