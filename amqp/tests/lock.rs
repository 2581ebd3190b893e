//! The lock of `Broker::hold_lock` against the real broker: refused to a second connection, free
//! once the holder's connection is gone, and taken again first when the holder reconnects.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use drover_amqp::{AmqpError, Broker};
use drover_protocol::{Names, RunId};
use std::process::Command;
use std::time::Duration;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Closes, from the broker's side, the connections whose client properties contain `name`.
fn close_connections(name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split('\t').next())
        .collect();
    for pid in &pids {
        let status = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test: lock holder closed"])
            .status()
            .unwrap();
        assert!(status.success(), "close_connection {pid}: {status}");
    }
    pids.len()
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

#[tokio::test]
async fn a_lock_is_held_by_one_connection_and_taken_again_after_a_reconnect() {
    let ns = format!(
        "t{}",
        &RunId::generate()
            .to_string()
            .chars()
            .rev()
            .collect::<String>()[..12]
    );
    let names = Names::new(&ns).unwrap();
    let lock = names.controller_lock();
    let holder_name = format!("lock holder {ns}");
    let holder = Broker::connect(URL, names.clone(), &holder_name)
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    holder.hold_lock(&lock).await.unwrap();
    let other = Broker::connect(URL, names.clone(), "lock other")
        .await
        .unwrap();
    let refused = other.hold_lock(&lock).await;
    assert!(
        matches!(refused, Err(AmqpError::LockHeld { .. })),
        "{refused:?}"
    );

    // The holder's connection is gone: the other takes the lock, and the holder's next use,
    // which opens a new connection, is refused while the other holds it.
    assert_eq!(close_connections(&holder_name), 1);
    take_within(&other, &lock, Duration::from_secs(10)).await;
    let refused = holder.queue_stats(&names.services()).await;
    assert!(
        matches!(refused, Err(AmqpError::LockHeld { .. })),
        "{refused:?}"
    );

    // Once the other lets go, the holder's next use takes the lock back first.
    other.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = holder.queue_stats(&names.services()).await {
        assert!(tokio::time::Instant::now() < deadline, "no reconnect: {e}");
        tokio::time::sleep(POLL).await;
    }
    let third = Broker::connect(URL, names.clone(), "lock third")
        .await
        .unwrap();
    let refused = third.hold_lock(&lock).await;
    assert!(
        matches!(refused, Err(AmqpError::LockHeld { .. })),
        "{refused:?}"
    );
    third.close().await;
    holder.close().await;
}
