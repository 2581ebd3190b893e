//! Benchmark 12, journal cost: benchmark 3's fan-out of `true` steps on `drover up`, with the
//! state in sled alone and with `--state-journal stream`, alternated in the same run.
//!
//! Every measurement has its own cluster (namespace, data dir, and so journal stream), removed
//! after it. A run is measured from the controller's timestamps (first dispatch to last end),
//! as benchmark 3 does for a run that fits its window; the `drover up` process's CPU time from
//! just before the submission to the run's end; and, with the journal, the bytes appended to
//! the stream from the warm-up run's end to the controller's exit.

use crate::cluster::{Cluster, Env};
use crate::cpu;
use crate::fanout::{fanout_toml, progress};
use anyhow::{Context, Result, bail};
use drover_amqp::{Broker, JournalStart, Target};
use drover_protocol::Names;
use std::time::{Duration, Instant};

/// Steps of the warm-up run each cluster does before the measured one.
const WARM_STEPS: usize = 8;

/// How long reading the journal to the bench's end mark may take.
const READ_PATIENCE: Duration = Duration::from_secs(60);

/// What the broker holds of one journal: records (batches and start marks) and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Size {
    pub records: u64,
    pub bytes: u64,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub steps_per_s: f64,
    /// CPU time (user + system) of the `drover up` process per step, ms.
    pub cpu_ms_per_step: f64,
    /// What the measured run added to the journal; `None` without one.
    pub journal: Option<Size>,
}

/// The runs of both modes, `off[i]` and `on[i]` measured one right after the other.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub off: Vec<Sample>,
    pub on: Vec<Sample>,
}

/// `reps` pairs of runs of `steps` steps; which mode goes first alternates from pair to pair, so
/// that a drift of the machine's load weighs on both.
pub async fn run(env: &Env, reps: usize, steps: usize) -> Result<Samples> {
    let mut samples = Samples::default();
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for journal in order {
            let mut c = Cluster::new(env)?;
            let result = one(&mut c, steps, journal).await;
            c.shutdown().await;
            let sample = result.with_context(|| {
                format!(
                    "the fan-out with the journal {}",
                    if journal { "on" } else { "off" }
                )
            })?;
            if journal {
                samples.on.push(sample);
            } else {
                samples.off.push(sample);
            }
        }
    }
    Ok(samples)
}

async fn one(c: &mut Cluster, steps: usize, journal: bool) -> Result<Sample> {
    let mut args = vec!["up", "--agents", "1", "--python-env", "system"];
    if journal {
        args.extend(["--state-journal", "stream"]);
    }
    c.start_controller("up", &args).await?;
    let warm = c.submit_toml("warm.toml", &fanout_toml(WARM_STEPS))?;
    c.wait(&warm, Duration::from_millis(100), Duration::from_secs(60))
        .await?;
    let before = match journal {
        true => Some(journal_size(&c.amqp_url(), &c.ns).await?),
        false => None,
    };
    let pid = c.pid("up")?;
    let cpu_before = cpu::times(pid)?.own_ms;
    let run = c.submit_toml("fanout.toml", &fanout_toml(steps))?;
    let deadline = Instant::now() + Duration::from_secs(120 + steps as u64);
    // Polls the cheap run list rather than the run's view, whose every step costs the
    // controller CPU that is being measured.
    // A submission goes through the broker: the run is listed a moment after `drover run`.
    while !c.run_exists(&run).await? || !progress(c, &run).await?.1 {
        if Instant::now() > deadline {
            bail!("run {run} of {steps} steps did not end within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = cpu::times(pid)?.own_ms - cpu_before;
    let view = c
        .wait(&run, Duration::from_millis(100), Duration::from_secs(10))
        .await?;
    let ms = view["ended_at"].as_f64().context("no ended_at")?
        - view["started_at"].as_f64().context("no started_at")?;
    // The controller flushes what is pending as it exits: the journal is complete after it.
    c.stop();
    let added = match before {
        Some(before) => {
            let after = journal_size(&c.amqp_url(), &c.ns).await?;
            Some(Size {
                records: after.records - before.records,
                bytes: after.bytes - before.bytes,
            })
        }
        None => None,
    };
    Ok(Sample {
        steps_per_s: steps as f64 / (ms / 1000.0),
        cpu_ms_per_step: cpu / steps as f64,
        journal: added,
    })
}

/// The records and bytes of namespace `ns`'s journal: the bench appends a mark of its own and
/// reads the stream from its first record up to that mark (marks are not counted).
pub async fn journal_size(amqp_url: &str, ns: &str) -> Result<Size> {
    const MARK: &[u8] = b"drover-bench: end of the journal read ";
    let broker = Broker::connect(amqp_url, Names::new(ns)?, "drover-bench journal size").await?;
    let nonce = drover_test_support::fresh_namespace("");
    let mark = [MARK, nonce.as_bytes()].concat();
    let read = async {
        broker
            .publisher()
            .await?
            .publish_raw(&Target::Journal, &mark)
            .await?;
        let mut reader = broker.read_journal(JournalStart::First).await?;
        let mut size = Size::default();
        loop {
            let record = reader
                .next()
                .await
                .context("the broker closed the journal read")??;
            if record.payload == mark {
                break;
            }
            if !record.payload.starts_with(MARK) {
                size.records += 1;
                size.bytes += record.payload.len() as u64;
            }
        }
        reader.close().await;
        anyhow::Ok(size)
    };
    let size = tokio::time::timeout(READ_PATIENCE, read).await;
    broker.close().await;
    size.with_context(|| {
        format!("reading the journal of {ns} to the bench's mark took over {READ_PATIENCE:?}")
    })?
}
