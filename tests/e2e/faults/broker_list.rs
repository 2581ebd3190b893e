//! Several broker URLs: a dead first broker is skipped, and when the broker in use goes away
//! every process moves on to the next one of the list and the run goes on there.

use super::rabbit::PrivateBroker;
use super::{attempts, chain, ended, step_status};
use crate::harness::{AMQP_URL, Cluster};
use std::time::Duration;

#[test]
fn a_dead_first_broker_of_the_list_is_skipped() {
    let mut c = Cluster::new();
    c.amqp = format!("amqp://guest:guest@127.0.0.1:1/%2f\n{AMQP_URL}");
    c.start_up(1, &["default"], &[]);
    let file = c.pipeline("chain.toml", &chain(2, 0.1));
    let run = c.submit(&file);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("up"));
}

#[test]
fn when_the_broker_in_use_goes_away_the_run_goes_on_on_the_next() {
    let first = PrivateBroker::start();
    let mut c = Cluster::new();
    c.amqp = format!("{} {AMQP_URL}", first.url());
    c.start_up(1, &["default"], &[]);
    let file = c.pipeline("chain.toml", &chain(3, 1.5));
    let run = c.submit(&file);
    c.wait_for(&run, "s2 to run", Duration::from_secs(30), |d| {
        step_status(d, "s2") == "running"
    });

    // The fault under test: the first broker goes away for good (its queues with it).
    first.stop_app();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(90), ended);

    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("up"));
    for step in ["s1", "s2", "s3"] {
        let tries = attempts(&doc, step);
        assert_eq!(
            tries.iter().filter(|(_, o)| o == "succeeded").count(),
            1,
            "{step}: {tries:?}"
        );
    }
    let log = c.process_log("up");
    assert!(
        log.contains("reconnected to the broker at amqp://guest:***@127.0.0.1:5672"),
        "{log}"
    );
    // A run submitted afterwards goes through the second broker alone.
    let again = c.submit(&file);
    let doc = c.wait_for(
        &again,
        "the second run to end",
        Duration::from_secs(60),
        ended,
    );
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("up"));
}
