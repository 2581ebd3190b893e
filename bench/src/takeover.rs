//! Benchmark 13, controller takeover: the time from the `kill -9` of the active controller to
//! the first step its standby dispatches, against a fresh controller's cold start on the same
//! journal in the same cluster.
//!
//! Each repetition has a cluster of its own: artifacts in an S3 bucket (a `moto_server` shared
//! by the repetitions, the namespace as prefix), the active controller and one agent, optionally
//! `runs` finished runs put into the journal first, then a standby. A chain `hold` → `next` is
//! submitted; `hold` waits for a file. With `hold` running, the active controller is killed and
//! then the file written, so `hold` ends after the kill and only a new leader can dispatch
//! `next`. The standby takes over; `next`'s dispatch time (`queued_at` of its attempt, the
//! scheduler's decision just before the job is journaled and published) minus the kill is the
//! figure. Then the same again with the standby, now active, killed and no standby: once `hold`
//! has ended, a fresh controller on an empty data dir is started, and its start to `next`'s
//! dispatch is the cold start it is compared with (the same journal, a run longer).

use crate::cluster::{Cluster, Env};
use crate::report::Row;
use crate::{journal, listing, stats};
use anyhow::{Context, Result, bail, ensure};
use drover_storage::testing::Moto;
use drover_test_support::{Check, Deadline, eventually_async, ready};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The bucket the clusters keep artifacts in.
const BUCKET: &str = "drover-bench";

/// How often a standby asks for the lock (`drover_controller`'s `STANDBY_RETRY`).
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// What the standby says while it waits, and once it has the lock.
const STANDING_BY: &str = "standing by: this controller is a standby";
const TAKES_OVER: &str = "this one takes over";
/// What a controller logs once it serves (its URL file written).
const SERVING: &str = "controller for namespace";

/// How much state the journal holds at the kill, and whether snapshots are taken.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Finished runs (of [`listing::STEPS`] cached steps each) put into the journal first.
    pub runs: usize,
    /// `--state-snapshot-every` in bytes; 0: none.
    pub snapshot_every: u64,
}

/// What one replay of the journal read, from the controller's log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replay {
    pub records: f64,
    pub ms: f64,
    /// Whether it started from a snapshot.
    pub snapshot: bool,
}

/// One repetition, times in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// `kill -9` to the standby's takeover line (log timestamp).
    pub to_lock: f64,
    /// `kill -9` to the standby's line saying it serves (URL file written).
    pub to_serving: f64,
    /// `kill -9` to `next`'s dispatch by the standby (controller timestamp).
    pub to_dispatch: f64,
    /// `kill -9` to the agent's claim of `next` as the standby recorded it.
    pub to_claim: f64,
    pub takeover: Replay,
    /// Start of a fresh controller on an empty data dir to `next`'s dispatch.
    pub cold_to_dispatch: f64,
    pub cold: Replay,
    /// Payload bytes in the journal at the end (all records but the bench's mark).
    pub journal_bytes: f64,
}

/// `reps` repetitions of `variant`, each a cluster of its own.
pub async fn run(env: &Env, reps: usize, variant: Variant) -> Result<Vec<Sample>> {
    let moto = tokio::task::block_in_place(start_moto)?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut c = Cluster::new(env)?;
        for (key, value) in [
            ("DROVER_ARTIFACT_STORE", format!("s3://{BUCKET}/{}", c.ns)),
            ("DROVER_S3_ENDPOINT", moto.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ] {
            c.set_var(key, &value);
        }
        let result = one(&mut c, variant).await;
        c.shutdown().await;
        samples.push(result?);
    }
    Ok(samples)
}

/// `moto_server` with the bucket; an error saying how to install it when it is not on `PATH`.
fn start_moto() -> Result<Moto> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("moto_server").is_file()));
    ensure!(
        on_path,
        "moto_server is not on PATH: run scripts/python-env.sh (bench/run puts the Python it \
         uses on PATH)"
    );
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    Ok(moto)
}

