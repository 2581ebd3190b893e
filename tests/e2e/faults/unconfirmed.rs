//! A publish whose confirm never comes, on a channel that stays open (as RabbitMQ 3.10 can leave
//! one after a quorum queue's leader is lost), goes through on a new channel once the confirm
//! patience is over instead of waiting forever.

use super::rabbit::PrivateBroker;
use drover_amqp::{Broker, CONFIRM_PATIENCE, Target};
use drover_protocol::{Names, QueueName};
use drover_test_support::fresh_namespace;
use std::time::Instant;

/// Suspends (Erlang's `sys:suspend`) every channel of `broker` in confirm mode: it takes no
/// more frames, while its connection lives on. Returns how many there were.
fn suspend_confirm_channels(broker: &PrivateBroker) -> usize {
    let out = broker.ctl(&[
        "eval",
        "Ps = [P || P <- rabbit_channel:list(), \
                    rabbit_channel:info(P, [confirm]) =:= [{confirm, true}]], \
         [sys:suspend(P) || P <- Ps], length(Ps).",
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {out:?}"))
}

/// Lets every channel of `broker` go on (a channel not suspended is left as it is).
fn resume_channels(broker: &PrivateBroker) {
    broker.ctl(&["eval", "[sys:resume(P) || P <- rabbit_channel:list()], ok."]);
}

#[test]
fn a_publish_left_unconfirmed_goes_through_on_a_new_channel() {
    let rabbit = PrivateBroker::start();
    let names = Names::new(&fresh_namespace("t")).expect("namespace");
    let queue = QueueName::new("default").expect("queue name");
    let broker_queue = names.user_queue(&queue);
    let target = Target::Job(broker_queue.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = Broker::connect(&rabbit.url(), names.clone(), "test")
            .await
            .expect("connect");
        broker.declare_topology().await.expect("topology");
        broker.declare_user_queue(&queue).await.expect("job queue");
        let publisher = broker.publisher().await.expect("publisher");
        publisher
            .publish_raw(&target, b"before")
            .await
            .expect("a publish on a healthy channel");

        // The fault under test: the publishing channel stops answering.
        assert_eq!(suspend_confirm_channels(&rabbit), 1);
        let started = Instant::now();
        let sent = tokio::time::timeout(
            CONFIRM_PATIENCE * 3,
            publisher.publish_raw(&target, b"after"),
        )
        .await;
        let took = started.elapsed();
        assert!(matches!(sent, Ok(Ok(()))), "{sent:?} after {took:?}");
        assert!(
            took >= CONFIRM_PATIENCE,
            "confirmed after {took:?}: the suspended channel cannot have confirmed it"
        );
        let stats = broker
            .queue_stats(&broker_queue)
            .await
            .expect("queue stats")
            .expect("the job queue");
        assert_eq!(stats.messages, 2, "both messages are queued once");
        broker.close().await;
    });
    resume_channels(&rabbit);
}
