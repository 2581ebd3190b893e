//! Benchmark 4, the seed pipeline (`examples/pipeline_from_functions.py`) on `drover up` with a
//! warm virtualenv, against its three functions run as three plain `python` processes and in
//! one fresh `python` process (the in-process floor) in the same run, and the all-cached
//! re-run; then the memory of the agent's warm parents, and the first run on fresh agents (a
//! new `drover up` each, nothing built, the package download cache warm from the first
//! cluster's build), alternately with an empty bytecode cache and with the one the first
//! cluster filled. The Python side is `bench/seed.py`.
//!
//! The floor runs on the very virtualenv drover built for the steps, with bytecode caching on as
//! in a step: the developer's `.venv` may differ (this machine sets `PYTHONDONTWRITEBYTECODE`,
//! which made the same three processes take twice as long there).

use crate::cluster::{Cluster, Env};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Wall times in ms.
#[derive(Debug, Clone, Default)]
pub struct SeedSamples {
    pub drover_ms: Vec<f64>,
    pub floor_ms: Vec<f64>,
    pub cached_ms: Vec<f64>,
    pub inprocess_ms: Vec<f64>,
    /// The first run on a fresh agent: its environment built, then its steps run; with an
    /// empty bytecode cache.
    pub first_cold_ms: Vec<f64>,
    /// The same with the bytecode cache an earlier agent of the machine filled (the first
    /// cluster's, which ran the seed).
    pub first_warm_ms: Vec<f64>,
    /// Resident and private memory of each warm parent at the end, MiB.
    pub parents_rss_mib: Vec<f64>,
    pub parents_private_mib: Vec<f64>,
}

/// Runs `bench/seed.py` with bytecode caching on, as the floor runs and as a submitting script
/// runs on a machine that does not set `PYTHONDONTWRITEBYTECODE` (this one does): otherwise every
/// submission compiles the AMQP client it imports (pika) again, within the timed window.
fn seed_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    c.python_json_with("bench/seed.py", args, |cmd| {
        cmd.env_remove("PYTHONDONTWRITEBYTECODE");
    })
}

fn drover_run(c: &Cluster, cached: bool) -> Result<f64> {
    let v = seed_json(c, &["drover", "--cache", if cached { "1" } else { "0" }])?;
    if v["status"] != "succeeded" {
        bail!("the seed run did not succeed: {v}");
    }
    let want = if cached { "cached" } else { "succeeded" };
    let steps = v["steps"].as_object().context("no steps")?;
    if steps.len() != 3 || steps.values().any(|s| s != want) {
        bail!("expected every step {want}: {v}");
    }
    v["wall_ms"].as_f64().context("no wall_ms")
}

/// The step environment drover built (its python) and the bundled SDK, so the floor runs the
/// functions on the same interpreter, packages and bytecode caches as the steps.
fn step_env(c: &Cluster) -> Result<(PathBuf, PathBuf)> {
    let pyenv = c.path().join("up/pyenv");
    let first_dir = |dir: PathBuf| -> Result<PathBuf> {
        std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .with_context(|| format!("nothing built under {}", dir.display()))
    };
    let python = first_dir(pyenv.join("envs"))?.join("bin/python");
    Ok((python, first_dir(pyenv.join("bundle"))?))
}

fn floor_run(c: &Cluster, env: &Env, mode: &str) -> Result<f64> {
    let dir = c.path().join(mode);
    std::fs::create_dir_all(&dir)?;
    let (python, sdk) = step_env(c)?;
    let out = std::process::Command::new(&python)
        .arg(env.repo.join("bench/seed.py"))
        .args([mode, &dir.display().to_string()])
        // As in a step: bytecode is cached, only the bundled SDK is added to the path.
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env("PYTHONPATH", &sdk)
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the floor run failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    v["wall_ms"].as_f64().context("no wall_ms")
}

