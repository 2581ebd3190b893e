//! A step that runs longer than the broker's `consumer_timeout` still succeeds: its delivery
//! was acked when it was claimed, so the broker has nothing to time out.

use super::rabbit::PrivateBroker;
use super::{attempts, ended};
use crate::harness::Cluster;
use drover_amqp::{Broker, Target};
use drover_protocol::Names;
use std::time::Duration;

#[test]
fn a_step_longer_than_the_consumer_timeout_succeeds() {
    // A 2 s delivery timeout, checked every 500 ms.
    let rabbit = PrivateBroker::start_with(
        "consumer_timeout = 2000\n",
        Some("[{rabbit, [{channel_tick_interval, 500}]}].\n"),
    );
    let names = Names::new("timeoutcheck").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The broker does enforce it: a delivery held unacked for 5 s loses its channel.
    rt.block_on(async {
        let broker = Broker::connect(&rabbit.url(), names.clone(), "test")
            .await
            .unwrap();
        broker.declare_topology().await.unwrap();
        let publisher = broker.publisher().await.unwrap();
        let queue = names.services();
        publisher
            .publish_raw(&Target::Queue(queue.clone()), b"x")
            .await
            .unwrap();
        let mut consumer = broker.consume(&queue, 1).await.unwrap();
        let held = consumer.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let acked = held.ack().await;
        let after = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let channel_closed = acked.is_err() || !matches!(after, Err(_) | Ok(Some(Ok(_))));
        assert!(
            channel_closed,
            "the broker did not time out the delivery: {acked:?}"
        );
        broker.close().await;
    });

    let mut c = Cluster::new();
    c.amqp = rabbit.url();
    c.start_up(1, &["default"], &[]);
    let file = c.pipeline(
        "long.toml",
        "[pipeline]\nname = \"long\"\n[[step]]\nname = \"long\"\ncommand = [\"sleep\", \"6\"]\n",
    );
    let run = c.submit(&file);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("up"));
    assert_eq!(attempts(&doc, "long").len(), 1, "{doc}");
}
