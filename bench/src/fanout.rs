//! Benchmark 3, fan-out: one run of many independent `true` steps, each in its own process and
//! workdir.
//!
//! A run that ends within the measuring window counts all its steps over the run's time
//! (controller timestamps, first dispatch to last end). A run too big for that (10,000 steps
//! take many minutes) is measured over a window instead: ended steps counted through
//! `GET /api/v1/runs` after a warm-up and again `window` later. The controller's cost per event
//! grows with the run's size, not with its progress, so the window's rate stands for the run's.

use crate::cluster::{Cluster, Env};
use crate::cpu;
use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Time after the submission before the window opens.
const WARMUP: Duration = Duration::from_secs(5);

/// A pipeline of `steps` independent `true` steps.
pub(crate) fn fanout_toml(steps: usize) -> String {
    let mut out = format!("[pipeline]\nname = \"fanout-{steps}\"\nproject = \"bench\"\n");
    for i in 0..steps {
        out.push_str(&format!(
            "\n[[step]]\nname = \"f{i}\"\ncommand = [\"true\"]\n"
        ));
    }
    out
}

/// CPU time (ms) a `true` process took when the bench started `starts` of them itself, one after
/// another (std's `Command`, no drover): the least a step's process costs on this machine.
/// Counted from the children this process reaped meanwhile, so no cluster may run alongside.
pub fn bare_start_ms(starts: usize) -> Result<f64> {
    let me = std::process::id();
    let before = cpu::times(me)?.children_ms;
    for _ in 0..starts {
        let status = Command::new("true")
            .stdin(Stdio::null())
            .status()
            .context("cannot start `true`")?;
        if !status.success() {
            bail!("`true` exited with {status}");
        }
    }
    let after = cpu::times(me)?.children_ms;
    Ok((after - before) / starts.max(1) as f64)
}

/// How one run was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measured {
    /// The whole run: steps over its time.
    WholeRun,
    /// Steps ended within a window of the run.
    Window { ended: u64, secs: f64 },
}

/// CPU time a step cost, ms: `drover up` itself (controller and agents), the step processes it
/// reaped, and the broker (`None` when its process was not found). Over the window when one is
/// measured, else from the submission until the run was seen ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCpu {
    pub drover_ms: f64,
    pub steps_ms: f64,
    pub broker_ms: Option<f64>,
}

/// CPU times of `drover up` and of the broker at one moment.
struct Snapshot {
    drover: cpu::Times,
    broker: Option<f64>,
}

impl Snapshot {
    fn take(drover: u32, broker: Option<u32>) -> Result<Self> {
        Ok(Self {
            drover: cpu::times(drover)?,
            broker: broker
                .and_then(|pid| cpu::times(pid).ok())
                .map(|t| t.own_ms),
        })
    }

    /// What each spent since `earlier`, per step of `steps`.
    fn per_step_since(&self, earlier: &Self, steps: u64) -> StepCpu {
        let per = |ms: f64| ms / steps.max(1) as f64;
        StepCpu {
            drover_ms: per(self.drover.own_ms - earlier.drover.own_ms),
            steps_ms: per(self.drover.children_ms - earlier.drover.children_ms),
            broker_ms: self
                .broker
                .zip(earlier.broker)
                .map(|(now, then)| per(now - then)),
        }
    }
}

/// One repetition: steps per second, how they were measured, and what a step cost.
#[derive(Debug, Clone, Copy)]
pub struct Repetition {
    pub rate: f64,
    pub measured: Measured,
    pub cpu: StepCpu,
}

/// The shape of one fan-out measurement.
#[derive(Debug, Clone, Copy)]
pub struct FanoutPlan {
    pub reps: usize,
    pub steps: usize,
    pub agents: u32,
    /// Slots per agent; `None` leaves `drover up`'s default (`auto`: the CPU count).
    pub concurrency: Option<u32>,
    pub window: Duration,
}

/// Each of `reps` runs' rate, how it was measured and its CPU a step.
/// A fresh cluster for every repetition: a run cut off at the window leaves jobs behind.
pub async fn run(env: &Env, plan: FanoutPlan) -> Result<Vec<Repetition>> {
    let mut rates = Vec::new();
    for _ in 0..plan.reps {
        let mut c = Cluster::new(env)?;
        let result = one(&mut c, plan).await;
        c.shutdown().await;
        rates.push(result?);
    }
    Ok(rates)
}

/// Ended steps of a run from `GET /api/v1/runs`, and whether the run ended.
pub(crate) async fn progress(c: &Cluster, run: &str) -> Result<(u64, bool)> {
    let list = c.runs().await?;
    let summary = list["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["run_id"] == run))
        .with_context(|| format!("run {run} is not listed"))?;
    let counts = summary["steps"].as_object().context("no step counts")?;
    let ended = counts
        .iter()
        .filter(|(status, _)| !matches!(status.as_str(), "pending" | "queued" | "running"))
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum();
    Ok((ended, summary["status"] != "running"))
}

async fn one(c: &mut Cluster, plan: FanoutPlan) -> Result<Repetition> {
    let agents = plan.agents.to_string();
    let concurrency = plan.concurrency.map(|n| n.to_string());
    let mut args = vec!["up", "--agents", &agents, "--python-env", "system"];
    if let Some(n) = &concurrency {
        args.extend(["--concurrency", n]);
    }
    c.start_controller("up", &args).await?;
    let path = c.path().join("fanout.toml");
    std::fs::write(&path, fanout_toml(plan.steps))?;
    let warm = c.submit_toml("warm.toml", &fanout_toml(8))?;
    c.wait(&warm, Duration::from_millis(100), Duration::from_secs(60))
        .await?;
    let (drover, broker) = (c.pid("up")?, cpu::broker_pid());
    let before = Snapshot::take(drover, broker)?;
    let run = c.submit(&path)?;
    let submitted = Instant::now();
    // Part of the measurement: the window opens WARMUP after the submission.
    tokio::time::sleep(WARMUP).await;
    let (first, ended) = progress(c, &run).await?;
    let opened = Instant::now();
    if !ended {
        let at_open = Snapshot::take(drover, broker)?;
        let left = plan.window.saturating_sub(opened.elapsed());
        let deadline = opened + left;
        let mut last = (first, false);
        while Instant::now() < deadline && !last.1 {
            // Sampling the progress within the window, which is the measurement's length.
            tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
            last = progress(c, &run).await?;
        }
        if !last.1 {
            let secs = opened.elapsed().as_secs_f64();
            let ended = last.0 - first;
            if ended == 0 {
                bail!("no step of run {run} ended within {secs:.0} s");
            }
            let cpu = Snapshot::take(drover, broker)?.per_step_since(&at_open, ended);
            return Ok(Repetition {
                rate: ended as f64 / secs,
                measured: Measured::Window { ended, secs },
                cpu,
            });
        }
    }
    let timeout = Duration::from_secs(120 + plan.steps as u64);
    let view = c
        .wait(
            &run,
            Duration::from_secs(1),
            timeout.saturating_sub(submitted.elapsed()),
        )
        .await?;
    let cpu = Snapshot::take(drover, broker)?.per_step_since(&before, plan.steps as u64);
    let ms = view["ended_at"].as_f64().context("no ended_at")?
        - view["started_at"].as_f64().context("no started_at")?;
    Ok(Repetition {
        rate: plan.steps as f64 / (ms / 1000.0),
        measured: Measured::WholeRun,
        cpu,
    })
}
