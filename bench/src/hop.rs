//! Benchmark 2, hop latency: a chain of no-op command steps on one agent, and the time from one
//! step's process finishing to the next step's process starting.
//!
//! The API's step times are whole milliseconds taken at the controller, too coarse for a 5 ms
//! goal and blind to the agent's share, so each step of the measured chain stamps
//! `date +%s%N` first and last (`sh -c 'echo s $(date +%s%N) >> F; echo e $(date +%s%N) >> F'`):
//! a hop is the next step's first stamp minus this step's last. That includes the shell's exit,
//! the next shell's start and one fork/exec of `date` (about a millisecond, measured by the gap
//! between a step's own two stamps, reported below), so it slightly overstates drover's share.
//! A second chain of plain `true` steps gives the controller-side view from the API, and a third
//! stamped chain whose steps also print a line after their last stamp measures a hop with a log:
//! its last chunk is still in flight when the step ends.
//!
//! The hop goal proper is that of a chain handing an artifact from step to step: each step of
//! [`artifact_chain`] reads the number its parent wrote to its output, declared as an input,
//! and writes the next, so a hop also holds the upload of one small output and the download of
//! the next step's input. It runs at the chain's length and at five times it, whose per-hop p50
//! should stay within 1.2× of the shorter chain's.

use crate::cluster::{Cluster, Env};
use crate::stats;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

/// One chain's figures.
#[derive(Debug, Clone, Copy)]
pub struct HopSample {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Median gap between a step's own two stamps: the cost of one `date` in the step.
    pub stamp_cost_ms: f64,
    /// Controller view, `true` chain: next step's claim minus this step's end (whole ms).
    pub api_p50_ms: f64,
    /// `true` chain: run time divided by its steps.
    pub cycle_ms: f64,
    /// Stamped chain whose steps print a line at their end: hop p50.
    pub printing_p50_ms: f64,
    /// Stamped chain handing a small artifact from step to step: hop p50.
    pub artifact_p50_ms: f64,
    /// The same at five times the chain's length: hop p50.
    pub long_artifact_p50_ms: f64,
}

/// How many times longer the long artifact chain is.
pub const LONG_CHAIN: usize = 5;

fn chain_toml(name: &str, steps: usize, command: &dyn Fn(usize) -> String) -> String {
    let mut out = format!("[pipeline]\nname = \"{name}\"\nproject = \"bench\"\n");
    for i in 0..steps {
        out.push_str(&format!(
            "\n[[step]]\nname = \"h{i:04}\"\ncommand = {}\n",
            command(i)
        ));
        if i > 0 {
            out.push_str(&format!("parents = [\"h{:04}\"]\n", i - 1));
        }
    }
    out
}

fn stamped_chain(steps: usize, stamps: &Path) -> String {
    let f = stamps.display().to_string();
    chain_toml("hop-stamped", steps, &|_| {
        format!("[\"sh\", \"-c\", \"echo s $(date +%s%N) >> {f}; echo e $(date +%s%N) >> {f}\"]")
    })
}

/// [`stamped_chain`] whose steps print a line to their log after their last stamp.
fn printing_chain(steps: usize, stamps: &Path) -> String {
    let f = stamps.display().to_string();
    chain_toml("hop-printing", steps, &|i| {
        format!(
            "[\"sh\", \"-c\", \"echo s $(date +%s%N) >> {f}; echo e $(date +%s%N) >> {f}; echo step {i} done\"]"
        )
    })
}

/// [`stamped_chain`] whose steps each read the number their parent wrote to its output `n` and
/// write the next to theirs, between the two stamps.
fn artifact_chain(steps: usize, stamps: &Path) -> String {
    let f = stamps.display().to_string();
    chain_toml("hop-artifact", steps, &|i| {
        let read = match i {
            0 => "x=0".to_string(),
            _ => format!("read x < ${{h{:04}.n}}", i - 1),
        };
        format!(
            "[\"sh\", \"-c\", \"echo s $(date +%s%N) >> {f}; {read}; echo $((x + 1)) > n.txt; echo e $(date +%s%N) >> {f}\"]\noutputs = {{ n = \"n.txt\" }}"
        )
    })
}

/// Hops and stamp costs (ms) from a stamp file of `s`/`e` lines, in chain order.
fn hops_from_stamps(text: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut pairs: Vec<(i128, i128)> = Vec::new();
    let mut start: Option<i128> = None;
    for line in text.lines() {
        let (kind, ns) = line.split_once(' ').context("bad stamp line")?;
        let ns: i128 = ns.trim().parse().context("bad stamp")?;
        match (kind, start) {
            ("s", None) => start = Some(ns),
            ("e", Some(s)) => {
                pairs.push((s, ns));
                start = None;
            }
            _ => bail!("stamps out of order at {line:?}"),
        }
    }
    let hops = pairs
        .windows(2)
        .map(|w| (w[1].0 - w[0].1) as f64 / 1e6)
        .collect();
    let costs = pairs.iter().map(|(s, e)| (e - s) as f64 / 1e6).collect();
    Ok((hops, costs))
}

