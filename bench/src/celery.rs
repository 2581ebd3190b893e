//! Celery as a peer: a real Celery 5 worker on the same broker (`bench/celery_peer.py`: prefork
//! pool, one process per CPU, `task_acks_late`, persistent messages published with confirms, no
//! result backend) running a fan-out of no-op tasks and a chain, so drover's fan-out is judged
//! against what a widely used task queue does on the same machine in the same run.

use crate::cluster::{Cluster, Env};
use crate::cpu;
use anyhow::{Context, Result, bail};

const SCRIPT: &str = "bench/celery_peer.py";

/// What the repetitions measured.
#[derive(Debug, Clone, Default)]
pub struct CelerySamples {
    /// Tasks per second: the first submission to the last task run.
    pub fanout_rate: Vec<f64>,
    /// Seconds the submissions alone took, per repetition.
    pub submit_secs: Vec<f64>,
    /// The broker's CPU a fan-out task (ms): `beam.smp`'s over the whole peer run, per task;
    /// empty when the broker's process was not found.
    pub broker_ms: Vec<f64>,
    /// One chain's median and p99 time between consecutive tasks' starts (ms).
    pub hop_p50_ms: Vec<f64>,
    pub hop_p99_ms: Vec<f64>,
    /// The worker's pool size.
    pub concurrency: u64,
    /// Celery's release.
    pub version: String,
}

fn number(v: &serde_json::Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("{SCRIPT} printed no {key:?}: {v}"))
}

/// `reps` fan-outs of `tasks` tasks and `reps` chains of `chain` tasks, each with a worker of
/// its own in a namespace of its own.
pub async fn run(env: &Env, reps: usize, tasks: usize, chain: usize) -> Result<CelerySamples> {
    let mut s = CelerySamples::default();
    for _ in 0..reps {
        for (mode, n) in [("fanout", tasks), ("chain", chain)] {
            let c = Cluster::new(env)?;
            // Only the fan-out's broker CPU is reported.
            let broker = (mode == "fanout").then(cpu::broker_pid).flatten();
            let before = broker.and_then(|pid| cpu::times(pid).ok());
            let measured = c.python_json(SCRIPT, &[mode, &n.to_string()]);
            let after = broker.and_then(|pid| cpu::times(pid).ok());
            c.shutdown().await;
            let v = measured?;
            if v["tasks"].as_u64() != Some(n as u64) {
                bail!("{SCRIPT} {mode} ran {} tasks, expected {n}", v["tasks"]);
            }
            s.concurrency = v["concurrency"].as_u64().unwrap_or(0);
            s.version = v["celery"].as_str().unwrap_or("?").to_string();
            if mode == "fanout" {
                s.fanout_rate.push(number(&v, "rate")?);
                s.submit_secs.push(number(&v, "submit_secs")?);
                if let Some((then, now)) = before.zip(after) {
                    s.broker_ms.push((now.own_ms - then.own_ms) / n as f64);
                }
            } else {
                s.hop_p50_ms.push(number(&v, "hop_p50_ms")?);
                s.hop_p99_ms.push(number(&v, "hop_p99_ms")?);
            }
        }
    }
    Ok(s)
}
