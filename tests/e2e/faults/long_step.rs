//! A step that runs longer than the broker's `consumer_timeout` still succeeds: its delivery
//! was acked when it was claimed, so the broker has nothing to time out.

use super::rabbit::PrivateBroker;
use super::{attempts, ended};
use crate::harness::Cluster;
use drover_amqp::{Broker, Target};
use drover_protocol::Names;
use drover_test_support::{Deadline, eventually_async};
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
    // The broker does enforce it: a delivery held unacked past the timeout costs the consumer
    // its channel, and the message goes back to the queue with no consumer left.
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
        let timed_out = Deadline::new(
            "the broker to time out the held delivery",
            Duration::from_secs(30),
        )
        .every(Duration::from_millis(200));
        eventually_async(timed_out, || async {
            match broker.queue_stats(&queue).await {
                Ok(Some(q)) if q.consumers == 0 && q.messages == 1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .unwrap();
        drop(held);
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
