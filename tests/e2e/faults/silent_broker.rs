//! A broker that stops answering while its TCP connections stay open (its Erlang VM stopped
//! with SIGSTOP) is noticed through the AMQP heartbeat alone: the connection is closed between
//! two and two and a half heartbeat intervals after the last frame heard, within the default
//! 30 s lease.

use super::rabbit::PrivateBroker;
use drover_amqp::Broker;
use drover_amqp::urls::DEFAULT_HEARTBEAT_SECS;
use drover_protocol::Names;
use drover_test_support::fresh_namespace;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The controller's default lease: a dead connection must be noticed well before it ends.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[test]
fn a_silent_broker_is_noticed_through_the_heartbeat() {
    let rabbit = PrivateBroker::start();
    let vm = Pid::from_raw(rabbit.os_pid());
    let names = Names::new(&fresh_namespace("t")).expect("namespace");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let noticed = rt.block_on(async {
        let broker = Broker::connect(&rabbit.url(), names, "test")
            .await
            .expect("connect");
        broker.declare_topology().await.expect("topology");
        // The fault under test: the broker hears and says nothing, its sockets stay open.
        kill(vm, Signal::SIGSTOP).expect("stop the broker's VM");
        let stopped = Instant::now();
        while broker.is_connected() && stopped.elapsed() < DEFAULT_LEASE * 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stopped.elapsed()
    });
    kill(vm, Signal::SIGCONT).expect("let the broker's VM go on");
    let heartbeat = Duration::from_secs(u64::from(DEFAULT_HEARTBEAT_SECS));
    eprintln!("a silent broker was noticed after {noticed:?} (heartbeat {heartbeat:?})");
    assert!(
        noticed >= heartbeat * 2,
        "closed after {noticed:?}, before two heartbeats were missed"
    );
    assert!(
        noticed < DEFAULT_LEASE,
        "a silent broker was noticed only after {noticed:?}"
    );
}
