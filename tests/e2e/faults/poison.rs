//! Garbage, an unknown protocol version and a job of an unknown run on every queue are
//! all dead-lettered with a reason and counted; the services keep serving.

use super::ended;
use crate::harness::{Cluster, text, wait_until};
use drover_amqp::{Broker, Consumer, Target};
use drover_protocol::message::{EnvelopeMeta, JobKind, Message, StepJob};
use drover_protocol::{Names, RunId};
use std::collections::BTreeMap;
use std::time::Duration;

const GOLDEN_JOB: &[u8] = include_bytes!("../../../protocol/tests/golden/step_job.msgpack");

/// A well-formed job of a run no controller knows, running `true`.
fn stray_job() -> Message {
    let Ok((_, Message::StepJob(job))) = Message::decode(GOLDEN_JOB) else {
        panic!("the golden step job decodes");
    };
    let mut job: StepJob = job;
    job.run_id = RunId::generate();
    job.job.kind = JobKind::Command {
        argv: vec!["true".into()],
    };
    job.job.inputs.clear();
    job.job.outputs.clear();
    Message::StepJob(job)
}

fn future_version(msg: &Message) -> Vec<u8> {
    let mut meta = EnvelopeMeta::fresh();
    meta.v = 999;
    msg.encode_with(meta).unwrap()
}

/// Reasons of the dead letters, read from the dead-letter queue.
async fn reasons(dead: &mut Consumer, want: usize) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for _ in 0..want {
        let next = tokio::time::timeout(Duration::from_secs(20), dead.next()).await;
        let Ok(Some(Ok(incoming))) = next else {
            panic!("only {found:?} dead letters arrived, wanted {want}");
        };
        let reason = incoming.reason().unwrap_or("none").to_string();
        *found.entry(reason).or_default() += 1;
        incoming.ack().await.unwrap();
    }
    found
}

#[test]
fn poison_on_every_queue_is_dead_lettered_and_service_goes_on() {
    let c = Cluster::up(1, &["default"]);
    let names = Names::new(&c.ns).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(async {
        let broker = Broker::connect(&c.amqp, names.clone(), "test")
            .await
            .unwrap();
        // The agent may not have declared its queue yet when the controller is ready.
        broker
            .declare_user_queue(&"default".parse().unwrap())
            .await
            .unwrap();
        let publisher = broker.publisher().await.unwrap();
        let job = stray_job();
        let default = names.user_queue(&"default".parse().unwrap());
        for queue in [names.services(), names.events(), default] {
            let target = Target::Queue(queue);
            publisher
                .publish_raw(&target, b"\xc1 not msgpack")
                .await
                .unwrap();
            publisher
                .publish_raw(&target, &future_version(&job))
                .await
                .unwrap();
            publisher.publish(&target, &job).await.unwrap();
        }
        broker
    });
    // 3 per queue, but the stray job on `default` is claimed by the agent: its claim and its
    // result reach the controller, which refuses both.
    wait_until(
        "ten dead letters in `drover queues`",
        Duration::from_secs(30),
        || {
            let doc = c.json(&["queues", "--json"]);
            (doc["dead_letters"].as_u64()? >= 10).then_some(())
        },
    );
    let found = rt.block_on(async {
        let mut dead = broker.consume(&names.dead(), 16).await.unwrap();
        let found = reasons(&mut dead, 10).await;
        dead.close().await;
        broker.close().await;
        found
    });
    assert_eq!(found.get("malformed"), Some(&3), "{found:?}");
    assert_eq!(found.get("unsupported_version"), Some(&3), "{found:?}");
    assert_eq!(found.get("wrong_queue"), Some(&2), "{found:?}");
    assert_eq!(found.get("unknown_run"), Some(&2), "{found:?}");
    let metrics = c.drover(&["queues", "--json"]);
    let metrics: serde_json::Value = serde_json::from_slice(&metrics.stdout).unwrap();
    let by_controller = &metrics["dead_lettered_by_controller"];
    assert_eq!(by_controller["unknown_run"], 2, "{metrics}");

    let file = c.pipeline(
        "ok.toml",
        "[pipeline]\nname = \"ok\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ended(&run) && run["status"] == "succeeded", "{run}");
}
