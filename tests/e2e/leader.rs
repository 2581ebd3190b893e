//! One active controller per namespace: a second controller is refused before it touches the
//! namespace, saying why and how to find the first, and one starts once the first is killed;
//! the lock under it (`Broker::hold_lock`) is taken again first when its holder reconnects.

use crate::faults::{attempts, chain, ended};
use crate::harness::{Cluster, wait_until};
use drover_amqp::{AmqpError, Broker};
use drover_protocol::Names;
use drover_test_support::process::ChildProcess;
use drover_test_support::{AMQP_URL, close_connections, fresh_namespace, ready};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `drover controller` on this cluster's namespace with its own data dir and address.
fn controller(c: &Cluster, data: &Path, label: &str) -> ChildProcess {
    let mut cmd = c.command();
    cmd.args(["controller", "--data-dir"]).arg(data).args([
        "--http",
        "127.0.0.1:0",
        "--lease",
        "3s",
    ]);
    ChildProcess::spawn(label, cmd, &c.dir.path().join(format!("{label}.log"))).unwrap()
}

/// Starts a controller that the active one must refuse, and returns its output.
fn refused(c: &Cluster, data: &Path, label: &str) -> String {
    let mut second = controller(c, data, label);
    let status = second.wait_exit(Duration::from_secs(30)).unwrap();
    let log = second.output();
    assert!(!status.success(), "{label} did not fail: {status}\n{log}");
    assert!(
        log.contains(&format!(
            "another controller is active on namespace {}: it holds the lock queue {}.controller",
            c.ns, c.ns
        )),
        "{log}"
    );
    assert!(
        !data.join(ready::CONTROLLER_URL_FILE).exists(),
        "{label} wrote its URL"
    );
    log
}

#[test]
fn a_second_controller_is_refused_until_the_first_is_gone() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let file = c.pipeline("chain.toml", &chain(2, 1.0));
    let run = c.submit(&file);

    let other = c.dir.path().join("other");
    refused(&c, &other, "second");
    // The refusal says to look for the holder's connection; it names the holder's pid and URL.
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "client_properties"])
        .output()
        .unwrap();
    let connections = String::from_utf8_lossy(&out.stdout);
    let holder = format!("pid {} at {} ({})", c.pid("controller"), c.url, c.ns);
    assert!(connections.contains(&holder), "{holder:?} in {connections}");

    // The refused controller took nothing: the first one runs every step exactly once.
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    for step in ["s1", "s2"] {
        assert_eq!(attempts(&doc, step).len(), 1, "{step}: {doc}");
    }

    let killed = Instant::now();
    c.kill("controller");
    let mut next = controller(&c, &other, "next");
    wait_until("the next controller's URL", Duration::from_secs(30), || {
        next.alive_and(ready::controller_url(&other))
    });
    let took_over = killed.elapsed();
    // It holds the lock now: the one after it is refused.
    refused(&c, &c.dir.path().join("third"), "third");
    eprintln!(
        "a controller started {:.2}s after the active one was killed (SIGKILL: the kernel closes \
         its broker connection at once)",
        took_over.as_secs_f64()
    );
}

/// Retries `hold_lock` until it succeeds: the broker deletes the queue just after the close.
async fn take_within(broker: &Broker, queue: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Err(e) = broker.hold_lock(queue).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock {queue} was not free within {within:?}: {e}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(50);

fn assert_refused<T: std::fmt::Debug>(result: Result<T, AmqpError>, what: &str) {
    assert!(
        matches!(result, Err(AmqpError::LockHeld { .. })),
        "{what}: {result:?}"
    );
}

#[test]
fn the_lock_is_held_by_one_connection_and_taken_again_first_after_a_reconnect() {
    let names = Names::new(&fresh_namespace("t")).unwrap();
    let lock = names.controller_lock();
    let holder_name = format!("lock holder ({names})");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Refusals are borne for 3 s (60 s in production) before the lock is given up.
        let holder = Broker::connect(AMQP_URL, names.clone(), "lock holder")
            .await
            .unwrap()
            .with_lock_patience(Duration::from_secs(3));
        holder.hold_lock(&lock).await.unwrap();
        let other = Broker::connect(AMQP_URL, names.clone(), "lock other")
            .await
            .unwrap();
        assert_refused(other.hold_lock(&lock).await, "a second connection");

        // The holder's connection is gone: the other takes the lock, and the holder's next
        // use, which opens a new connection, is refused while the other holds it.
        assert_eq!(close_connections(&holder_name), 1);
        take_within(&other, &lock, Duration::from_secs(10)).await;
        assert_refused(
            holder.queue_stats(&names.services()).await,
            "the holder's reconnect",
        );

        // Once the other lets go, the holder's next use takes the lock back first.
        other.close().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = holder.queue_stats(&names.services()).await {
            assert!(tokio::time::Instant::now() < deadline, "no reconnect: {e}");
            tokio::time::sleep(POLL).await;
        }
        let third = Broker::connect(AMQP_URL, names.clone(), "lock third")
            .await
            .unwrap();
        assert_refused(
            third.hold_lock(&lock).await,
            "a connection after the reconnect",
        );

        // Refused for longer than its patience, the holder gives the lock up for good.
        assert_eq!(close_connections(&holder_name), 1);
        take_within(&third, &lock, Duration::from_secs(10)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match holder.queue_stats(&names.services()).await {
                Err(AmqpError::LockLost { .. }) => break,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the holder still asks: {other:?}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
        tokio::time::timeout(Duration::from_secs(1), holder.lock_lost())
            .await
            .expect("lock_lost resolves");
        let closed = holder.queue_stats(&names.services()).await;
        assert!(matches!(closed, Err(AmqpError::Closed)), "{closed:?}");
        third.close().await;
    });
}