async fn one(c: &mut Cluster, variant: Variant) -> Result<Sample> {
    let every = variant.snapshot_every.to_string();
    let args = [
        "controller",
        "--state-journal",
        "stream",
        "--state-snapshot-every",
        &every,
    ];
    c.start_controller("active", &args).await?;
    c.start_agent("agent", &[])?;
    if variant.runs > 0 {
        grow(c, variant.runs).await?;
    }
    let standby = c.spawn_controller("standby", &args)?;
    wait_for_line(c, "standby", STANDING_BY).await?;

    let mut s = Sample::default();
    let (run, go) = submit_held(c, "takeover").await?;
    // The standby asks for the lock at a fixed phase after its start, which the steps above
    // would fix relative to the kill: a controller dies at no particular moment of that cycle.
    tokio::time::sleep(random_phase(STANDBY_RETRY)).await;
    let killed = now_ms();
    c.kill("active")?;
    std::fs::write(&go, "")?;
    s.to_lock = line_time(&wait_for_line(c, "standby", TAKES_OVER).await?)? - killed;
    s.to_serving = line_time(&wait_for_line(c, "standby", SERVING).await?)? - killed;
    c.url = ready::controller_url(&standby).map_err(anyhow::Error::msg)?;
    let (queued, claimed) = next_times(c, &run, killed).await?;
    s.to_dispatch = queued - killed;
    s.to_claim = claimed - killed;
    s.takeover = replay(&c.process_log("standby"))?;

    let (run, go) = submit_held(c, "cold").await?;
    c.kill("standby")?;
    let killed = now_ms();
    std::fs::write(&go, "")?;
    // `hold` has ended and its end is on its way to the broker: the fresh controller waits for
    // nothing but its own start.
    wait_for_file(&go.with_extension("held")).await?;
    let started = now_ms();
    let cold = c.spawn_controller("cold", &args)?;
    wait_for_line(c, "cold", SERVING).await?;
    c.url = ready::controller_url(&cold).map_err(anyhow::Error::msg)?;
    let (queued, _) = next_times(c, &run, killed).await?;
    s.cold_to_dispatch = queued - started;
    s.cold = replay(&c.process_log("cold"))?;

    // The controller must be gone before the bench appends its mark to the journal.
    c.stop();
    s.journal_bytes = journal::journal_size(&c.amqp_url(), &c.ns).await?.bytes as f64;
    Ok(s)
}

/// Puts `runs` finished runs into the journal: one executes, the others are cache hits
/// published straight to the services queue (as benchmark 8 stores them).
async fn grow(c: &Cluster, runs: usize) -> Result<()> {
    let toml = listing::pipeline();
    let first = c.submit_toml("grow.toml", &toml)?;
    c.wait(&first, Duration::from_millis(100), Duration::from_secs(60))
        .await?;
    let ids = listing::publish(c, &toml, runs.saturating_sub(1)).await?;
    if let Some(last) = ids.last() {
        let patience = Duration::from_secs(60 + runs as u64 / 20);
        c.wait(last, Duration::from_millis(200), patience).await?;
    }
    Ok(())
}

/// Submits the chain `hold` → `next` and waits until `hold` runs; returns the run and the file
/// that ends `hold`.
async fn submit_held(c: &Cluster, name: &str) -> Result<(String, PathBuf)> {
    let go = c.path().join(format!("{name}.go"));
    let run = c.submit_toml(&format!("{name}.toml"), &chain(&go))?;
    let deadline = Deadline::new(
        format!("step hold of run {run} to run"),
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(50));
    eventually_async(deadline, || async {
        match c.run(&run).await {
            Err(e) => Check::Failed(format!("{e:#}")),
            Ok(None) => Check::NotYet("not known to the controller yet".into()),
            Ok(Some(view)) => match step(&view, "hold").map(|s| s["status"].as_str()) {
                Some(Some("running")) => Check::Ready(()),
                other => Check::NotYet(format!("hold is {other:?}")),
            },
        }
    })
    .await?;
    Ok((run, go))
}

/// `hold` waits for `go`, then leaves `<go>.held`; `next` follows it.
fn chain(go: &Path) -> String {
    let held = go.with_extension("held");
    let (go, held) = (go.display(), held.display());
    format!(
        "[pipeline]\nname = \"takeover\"\nproject = \"bench\"\n\n\
         [[step]]\nname = \"hold\"\n\
         command = [\"sh\", \"-c\", \"while [ ! -e '{go}' ]; do sleep 0.01; done; touch '{held}'\"]\n\n\
         [[step]]\nname = \"next\"\nparents = [\"hold\"]\ncommand = [\"true\"]\n"
    )
}

fn step<'v>(view: &'v Value, name: &str) -> Option<&'v Value> {
    view["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
}

