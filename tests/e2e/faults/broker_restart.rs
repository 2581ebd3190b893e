//! Restart RabbitMQ mid-pipeline: every process reconnects and the run succeeds.

use super::rabbit::PrivateBroker;
use super::{attempts, chain, ended, step_status};
use crate::harness::Cluster;
use std::time::{Duration, Instant};

#[test]
fn a_pipeline_survives_a_broker_restart() {
    let rabbit = PrivateBroker::start();
    let mut c = Cluster::new();
    c.amqp = rabbit.url();
    c.start_up(1, &["default"], &[]);
    let file = c.pipeline("chain.toml", &chain(3, 1.5));
    let run = c.submit(&file);
    c.wait_for(&run, "s2 to run", Duration::from_secs(30), |d| {
        step_status(d, "s2") == "running"
    });

    rabbit.stop_app();
    // The fault under test: the broker stays away for 3 s (longer than the 3 s lease).
    std::thread::sleep(Duration::from_secs(3));
    rabbit.start_app();
    let back = Instant::now();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(90), ended);
    let recovered = back.elapsed();

    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("up"));
    for step in ["s1", "s2", "s3"] {
        let tries = attempts(&doc, step);
        let wins = tries.iter().filter(|(_, o)| o == "succeeded").count();
        assert_eq!(wins, 1, "{step}: {tries:?}");
        assert!(
            !tries.iter().any(|(_, o)| o == "lost"),
            "a lease ran out while the broker was away: {tries:?}"
        );
    }
    let log = c.process_log("up");
    assert!(log.contains("reconnected to the broker"), "{log}");
    let metrics = c.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("drover_amqp_reconnects_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    eprintln!(
        "recovery (broker stop_app 3s, start_app): run finished {:.2}s after the broker was back (s3 alone takes 1.5s)",
        recovered.as_secs_f64()
    );
}
