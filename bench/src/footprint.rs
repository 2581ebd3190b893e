//! Benchmark 6, footprint: resident memory (`VmRSS`) of an idle `drover controller` and an idle
//! `drover agent` as separate processes, then of the controller holding many finished runs.
//!
//! The finished runs are one run of `steps` independent `true` steps that really executes, then
//! `runs - 1` identical runs whose steps are all cache hits (every step shares one cache key),
//! so the controller holds `runs` complete run records without executing `runs × steps` jobs.

use crate::cluster::{Cluster, Env, memory_mib};
use anyhow::Result;
use std::time::Duration;

/// What the repetitions measured (MiB).
#[derive(Debug, Clone, Default)]
pub struct FootprintSamples {
    pub controller_idle: Vec<f64>,
    pub agent_idle: Vec<f64>,
    pub controller_loaded: Vec<f64>,
}

/// How long the processes idle before they are measured.
const IDLE: Duration = Duration::from_secs(5);

fn pipeline(steps: usize) -> String {
    let mut out = format!("[pipeline]\nname = \"footprint-{steps}\"\nproject = \"bench\"\n");
    for i in 0..steps {
        out.push_str(&format!(
            "\n[[step]]\nname = \"m{i}\"\ncommand = [\"true\"]\ncache = true\n"
        ));
    }
    out
}

/// `reps` fresh controller/agent pairs measured idle; the last one is then loaded with `runs`
/// finished runs of `steps` steps.
pub async fn run(env: &Env, reps: usize, runs: usize, steps: usize) -> Result<FootprintSamples> {
    let mut s = FootprintSamples::default();
    for rep in 0..reps {
        let mut c = Cluster::new(env)?;
        let result = measure(&mut c, &mut s, (rep + 1 == reps).then_some((runs, steps))).await;
        c.shutdown().await;
        result?;
    }
    Ok(s)
}

async fn measure(
    c: &mut Cluster,
    s: &mut FootprintSamples,
    load: Option<(usize, usize)>,
) -> Result<()> {
    c.start_controller("controller", &["controller"]).await?;
    c.start_agent("agent", &["--concurrency", "4", "--python-env", "system"])?;
    // The idle period is what is measured, not a wait for readiness.
    tokio::time::sleep(IDLE).await;
    s.controller_idle
        .push(memory_mib(c.pid("controller")?, "VmRSS")?);
    s.agent_idle.push(memory_mib(c.pid("agent")?, "VmRSS")?);
    let Some((runs, steps)) = load else {
        return Ok(());
    };
    let path = c.path().join("footprint.toml");
    std::fs::write(&path, pipeline(steps))?;
    let timeout = Duration::from_secs(120 + steps as u64);
    for i in 0..runs {
        let run = c.submit(&path)?;
        let poll = Duration::from_millis(if i == 0 { 1000 } else { 50 });
        c.wait(&run, poll, timeout).await?;
    }
    // Part of the figure's definition: the memory kept 2 s after the last run ended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.controller_loaded
        .push(memory_mib(c.pid("controller")?, "VmRSS")?);
    Ok(())
}
