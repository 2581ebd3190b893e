//! Limits on what a submission may be: steps per pipeline (`--max-steps`) and message size
//! (`--max-message-size`), refused with clear errors before publishing, at the controller, and
//! for deliveries past the limit.

use crate::harness::{Cluster, text, wait_until};
use drover_amqp::{Broker, Target};
use drover_protocol::Names;
use std::time::Duration;

fn steps(n: usize) -> String {
    let mut toml = "[pipeline]\nname = \"many\"\n".to_string();
    for i in 0..n {
        toml.push_str(&format!(
            "[[step]]\nname = \"s{i}\"\ncommand = [\"true\"]\n"
        ));
    }
    toml
}

#[test]
fn submissions_past_the_limits_are_refused_with_the_reason() {
    let mut c = Cluster::new();
    c.start_up(
        1,
        &["default"],
        &["--max-steps", "3", "--max-message-size", "8KiB"],
    );

    // Past the message size: the CLI refuses before publishing.
    let big = c.pipeline("big.toml", &steps(200));
    let out = c.drover(&["--max-message-size", "1KiB", "run", big.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("more than --max-message-size (1024 bytes)")
            && said.contains("nothing was submitted"),
        "{said}"
    );

    // Past the step limit: the controller rejects the run and says why.
    let four = c.pipeline("four.toml", &steps(4));
    let (_, run) = c.run_wait(&four, &[]);
    assert_eq!(run["status"], "rejected", "{run}");
    let status = c.json(&["status", run["run_id"].as_str().unwrap(), "--json"]);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("4 steps") && error.contains("at most 3") && error.contains("--max-steps"),
        "{status}"
    );
    let three = c.pipeline("three.toml", &steps(3));
    let (out, run) = c.run_wait(&three, &[]);
    assert_eq!(run["status"], "succeeded", "{}", text(&out));

    // A delivery past the controller's limit (from a client with a larger one) is
    // dead-lettered unread, with the reason.
    let names = Names::new(&c.ns).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::connect(&c.amqp, names.clone(), "test")
            .await
            .unwrap();
        let publisher = broker.publisher().await.unwrap();
        publisher
            .publish_raw(&Target::Submit, &vec![0u8; 9 * 1024])
            .await
            .unwrap();
        broker.close().await;
    });
    wait_until("a dead letter", Duration::from_secs(20), || {
        let doc = c.json(&["queues", "--json"]);
        (doc["dead_lettered_by_controller"]["too_large"].as_u64()? == 1).then_some(())
    });
    let log = c.process_log("up");
    assert!(
        log.contains("9216 bytes, more than this consumer's limit of 8192 bytes"),
        "{log}"
    );
}