/// Waits for the run to succeed; `next`'s dispatch and claim times (epoch ms, controller
/// clock), checked to be its only attempt and dispatched after `killed`.
async fn next_times(c: &Cluster, run: &str, killed: f64) -> Result<(f64, f64)> {
    let view = c
        .wait(run, Duration::from_millis(50), Duration::from_secs(120))
        .await?;
    for name in ["hold", "next"] {
        let tries = step(&view, name)
            .and_then(|s| s["attempts"].as_array())
            .map_or(0, Vec::len);
        ensure!(tries == 1, "step {name} of run {run} has {tries} attempts");
    }
    let attempt = step(&view, "next")
        .map(|s| &s["attempts"][0])
        .context("no step next")?;
    let queued = attempt["queued_at"].as_f64().context("no queued_at")?;
    let claimed = attempt["started_at"].as_f64().context("no started_at")?;
    // Whole ms: a dispatch in the kill's millisecond counts as after it.
    ensure!(
        queued >= killed.floor(),
        "next of run {run} was dispatched at {queued}, before the kill at {killed:.0}"
    );
    Ok((queued, claimed))
}

async fn wait_for_file(path: &Path) -> Result<()> {
    let deadline = Deadline::new(
        format!("{} to exist", path.display()),
        Duration::from_secs(30),
    )
    .every(Duration::from_millis(5));
    eventually_async(deadline, || async {
        match path.exists() {
            true => Check::Ready(()),
            false => Check::NotYet("not yet".into()),
        }
    })
    .await?;
    Ok(())
}

/// Waits until the process `label` logs a line containing `text`; returns the line.
async fn wait_for_line(c: &mut Cluster, label: &str, text: &str) -> Result<String> {
    let log = c.log_path(label);
    let deadline = Deadline::new(format!("{label} to log {text:?}"), Duration::from_secs(120))
        .every(Duration::from_millis(10));
    let line = eventually_async(deadline, || {
        let seen = ready::line_in(&log, |l| l.contains(text).then(|| l.to_string()));
        let check = match (c.alive(label), seen) {
            (Err(e), _) => Check::Failed(format!("{e:#}")),
            (Ok(()), Ok(line)) => Check::Ready(line),
            (Ok(()), Err(why)) => Check::NotYet(why),
        };
        std::future::ready(check)
    })
    .await?;
    Ok(line)
}

/// A duration in `[0, period)`, from the clock's nanoseconds (no more randomness is needed).
fn random_phase(period: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    period.mul_f64(f64::from(nanos % 1_000_000) / 1e6)
}

/// Now as ms since the epoch, the clock the controller stamps its records and logs with.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// A line without its terminal colour sequences (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The timestamp a log line starts with (`2026-12-03T02:14:00.123456Z`), as epoch ms.
fn line_time(line: &str) -> Result<f64> {
    let line = plain(line);
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let at = chrono::DateTime::parse_from_rfc3339(stamp)
        .with_context(|| format!("no timestamp at the start of the log line {line:?}"))?;
    Ok(at.timestamp_micros() as f64 / 1000.0)
}

/// The replay the controller logged: `replayed N journal record(s) in T`, and whether it
/// `loaded the snapshot of batch`.
fn replay(log: &str) -> Result<Replay> {
    let line = log
        .lines()
        .map(plain)
        .find(|l| l.contains("journal record(s) in"))
        .context("no line `replayed N journal record(s) in T` in the controller's log")?;
    let after = line
        .split_once("replayed ")
        .map(|(_, rest)| rest)
        .context("no `replayed`")?;
    let mut words = after.split_whitespace();
    let records: f64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no record count in {line:?}"))?;
    let took = after
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split(',').next())
        .with_context(|| format!("no time in {line:?}"))?;
    Ok(Replay {
        records,
        ms: duration_ms(took).with_context(|| format!("the time in {line:?}"))?,
        snapshot: line.contains("loaded the snapshot of batch"),
    })
}

/// A `Duration` as `{:.2?}` prints it (`1.23s`, `45.60ms`, `7.89µs`, `12ns`), in ms.
fn duration_ms(text: &str) -> Result<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    let scale = match unit {
        "s" => 1000.0,
        "ms" => 1.0,
        "µs" => 1e-3,
        "ns" => 1e-6,
        other => bail!("unknown unit {other:?} in {text:?}"),
    };
    Ok(number * scale)
}

