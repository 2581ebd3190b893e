//! Benchmark 6, footprint: resident memory (`VmRSS`) of an idle `drover controller` and an idle
//! `drover agent` as separate processes, then of the controller holding many finished runs.
//!
//! The finished runs are one run of `steps` independent `true` steps that really executes, then
//! `runs - 1` identical runs whose steps are all cache hits (every step shares one cache key),
//! so the controller holds `runs` complete run records without executing `runs × steps` jobs.

use crate::cluster::{Cluster, Env, memory_mib};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
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

/// How much of `link/text-order.txt` the binary under test holds, for the idle rows' note: the
/// idle processes' resident code depends on it (ARCHITECTURE.md, "Memory"), and its names carry
/// hashes that follow `Cargo.lock`, the toolchain and the package set built. Only release
/// builds are ordered (`scripts/text-order.sh` profiles one), so a `profile` build of another
/// name is only said to be one.
pub fn text_order(env: &Env, profile: &str) -> String {
    if profile != "release" {
        return format!("a {profile} build: link/text-order.txt names a release build's functions");
    }
    match text_order_found(&env.drover, &env.repo.join("link/text-order.txt")) {
        Ok((found, listed)) => format!(
            "{found} of the {listed} functions link/text-order.txt places first are in the binary{}",
            if found * 10 < listed * 9 {
                " (stale: scripts/text-order.sh rewrites it)"
            } else {
                ""
            }
        ),
        Err(e) => format!("text order not checked: {e:#}"),
    }
}

/// (names of `order` defined in `binary`, names in `order`).
fn text_order_found(binary: &Path, order: &Path) -> Result<(usize, usize)> {
    let listed = std::fs::read_to_string(order).with_context(|| order.display().to_string())?;
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(binary)
        .output()
        .context("nm")?;
    anyhow::ensure!(
        out.status.success(),
        "nm {}: {}",
        binary.display(),
        out.status
    );
    let defined: HashSet<&[u8]> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| line.rsplit(|b| *b == b' ').next())
        .collect();
    let names: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    let found = names
        .iter()
        .filter(|n| defined.contains(n.as_bytes()))
        .count();
    Ok((found, names.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_listed_names_a_binary_defines() {
        let dir = tempfile::tempdir().unwrap();
        let order = dir.path().join("order.txt");
        let exe = std::env::current_exe().unwrap();
        // A function of this test binary that nm lists, and one no binary has.
        let out = Command::new("nm").arg("--defined-only").arg(&exe).output();
        let Ok(out) = out else {
            eprintln!("skipped: no nm");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let name = text
            .lines()
            .filter_map(|l| l.split(' ').nth(2))
            .find(|n| n.starts_with("_ZN"))
            .unwrap()
            .to_string();
        std::fs::write(
            &order,
            format!("{name}\n_ZN7missing4name17h0000000000000000E\n"),
        )
        .unwrap();
        assert_eq!(text_order_found(&exe, &order).unwrap(), (1, 2));
    }
}
