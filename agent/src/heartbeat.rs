//! Heartbeats: renew the leases of every attempt this agent holds and say who it is; and
//! stop this agent's own steps once it has been cut off from the broker for longer than their
//! lease, since the controller has declared them lost (and retried them elsewhere) by then.
//!
//! The lease clock runs as the controller's does: from the last heartbeat the broker confirmed,
//! and not while the controller itself has no broker connection (it expires no lease then, and
//! renews them all when it is back), which the agent asks its `GET /healthz`.

use crate::Shared;
use drover_amqp::Target;
use drover_api::views::{BrokerState, Health};
use drover_protocol::message::{AgentInfo, Heartbeat, Message, StepJob};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the agent checks whether its leases have run out.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How long the agent waits for the controller's `/healthz` when it cannot reach the broker.
const HEALTH_PATIENCE: Duration = Duration::from_secs(1);

/// The lease the controller grants and where to ask it about its broker connection, both
/// named by the jobs it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseTerms {
    pub lease: Duration,
    pub controller_url: String,
}

impl LeaseTerms {
    /// The terms of `job`, whose lease the controller at `controller_url` counts.
    pub fn of(job: &StepJob, controller_url: &str) -> Self {
        let url = controller_url;
        Self {
            lease: Duration::from_millis(job.lease_ms),
            controller_url: url.trim_end_matches('/').to_string(),
        }
    }
}

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
        installer: match shared.config.python.mode {
            crate::pyenv::PythonEnvMode::Venv => shared.config.python.installer.summary(),
            crate::pyenv::PythonEnvMode::System => {
                Some("none: --python-env system installs no requirements".to_string())
            }
        },
        warm_parents: shared.warm.counts(),
        refused_stale: shared.epochs.refused(),
        revoked_dropped: shared.revoked.dropped(),
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

/// Publishes one heartbeat now; whether the broker confirmed it.
pub async fn send(shared: &Shared) -> bool {
    // Fenced attempts are no longer this agent's to renew.
    let running: Vec<_> = shared
        .running_attempts()
        .into_iter()
        .filter(|a| !shared.is_fenced(a))
        .collect();
    let msg = Message::Heartbeat(Heartbeat {
        agent: info(shared, running.len() as u32),
        running,
    });
    match shared.publisher.publish(&Target::Events, &msg).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot publish a heartbeat: {e}");
            false
        }
    }
}

/// Beats every `config.heartbeat` until `stopped`, then once more; meanwhile stops the steps
/// whose lease ran out while the agent was cut off.
pub async fn beat(shared: Arc<Shared>, stopped: CancellationToken) {
    // When the leases of the running attempts were last known to be renewed.
    let renewed = Mutex::new(Instant::now());
    let beating = async {
        let mut tick = tokio::time::interval(shared.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The broker holds it from now on, for the controller to renew the leases with (a
            // send retried through an outage renews them only when it gets through).
            if send(&shared).await {
                renew(&renewed, Instant::now());
            }
        }
    };
    tokio::select! {
        _ = beating => {}
        _ = watch(&shared, &renewed) => {}
        _ = stopped.cancelled() => {}
    }
    send(&shared).await;
}

fn renew(renewed: &Mutex<Instant>, at: Instant) {
    let mut last = renewed.lock().unwrap_or_else(|e| e.into_inner());
    *last = (*last).max(at);
}

/// Fences every running attempt once its lease has run out as the controller counts it: longer
/// than the lease since the last confirmed heartbeat and since the controller was last seen
/// without a broker connection.
async fn watch(shared: &Shared, renewed: &Mutex<Instant>) {
    // A heartbeat this late means the broker did not take the last one.
    let overdue = shared.config.heartbeat + 2 * WATCH_EVERY;
    let mut controller_cut_off: Option<Instant> = None;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let running: Vec<_> = shared
            .running_attempts()
            .into_iter()
            .filter(|a| !shared.is_fenced(a))
            .collect();
        let terms = shared
            .lease_terms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(terms) = terms.filter(|_| !running.is_empty()) else {
            // Nothing to lose: the clock starts with the next claim (which needs the broker).
            renew(renewed, now);
            continue;
        };
        let beat = *renewed.lock().unwrap_or_else(|e| e.into_inner());
        let silent = now.saturating_duration_since(beat);
        if silent <= overdue.min(terms.lease) {
            continue;
        }
        // A heartbeat is overdue: ask the controller at every tick, so that the moment it was
        // last seen without the broker (when it stops the lease clocks) is known to a tick.
        let asked = Instant::now();
        if controller_without_broker(shared, &terms).await {
            controller_cut_off = Some(asked);
        }
        let since = controller_cut_off.map_or(beat, |t| t.max(beat));
        if now.saturating_duration_since(since) <= terms.lease {
            continue;
        }
        for attempt in running {
            if shared.fence(&attempt) {
                tracing::warn!(
                    "fencing {}/{} attempt {}: cut off from the broker for {} (longer than the \
                     lease, {}); stopping the step, which the controller declares lost",
                    attempt.run_id,
                    attempt.step,
                    attempt.attempt,
                    humantime::format_duration(Duration::from_millis(silent.as_millis() as u64)),
                    humantime::format_duration(terms.lease)
                );
            }
        }
    }
}

/// Whether the controller answers that it has no broker connection (so it expires no lease).
async fn controller_without_broker(shared: &Shared, terms: &LeaseTerms) -> bool {
    let url = format!("{}/healthz", terms.controller_url);
    let answer = async {
        let response = shared.http.get(&url).send().await.ok()?;
        response.json::<Health>().await.ok()
    };
    matches!(
        tokio::time::timeout(HEALTH_PATIENCE, answer).await,
        Ok(Some(Health {
            broker: BrokerState::Disconnected,
            ..
        }))
    )
}
