//! Benchmark 3, fan-out: one run of many independent `true` steps, each in its own process and
//! workdir; throughput is steps divided by the run's time (controller timestamps, from the first
//! dispatch to the last step's end, whole ms over seconds).

use crate::cluster::{Cluster, Env};
use anyhow::{Context, Result};
use std::time::Duration;

fn fanout_toml(steps: usize) -> String {
    let mut out = format!("[pipeline]\nname = \"fanout-{steps}\"\nproject = \"bench\"\n");
    for i in 0..steps {
        out.push_str(&format!(
            "\n[[step]]\nname = \"f{i}\"\ncommand = [\"true\"]\n"
        ));
    }
    out
}

/// Steps per second for `reps` runs of `steps` steps on `agents` agents of `concurrency` slots.
pub async fn run(
    env: &Env,
    reps: usize,
    steps: usize,
    agents: u32,
    concurrency: u32,
) -> Result<Vec<f64>> {
    let mut c = Cluster::new(env)?;
    let result = runs(&mut c, reps, steps, agents, concurrency).await;
    c.shutdown().await;
    result
}

async fn runs(
    c: &mut Cluster,
    reps: usize,
    steps: usize,
    agents: u32,
    concurrency: u32,
) -> Result<Vec<f64>> {
    let (agents, concurrency) = (agents.to_string(), concurrency.to_string());
    c.start_controller(
        "up",
        &[
            "up",
            "--agents",
            &agents,
            "--concurrency",
            &concurrency,
            "--python-env",
            "system",
        ],
    )
    .await?;
    let path = c.path().join("fanout.toml");
    std::fs::write(&path, fanout_toml(steps))?;
    // Polling a big run costs the controller a decode and a JSON rendering; keep it rare.
    let poll = Duration::from_secs(2);
    let timeout = Duration::from_secs(120 + steps as u64);
    let warm = c.submit_toml("warm.toml", &fanout_toml(8))?;
    c.wait(&warm, Duration::from_millis(100), timeout).await?;
    let mut rates = Vec::new();
    for _ in 0..reps {
        let run = c.submit(&path)?;
        let view = c.wait(&run, poll, timeout).await?;
        let ms = view["ended_at"].as_f64().context("no ended_at")?
            - view["started_at"].as_f64().context("no started_at")?;
        rates.push(steps as f64 / (ms / 1000.0));
    }
    Ok(rates)
}