/// Per-hop and cycle figures of a finished `true` chain, from the run's JSON (ms).
fn api_figures(view: &serde_json::Value) -> Result<(f64, f64)> {
    let steps = view["steps"].as_array().context("no steps")?;
    let times: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| {
            let a = &s["attempts"][0];
            Some((a["started_at"].as_f64()?, a["ended_at"].as_f64()?))
        })
        .collect::<Option<_>>()
        .context("a step without attempt times")?;
    let hops: Vec<f64> = times.windows(2).map(|w| w[1].0 - w[0].1).collect();
    let run_ms = view["ended_at"].as_f64().context("no ended_at")?
        - view["started_at"].as_f64().context("no started_at")?;
    Ok((stats::percentile(&hops, 50.0), run_ms / steps.len() as f64))
}

/// Runs `reps` stamped chains and `reps` `true` chains of `steps` steps on one agent.
pub async fn run(env: &Env, reps: usize, steps: usize) -> Result<Vec<HopSample>> {
    let mut c = Cluster::new(env)?;
    let result = chains(&mut c, reps, steps).await;
    c.shutdown().await;
    result
}

async fn chains(c: &mut Cluster, reps: usize, steps: usize) -> Result<Vec<HopSample>> {
    c.start_controller("up", &["up", "--agents", "1", "--python-env", "system"])
        .await?;
    let poll = Duration::from_millis(100);
    let timeout = Duration::from_secs(30 + steps as u64);
    // Warm-up: connections, queues, the page cache of `sh` and `date`.
    stamped_hops(c, "warm", stamped_chain, 5).await?;

    let mut samples = Vec::new();
    for rep in 0..reps {
        let (hops, costs) = stamped_hops(c, &format!("hop-{rep}"), stamped_chain, steps).await?;
        let (printing, _) = stamped_hops(c, &format!("print-{rep}"), printing_chain, steps).await?;
        let (artifact, _) =
            stamped_hops(c, &format!("artifact-{rep}"), artifact_chain, steps).await?;
        let long = steps * LONG_CHAIN;
        let (long_artifact, _) =
            stamped_hops(c, &format!("long-artifact-{rep}"), artifact_chain, long).await?;
        let plain = chain_toml("hop-true", steps, &|_| "[\"true\"]".to_string());
        let run = c.submit_toml(&format!("true-{rep}.toml"), &plain)?;
        let view = c.wait(&run, poll, timeout).await?;
        let (api_p50_ms, cycle_ms) = api_figures(&view)?;
        samples.push(HopSample {
            p50_ms: stats::percentile(&hops, 50.0),
            p99_ms: stats::percentile(&hops, 99.0),
            stamp_cost_ms: stats::median(&costs),
            api_p50_ms,
            cycle_ms,
            printing_p50_ms: stats::percentile(&printing, 50.0),
            artifact_p50_ms: stats::percentile(&artifact, 50.0),
            long_artifact_p50_ms: stats::percentile(&long_artifact, 50.0),
        });
    }
    Ok(samples)
}

/// Runs `chain` (a stamped chain: [`stamped_chain`], [`printing_chain`], [`artifact_chain`]) of
/// `steps` named `name`; returns its hops and its steps' own stamp gaps (ms).
async fn stamped_hops(
    c: &mut Cluster,
    name: &str,
    chain: fn(usize, &Path) -> String,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let stamps = c.path().join(format!("{name}.txt"));
    let run = c.submit_toml(&format!("{name}.toml"), &chain(steps, &stamps))?;
    let timeout = Duration::from_secs(30 + steps as u64);
    c.wait(&run, Duration::from_millis(100), timeout).await?;
    let (hops, costs) = hops_from_stamps(&std::fs::read_to_string(&stamps)?)?;
    if hops.len() + 1 != steps {
        bail!("{} stamp pairs for {steps} steps of {name}", hops.len() + 1);
    }
    Ok((hops, costs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_are_next_start_minus_previous_end() {
        let text = "s 1000000\ne 2000000\ns 5000000\ne 5500000\ns 9500000\ne 9600000\n";
        let (hops, costs) = hops_from_stamps(text).unwrap();
        assert_eq!(hops, vec![3.0, 4.0]);
        assert_eq!(costs, vec![1.0, 0.5, 0.1]);
        assert!(hops_from_stamps("e 1\n").is_err());
    }

    #[test]
    fn each_artifact_step_reads_its_parents_output() {
        let chain = artifact_chain(3, Path::new("/s"));
        let steps: Vec<&str> = chain.split("[[step]]").skip(1).collect();
        assert_eq!(steps.len(), 3, "{chain}");
        assert!(steps[0].contains("x=0;"), "{}", steps[0]);
        assert!(steps[2].contains("read x < ${h0001.n};"), "{}", steps[2]);
        assert!(steps[2].contains("parents = [\"h0001\"]"), "{}", steps[2]);
        for step in steps {
            assert!(step.contains("\noutputs = { n = \"n.txt\" }\n"), "{step}");
        }
    }
}
