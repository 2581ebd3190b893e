//! Undecodable messages are dead-lettered and counted; the controller keeps serving.

use crate::harness::{AMQP_URL, Cluster, text, wait_until};
use drover_amqp::{Broker, Target};
use drover_protocol::Names;
use std::time::Duration;

#[test]
fn garbage_on_services_and_events_is_dead_lettered() {
    let c = Cluster::up(1, &["default"]);
    let names = Names::new(&c.ns).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::connect(AMQP_URL, names.clone(), "test")
            .await
            .unwrap();
        let publisher = broker.publisher().await.unwrap();
        for queue in [names.services(), names.events()] {
            publisher
                .publish_raw(&Target::Queue(queue), b"\xc1 definitely not msgpack")
                .await
                .unwrap();
        }
        broker.close().await;
    });
    let dead = wait_until("two dead letters", Duration::from_secs(20), || {
        let doc = c.json(&["queues", "--json"]);
        let n = doc["dead_letters"].as_u64()?;
        (n >= 2).then_some(n)
    });
    assert_eq!(dead, 2);
    let metrics = reqwest_get(&format!("{}/metrics", c.url));
    assert!(metrics.contains("dead"), "{metrics}");

    let file = c.pipeline(
        "ok.toml",
        "[pipeline]\nname = \"ok\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(run["status"], "succeeded");
}

fn reqwest_get(url: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}
