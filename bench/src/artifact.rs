//! Benchmark 5, artifacts: a step writes a large output, the next step consumes it. The transfer
//! is the consumer's first `date +%s%N` stamp minus the producer's last, so it covers hashing,
//! the upload, the controller storing (and fsyncing) the blob, one hop, and the download; it is
//! compared with `cp` of a file of the same size followed by `sha256sum` of the copy (one copy
//! and one digest pass; drover makes two of each, with a network hop and an fsync), in the same
//! run and on the same disk. Peak RSS (`VmHWM`) of the
//! `drover up` process (controller and agent) shows whether the bytes are streamed.

use crate::cluster::{Cluster, Env, memory_mib};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the repetitions measured.
#[derive(Debug, Clone, Default)]
pub struct ArtifactSamples {
    /// MiB/s through drover, producer's end to consumer's start.
    pub drover_rate: Vec<f64>,
    /// MiB/s of `cp`.
    pub cp_rate: Vec<f64>,
    /// MiB/s of `cp` followed by `sha256sum` of the copy.
    pub cp_sum_rate: Vec<f64>,
    /// `VmHWM` of `drover up` before the first transfer and after the last (MiB).
    pub hwm_before_mib: f64,
    pub hwm_after_mib: f64,
}

fn pipeline(size: u64, stamps: &Path) -> String {
    let f = stamps.display().to_string();
    format!(
        r#"[pipeline]
name = "artifact"
project = "bench"

[[step]]
name = "produce"
command = ["sh", "-c", "head -c {size} /dev/urandom > big.bin && echo e $(date +%s%N) >> {f}"]
outputs = {{ big = "big.bin" }}

[[step]]
name = "consume"
command = ["sh", "-c", "echo s $(date +%s%N) >> {f}; test $(stat -c %s ${{produce.big}}) -eq {size}"]
"#
    )
}

fn stamp(text: &str, kind: &str) -> Result<i128> {
    text.lines()
        .find_map(|l| l.strip_prefix(kind)?.trim().parse().ok())
        .with_context(|| format!("no {kind:?} stamp in {text:?}"))
}

/// `cp` of a fresh random file of `size` bytes in `dir`, then `sha256sum` of the copy: MiB/s of
/// each alone and of the two together (the copy's time plus the digest's).
fn cp_rate(dir: &Path, size: u64) -> Result<(f64, f64)> {
    let src = dir.join("cp-src.bin");
    let dst = dir.join("cp-dst.bin");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {size} /dev/urandom > '{}'", src.display()))
        .status()?;
    if !made.success() {
        bail!("cannot write {}", src.display());
    }
    let start = Instant::now();
    let copied = std::process::Command::new("cp")
        .arg(&src)
        .arg(&dst)
        .status()?;
    let secs = start.elapsed().as_secs_f64();
    if !copied.success() {
        bail!("cp {} failed", src.display());
    }
    let start = Instant::now();
    let summed = std::process::Command::new("sha256sum")
        .arg(&dst)
        .stdout(std::process::Stdio::null())
        .status()?;
    let sum_secs = start.elapsed().as_secs_f64();
    if !summed.success() {
        bail!("sha256sum {} failed", dst.display());
    }
    std::fs::remove_file(&src)?;
    std::fs::remove_file(&dst)?;
    let mib = size as f64 / 1048576.0;
    Ok((mib / secs, mib / (secs + sum_secs)))
}

/// `reps` transfers of `size` bytes, each next to a `cp` of the same size.
pub async fn run(env: &Env, reps: usize, size: u64) -> Result<ArtifactSamples> {
    let mut c = Cluster::new(env)?;
    let result = runs(&mut c, reps, size).await;
    c.shutdown().await;
    result
}

async fn runs(c: &mut Cluster, reps: usize, size: u64) -> Result<ArtifactSamples> {
    c.start_controller("up", &["up", "--agents", "1", "--python-env", "system"])
        .await?;
    let pid = c.pid("up")?;
    let poll = Duration::from_millis(100);
    let timeout = Duration::from_secs(60 + size / (4 << 20));
    // Warm-up with a small artifact: connections, queues, HTTP client.
    let warm = c.path().join("warm.txt");
    let run = c.submit_toml("warm.toml", &pipeline(4096, &warm))?;
    c.wait(&run, poll, timeout).await?;
    let mut s = ArtifactSamples {
        hwm_before_mib: memory_mib(pid, "VmHWM")?,
        ..Default::default()
    };
    for rep in 0..reps {
        let (cp, cp_sum) = cp_rate(c.path(), size)?;
        s.cp_rate.push(cp);
        s.cp_sum_rate.push(cp_sum);
        let stamps = c.path().join(format!("stamps-{rep}.txt"));
        let run = c.submit_toml(&format!("artifact-{rep}.toml"), &pipeline(size, &stamps))?;
        c.wait(&run, poll, timeout).await?;
        let text = std::fs::read_to_string(&stamps)?;
        let ns = stamp(&text, "s ")? - stamp(&text, "e ")?;
        s.drover_rate
            .push(size as f64 / 1048576.0 / (ns as f64 / 1e9));
    }
    s.hwm_after_mib = memory_mib(pid, "VmHWM")?;
    Ok(s)
}