/// `reps` warm runs, `reps` floor runs (interleaved) and `reps` all-cached re-runs, then `reps`
/// first runs with an empty bytecode cache and `reps` with the first cluster's (alternated),
/// each on a fresh cluster.
pub async fn run(env: &Env, reps: usize) -> Result<SeedSamples> {
    // Outside the first cluster's directory, which its shutdown removes.
    let bytecode = tempfile::Builder::new()
        .prefix("drover-bench-bytecode-")
        .tempdir()?;
    let shared = bytecode.path();
    let mut c = Cluster::new(env)?;
    let result = runs(&mut c, env, reps, shared).await;
    c.shutdown().await;
    let mut s = result?;
    for _ in 0..reps {
        let mut fresh = Cluster::new(env)?;
        let empty = fresh.path().join("bytecode");
        let first = first_run(&mut fresh, &empty).await;
        fresh.shutdown().await;
        s.first_cold_ms.push(first?);
        let mut fresh = Cluster::new(env)?;
        let first = first_run(&mut fresh, shared).await;
        fresh.shutdown().await;
        s.first_warm_ms.push(first?);
    }
    Ok(s)
}

/// `drover up` with one agent building virtualenvs and keeping its bytecode cache in `bytecode`.
async fn start_up(c: &mut Cluster, bytecode: &Path) -> Result<()> {
    let bytecode = bytecode.display().to_string();
    c.start_controller(
        "up",
        &[
            "up",
            "--agents",
            "1",
            "--python-env",
            "venv",
            "--python-bytecode-cache",
            &bytecode,
        ],
    )
    .await
}

/// The seed's first run on a new `drover up`: its environment is built (from the warm package
/// download cache) within the timed run.
async fn first_run(c: &mut Cluster, bytecode: &Path) -> Result<f64> {
    start_up(c, bytecode).await?;
    drover_run(c, false)
}

async fn runs(c: &mut Cluster, env: &Env, reps: usize, bytecode: &Path) -> Result<SeedSamples> {
    let data = env.repo.join("examples/data/iris.pkl");
    if !data.exists() {
        let status = std::process::Command::new(&env.python)
            .arg(env.repo.join("examples/make_iris_pickle.py"))
            .status()?;
        if !status.success() {
            bail!("examples/make_iris_pickle.py failed");
        }
    }
    start_up(c, bytecode).await?;
    // Warm-up: builds the step environment (timed separately by nobody) and the page cache.
    drover_run(c, false)?;
    floor_run(c, env, "floor")?;
    let mut s = SeedSamples::default();
    for _ in 0..reps {
        s.floor_ms.push(floor_run(c, env, "floor")?);
        s.inprocess_ms.push(floor_run(c, env, "inprocess")?);
        s.drover_ms.push(drover_run(c, false)?);
    }
    for pid in warm_parents(c) {
        s.parents_rss_mib
            .push(crate::cluster::memory_mib(pid, "VmRSS")?);
        s.parents_private_mib.push(private_mib(pid)?);
    }
    // Fill the cache once, then re-run with every step cached.
    let v = seed_json(c, &["drover", "--cache", "1"])?;
    if v["status"] != "succeeded" {
        bail!("the cache-filling seed run did not succeed: {v}");
    }
    for _ in 0..reps {
        s.cached_ms.push(drover_run(c, true)?);
    }
    Ok(s)
}

/// The agent's warm parents: processes running `drover_warm.py` from this cluster's directory,
/// without the steps they forked (which show the same command line).
pub(crate) fn warm_parents(c: &Cluster) -> Vec<u32> {
    let mine = c.path().display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let warm: Vec<u32> = entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("drover_warm.py") && cmdline.contains(&mine)).then_some(pid)
        })
        .collect();
    warm.iter()
        .copied()
        .filter(|pid| ppid(*pid).is_none_or(|p| !warm.contains(&p)))
        .collect()
}

/// The parent of a process, from `/proc/PID/stat`.
pub(crate) fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Memory only this process holds (`Private_Clean` + `Private_Dirty` of `smaps_rollup`), MiB.
pub(crate) fn private_mib(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: f64 = text
        .lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    Ok(kib / 1024.0)
}
