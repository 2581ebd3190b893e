//! Reports against the real broker: what goes out together, what alone, and in which order.

use super::*;
use drover_amqp::Broker;
use drover_protocol::message::Claimed;
use drover_protocol::{AgentId, AttemptNo, Names, RunId, StepName};
use drover_test_support::namespace::{AMQP_URL, delete_namespace, fresh_namespace};
use futures_util::future::join_all;
use std::time::Duration;

async fn broker(ns: &str) -> Broker {
    let broker = Broker::connect_with_retry(
        AMQP_URL,
        Names::new(ns).unwrap(),
        "test",
        Duration::from_secs(10),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)");
    broker.declare_topology().await.unwrap();
    broker
}

fn claimed(step: &str) -> Message {
    Message::Claimed(Claimed {
        run_id: RunId::generate(),
        step: StepName::new(step).unwrap(),
        attempt: AttemptNo(1),
        agent: AgentId::new("a1").unwrap(),
    })
}

/// The steps of the claims in each message on the events queue, `messages` of them.
async fn received(broker: &Broker, messages: usize) -> Vec<Vec<String>> {
    let mut consumer = broker.consume(&broker.names().events(), 100).await.unwrap();
    let mut got = Vec::new();
    while got.len() < messages {
        let incoming = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message on the events queue")
            .unwrap()
            .unwrap();
        let steps = match &incoming.message.as_ref().unwrap().1 {
            Message::Events(batch) => batch
                .events
                .iter()
                .map(|bytes| step_of(&Message::decode(bytes).unwrap().1))
                .collect(),
            alone => vec![step_of(alone)],
        };
        got.push(steps);
        incoming.ack().await.unwrap();
    }
    got
}

fn step_of(message: &Message) -> String {
    match message {
        Message::Claimed(c) => c.step.to_string(),
        other => panic!("not a claim: {other:?}"),
    }
}

/// Queues `events` (step, may go together) at once on a fresh namespace's `Reports` and
/// returns the steps of the first `messages` messages on its events queue. The test's runtime
/// has one thread, so the publishing task runs only once all are queued, as when they were
/// made while a publish was in flight.
async fn published(events: &[(&str, bool)], messages: usize) -> Vec<Vec<String>> {
    let ns = fresh_namespace("rep");
    let broker = broker(&ns).await;
    let reports = Reports::start(broker.publisher().await.unwrap());
    let sent = join_all(
        events
            .iter()
            .map(|(step, together)| reports.send(claimed(step), *together)),
    )
    .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let got = received(&broker, messages).await;
    delete_namespace(AMQP_URL, &ns, &[] as &[&str])
        .await
        .unwrap();
    got
}

/// Steps `s0`, `s1`, ... (`n` of them).
fn steps(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

/// Each of `steps`, allowed to go with others.
fn together(steps: &[String]) -> Vec<(&str, bool)> {
    steps.iter().map(|s| (s.as_str(), true)).collect()
}

#[tokio::test]
async fn events_waiting_together_go_out_in_one_message_in_order() {
    let events = steps(10);
    assert_eq!(published(&together(&events), 1).await, vec![events]);
}

#[tokio::test]
async fn an_event_of_a_job_without_batches_goes_alone_and_keeps_its_place() {
    let queued = [
        ("a", true),
        ("b", true),
        ("c", true),
        ("d", false),
        ("e", true),
        ("f", true),
    ];
    let want: Vec<Vec<&str>> = vec![vec!["a", "b", "c"], vec!["d"], vec!["e", "f"]];
    assert_eq!(published(&queued, 3).await, want);
}

#[tokio::test]
async fn a_batch_holds_at_most_its_share_of_events() {
    let events = steps(MOST_EVENTS + 2);
    let sizes: Vec<usize> = published(&together(&events), 2)
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![MOST_EVENTS, 2]);
}
