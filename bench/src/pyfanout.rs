//! Benchmark 10, Python fan-out: one run of many tiny Python function steps (`def f(i): return
//! i * 2`) on one agent, against a run of as many `true` command steps on the same agent in the
//! same repetition; then the memory of the agent's warm parent and of its forked children,
//! sampled while a few children sleep.

use crate::cluster::{Cluster, Env, memory_mib};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::time::Duration;

/// One repetition's figures.
#[derive(Debug, Clone, Default)]
pub struct PyFanoutSamples {
    /// Steps per second of the `true` run and of the Python run.
    pub true_rate: Vec<f64>,
    pub python_rate: Vec<f64>,
    /// Python steps that started warm, and all Python steps, over the repetitions.
    pub warm: usize,
    pub steps: usize,
    /// VmRSS of each warm parent, MiB, sampled while its children run.
    pub parents_rss_mib: Vec<f64>,
    /// Private_Clean + Private_Dirty of each warm child seen running, MiB.
    pub children_private_mib: Vec<f64>,
}

const TINY: &str = "def f(i):\n    return i * 2\n";
const NAP: &str = "def f(i):\n    import time\n    time.sleep(2)\n    return i * 2\n";

fn toml(name: &str, steps: usize, python: Option<&str>) -> String {
    let mut out = format!("[pipeline]\nname = \"{name}\"\nproject = \"bench\"\n");
    for i in 0..steps {
        match python {
            Some(source) => out.push_str(&format!(
                "\n[[step]]\nname = \"f{i}\"\nfunction = {{ source = '''\n{source}''', entry = \"f\", kwargs = {{ i = '{i}' }} }}\n"
            )),
            None => out.push_str(&format!("\n[[step]]\nname = \"f{i}\"\ncommand = [\"true\"]\n")),
        }
    }
    out
}

/// `reps` repetitions, each on a fresh `drover up` with one agent of `slots` slots.
pub async fn run(env: &Env, reps: usize, steps: usize, slots: u32) -> Result<PyFanoutSamples> {
    let mut s = PyFanoutSamples::default();
    for _ in 0..reps {
        let mut c = Cluster::new(env)?;
        let result = one(&mut c, steps, slots, &mut s).await;
        c.shutdown().await;
        result?;
    }
    Ok(s)
}

/// Steps per second of a run: its steps over its first dispatch to its last end.
fn rate(view: &Value, steps: usize) -> Result<f64> {
    let ms = view["ended_at"].as_f64().context("no ended_at")?
        - view["started_at"].as_f64().context("no started_at")?;
    Ok(steps as f64 / (ms / 1000.0))
}

async fn one(c: &mut Cluster, steps: usize, slots: u32, s: &mut PyFanoutSamples) -> Result<()> {
    let slots_arg = slots.to_string();
    c.start_controller(
        "up",
        &[
            "up",
            "--agents",
            "1",
            "--concurrency",
            &slots_arg,
            "--python-env",
            "venv",
        ],
    )
    .await?;
    let timeout = Duration::from_secs(300 + steps as u64);
    let poll = Duration::from_millis(200);
    // Warm-up of both kinds: builds the step environment and starts its warm parent.
    for (name, python) in [("warm-true", None), ("warm-python", Some(TINY))] {
        let run = c.submit_toml(&format!("{name}.toml"), &toml(name, 8, python))?;
        c.wait(&run, poll, timeout).await?;
    }
    let run = c.submit_toml("true.toml", &toml("true", steps, None))?;
    let view = c.wait(&run, poll, timeout).await?;
    s.true_rate.push(rate(&view, steps)?);
    let run = c.submit_toml("python.toml", &toml("python", steps, Some(TINY)))?;
    let view = c.wait(&run, poll, timeout).await?;
    s.python_rate.push(rate(&view, steps)?);
    s.steps += steps;
    s.warm += view["steps"]
        .as_array()
        .context("no steps")?
        .iter()
        .filter(|step| {
            step["attempts"]
                .as_array()
                .and_then(|a| a.last())
                .is_some_and(|a| a["start"] == "warm")
        })
        .count();
    memory(c, slots as usize, s).await
}

/// Runs `slots` sleeping steps and samples the warm parents and their children meanwhile.
async fn memory(c: &Cluster, slots: usize, s: &mut PyFanoutSamples) -> Result<()> {
    let run = c.submit_toml("nap.toml", &toml("nap", slots, Some(NAP)))?;
    let mut sampled = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let parents = crate::seed::warm_parents(c);
        let children: Vec<u32> = parents.iter().flat_map(|p| children_of(*p)).collect();
        if children.len() >= slots {
            for pid in &parents {
                s.parents_rss_mib.push(memory_mib(*pid, "VmRSS")?);
            }
            for pid in &children {
                s.children_private_mib.push(crate::seed::private_mib(*pid)?);
            }
            sampled = true;
            break;
        }
    }
    c.wait(&run, Duration::from_millis(200), Duration::from_secs(120))
        .await?;
    if !sampled {
        bail!("never saw {slots} warm children running at once (did the steps start cold?)");
    }
    Ok(())
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| crate::seed::ppid(*child) == Some(pid))
        .collect()
}