/// The table's rows: `plain` (no runs stored, no snapshots) in full, then each grown variant's
/// main figures; `rt_p50_ms` is benchmark 1's AMQP round trip of the same run.
pub fn rows(plain: &[Sample], grown: &[(Variant, Vec<Sample>)], rt_p50_ms: f64) -> Vec<Row> {
    let bench = "13 takeover";
    let pick =
        |samples: &[Sample], f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let s = plain;
    let mut rows = Vec::new();
    let cold = Row::new(
        bench,
        "cold start: a fresh controller on an empty data dir, its start → first step dispatched",
        "ms",
        pick(s, |s| s.cold_to_dispatch),
    )
    .note("the active controller killed with `hold` running, no standby; once `hold` has ended, `drover controller --state-journal stream` started on an empty data dir: from just before the spawn to `next`'s dispatch (controller timestamp): process start, broker connection, lock, replay, load, consume, dispatch");
    rows.push(
        Row::new(bench, "kill -9 of the active controller → the standby's takeover line", "ms", pick(s, |s| s.to_lock))
            .note(format!("two `drover controller --state-journal stream` (S3 artifacts in moto), one agent; the timestamp of the standby's log line `... this one takes over` minus the kill's; the standby asks for the lock every {:?}, so up to that much of the figure is its wait: the kill comes at a random moment of that cycle (a delay drawn uniformly below it after `hold` started)", STANDBY_RETRY)),
    );
    rows.push(Row::new(bench, "kill -9 → the standby serves (URL file written)", "ms", pick(s, |s| s.to_serving))
        .note("its log line `controller for namespace ... at URL`, logged right after the URL file is written: journal replayed, runs loaded, consumers started"));
    let dispatch = Row::new(bench, "kill -9 → first step dispatched by the standby", "ms", pick(s, |s| s.to_dispatch))
        .limit("cold start, same journal, same run", cold.median, "ms")
        .note("chain `hold` → `next`, `hold` running at the kill and ended just after it (a file the bench writes after the kill), so only the new leader can dispatch `next`: `next`'s `queued_at` (the standby's scheduler decision, journaled and published right after) minus the kill, both wall clock on this machine, whole ms");
    rows.push(dispatch);
    rows.push(
        Row::new(bench, "standby: lock taken → first step dispatched", "ms", pick(s, |s| s.to_dispatch - s.to_lock))
            .limit("AMQP round trip p50", rt_p50_ms, "ms")
            .note("the two figures above subtracted, per repetition: replay, load, purge of the predecessor's jobs, consume the step's end, dispatch"),
    );
    rows.push(
        Row::new(
            bench,
            "kill -9 → that step claimed by the agent",
            "ms",
            pick(s, |s| s.to_claim),
        )
        .note(
            "`next`'s `started_at`: the standby handled the agent's claim of the job it published",
        ),
    );
    rows.push(cold);
    rows.push(
        Row::new(bench, "journal records replayed at the takeover", "records", pick(s, |s| s.takeover.records))
            .note(format!("from the standby's log line `replayed N journal record(s) in T`; the journal held {:.0} bytes of payload at the end of a repetition (median; both chains run)", stats::median(&pick(s, |s| s.journal_bytes)))),
    );
    rows.push(Row::new(
        bench,
        "replay time at the takeover (the standby's log)",
        "ms",
        pick(s, |s| s.takeover.ms),
    ));
    for (v, s) in grown {
        let what = variant_label(v);
        let cold = stats::median(&pick(s, |s| s.cold_to_dispatch));
        let snapshots = s.iter().filter(|s| s.takeover.snapshot).count();
        rows.push(
            Row::new(bench, &format!("kill -9 → first step dispatched by the standby, {what}"), "ms", pick(s, |s| s.to_dispatch))
                .limit("cold start, same journal, same run", cold, "ms")
                .note(format!("as above, after {} finished runs of {} cached steps put into the journal (one executed, the others cache hits published to the services queue); the standby started from a snapshot in {snapshots} of {} repetitions; the journal held {:.1} MB of payload at the end (median)", v.runs, listing::STEPS, s.len(), stats::median(&pick(s, |s| s.journal_bytes)) / 1e6)),
        );
        rows.push(
            Row::new(
                bench,
                &format!("standby: lock taken → first step dispatched, {what}"),
                "ms",
                pick(s, |s| s.to_dispatch - s.to_lock),
            )
            .limit("AMQP round trip p50", rt_p50_ms, "ms"),
        );
        rows.push(Row::new(
            bench,
            &format!("journal records replayed at the takeover, {what}"),
            "records",
            pick(s, |s| s.takeover.records),
        ));
        rows.push(Row::new(
            bench,
            &format!("replay time at the takeover, {what}"),
            "ms",
            pick(s, |s| s.takeover.ms),
        ));
    }
    rows
}

fn variant_label(v: &Variant) -> String {
    let runs = match v.runs {
        n if n >= 1000 && n.is_multiple_of(1000) => format!("{}k", n / 1000),
        n => n.to_string(),
    };
    match v.snapshot_every {
        0 => format!("{runs} finished runs in the journal, no snapshot"),
        b if b >= 1 << 20 => format!("{runs} finished runs, a snapshot every {} MiB", b >> 20),
        b => format!("{runs} finished runs, a snapshot every {} KiB", b >> 10),
    }
}

#[cfg(test)]
mod tests;
