//! Heartbeats: renew the leases of every attempt this agent holds and say who it is.

use crate::Shared;
use drover_amqp::Target;
use drover_protocol::message::{AgentInfo, Heartbeat, Message};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

fn info(shared: &Shared, busy: u32) -> AgentInfo {
    AgentInfo {
        id: shared.id.clone(),
        host: shared.host.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        queues: shared.config.queues.clone(),
        slots: if shared.config.services_mode {
            0
        } else {
            shared.config.concurrency
        },
        busy,
        draining: shared.draining.load(Ordering::Relaxed),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_mib: memory_mib(),
    }
}

/// `MemTotal` from /proc/meminfo, in MiB; 0 when it cannot be read.
fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024)
        })
        .unwrap_or(0)
}

/// Publishes one heartbeat now.
pub async fn send(shared: &Shared) {
    let running = shared.running_attempts();
    let msg = Message::Heartbeat(Heartbeat {
        agent: info(shared, running.len() as u32),
        running,
    });
    if let Err(e) = shared
        .publisher
        .publish(&Target::Queue(shared.config.names.events()), &msg)
        .await
    {
        tracing::warn!("cannot publish a heartbeat: {e}");
    }
}

/// Beats every `config.heartbeat` until `stopped`, then once more.
pub async fn beat(shared: Arc<Shared>, stopped: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&shared).await,
            _ = stopped.cancelled() => break,
        }
    }
    send(&shared).await;
}
