//! A three-node RabbitMQ cluster with quorum queues: a 200-step run on two agents goes on when
//! the node leading the job queue is killed (`kill -9`) mid-run, and when the node the controller
//! is connected to is. Each run must end with every step succeeded exactly once, and no job in
//! the dead-letter queue. In this serial group: three broker nodes and a fan-out load the machine.

use super::fan_out;
use crate::faults::attempts;
use crate::faults::cluster::RabbitCluster;
use crate::faults::ended;
use crate::harness::Cluster;
use drover_amqp::{Broker, QueueSettings, QueueType};
use drover_protocol::{Names, QueueName};
use serde_json::Value;
use std::time::Duration;

const STEPS: usize = 200;

/// Steps that succeeded other than exactly once, with their attempts (empty: all once).
fn not_once(doc: &Value) -> Vec<(String, Vec<(String, String)>)> {
    doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .map(|name| (name.to_string(), attempts(doc, name)))
        .filter(|(_, tries)| tries.iter().filter(|(_, o)| o == "succeeded").count() != 1)
        .collect()
}

fn succeeded(doc: &Value) -> usize {
    doc["steps"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["status"] == "succeeded").count())
        .unwrap_or(0)
}

/// A controller and two agents on the cluster with quorum queues, each process given every
/// node's URL starting with the node named: the controller `controller_first`, the agents the
/// one after it and the one after that.
fn start(c: &mut Cluster, rabbit: &RabbitCluster, controller_first: usize) {
    c.amqp = rabbit.urls_from(controller_first);
    c.env.push(("DROVER_QUEUE_TYPE".into(), "quorum".into()));
    c.start_controller_with(&["controller".to_string()]);
    for (k, id) in ["qa", "qb"].into_iter().enumerate() {
        let urls = rabbit.urls_from(controller_first + 1 + k);
        c.start_agent_with(id, &["default"], &["--amqp", &urls, "--concurrency", "4"]);
    }
}

/// Runs the fan-out, kills node `victim` once a quarter of the steps succeeded, and checks the
/// run's end. The steps' second each is the workload: eight slots take about 25 s for the run,
/// so the kill lands with most steps still to take (checked: a kill after the run's end would
/// test nothing).
fn run_through_a_node_kill(rabbit: &mut RabbitCluster, c: &Cluster, victim: usize) {
    let file = c.pipeline("fan.toml", &fan_out(STEPS - 1, "sleep 1"));
    let run = c.submit(&file);
    c.wait_for(
        &run,
        "a quarter of the steps",
        Duration::from_secs(180),
        |d| succeeded(d) >= STEPS / 4 || ended(d),
    );
    rabbit.kill(victim);
    let at_kill = c.wait_for(&run, "the run's status", Duration::from_secs(30), |_| true);
    let done_at_kill = succeeded(&at_kill);
    eprintln!(
        "killed node {victim} ({}) with {done_at_kill} of {STEPS} steps succeeded",
        rabbit.nodes[victim].node
    );
    assert!(
        done_at_kill <= STEPS / 2,
        "the kill came late, {done_at_kill} of {STEPS} steps had succeeded"
    );
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(300), ended);
    let logs = || {
        format!(
            "{}\n{}\n{}",
            c.process_log("controller"),
            c.process_log("qa"),
            c.process_log("qb")
        )
    };
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", logs());
    assert_eq!(succeeded(&doc), STEPS);
    let wrong = not_once(&doc);
    assert!(wrong.is_empty(), "not succeeded exactly once: {wrong:?}");
    // Busy agents take jobs without a consumer: the queue is served all along.
    let log = c.process_log("controller");
    assert!(!log.contains("no agent consumes"), "{log}");
    let names = Names::new(&c.ns).expect("namespace");
    assert_eq!(
        rabbit.depth(&names.dead()),
        Some(0),
        "jobs were dead-lettered"
    );
}

#[test]
fn killing_the_node_leading_the_job_queue_loses_no_step() {
    let mut rabbit = RabbitCluster::start(3);
    // The job queue is declared through node 0, which leads it (client-local placement); the
    // controller is on node 1 and the agents on nodes 2 and 0, so the kill is of the leader alone.
    let mut c = Cluster::new();
    let names = Names::new(&c.ns).expect("namespace");
    let default = QueueName::new("default").expect("queue name");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = Broker::connect(&rabbit.nodes[0].url(), names.clone(), "test")
            .await
            .expect("node 0")
            .with_queues(QueueSettings {
                kind: QueueType::Quorum,
                ..Default::default()
            });
        broker.declare_topology().await.expect("topology");
        broker
            .declare_user_queue(&default)
            .await
            .expect("job queue");
        broker.close().await;
    });
    let job_queue = names.user_queue(&default);
    assert_eq!(rabbit.leader_of(&job_queue), 0);
    start(&mut c, &rabbit, 1);

    run_through_a_node_kill(&mut rabbit, &c, 0);
    // A new leader took over on a surviving node.
    assert_ne!(rabbit.leader_of(&job_queue), 0);
}

#[test]
fn killing_the_node_the_controller_is_connected_to_loses_no_step() {
    let mut rabbit = RabbitCluster::start(3);
    let mut c = Cluster::new();
    start(&mut c, &rabbit, 0);
    let ns = format!("({})", c.ns);
    let node = rabbit.node_of_connection(&["drover controller ", &ns]);
    assert_eq!(node, 0, "the controller is on the first node of its list");
    // The controller's lock lives on the node of its connection, so the two are lost together.
    let lock = Names::new(&c.ns).expect("namespace").controller_lock();
    assert_eq!(rabbit.node_of_queue(&lock), node, "the lock's node");
    run_through_a_node_kill(&mut rabbit, &c, node);
    let log = c.process_log("controller");
    assert!(log.contains("reconnected to the broker"), "{log}");
    // Reconnected elsewhere, it took its lock again there.
    let now = rabbit.node_of_connection(&["drover controller ", &ns]);
    assert_ne!(now, node, "the controller moved off the killed node");
    assert_eq!(
        rabbit.node_of_queue(&lock),
        now,
        "the lock's node after the kill"
    );
}
