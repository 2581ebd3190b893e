//! The whole suite: how much each benchmark does in full and quick mode, the order they run in,
//! and how their measurements become rows against the limits of the same run.

use crate::cluster::Env;
use crate::report::{Machine, Report, Row};
use crate::{
    amqp, artifact, celery, decorator, fanout, footprint, hop, journal, listing, loglatency,
    pyfanout, scale, seed, stats, takeover,
};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `drover-bench run` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Small sizes and one repetition: a smoke test that the benchmarks still work.
    #[arg(long)]
    pub quick: bool,
    /// The `drover` binary to measure.
    #[arg(long)]
    pub drover: PathBuf,
    /// The repository root (examples, bench/seed.py).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Python with the drover SDK, pandas and scikit-learn.
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(
        long,
        env = "DROVER_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Where latest.md and latest.json go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Only these benchmarks (numbers 1-13, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u8>,
    /// Overrides the fan-out size (steps per run) of the mode.
    #[arg(long)]
    pub fanout_steps: Option<usize>,
    /// The cargo profile the binaries were built with, for the report.
    #[arg(long, default_value = "release")]
    pub profile: String,
}

/// Sizes and repetitions of one mode.
struct Plan {
    amqp_reps: usize,
    amqp: amqp::AmqpPlan,
    hop_reps: usize,
    hop_steps: usize,
    fanout_reps: usize,
    fanout_steps: usize,
    fanout_window: Duration,
    seed_reps: usize,
    artifact_reps: usize,
    artifact_bytes: u64,
    footprint_reps: usize,
    footprint_runs: usize,
    footprint_steps: usize,
    scale_reps: usize,
    scale_submit_steps: usize,
    scale_sizes: Vec<usize>,
    scale_budget: Duration,
    list_runs: usize,
    list_reps: usize,
    decorator_reps: usize,
    decorator_steps: usize,
    decorator_slots: usize,
    pyfanout_reps: usize,
    pyfanout_steps: usize,
    pyfanout_slots: u32,
    log_reps: usize,
    log_chatty: loglatency::Pace,
    log_quiet: loglatency::Pace,
    journal_reps: usize,
    journal_steps: usize,
    takeover_reps: usize,
    /// The grown variants: finished runs in the journal, and the snapshot interval in bytes.
    takeover_runs: usize,
    takeover_snapshot_every: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            return Self {
                amqp_reps: 1,
                amqp: amqp::AmqpPlan {
                    messages: 2_000,
                    size: 200,
                    round_trips: 200,
                },
                hop_reps: 1,
                hop_steps: 20,
                fanout_reps: 1,
                fanout_steps: 100,
                fanout_window: Duration::from_secs(30),
                seed_reps: 1,
                artifact_reps: 1,
                artifact_bytes: 64 << 20,
                footprint_reps: 1,
                footprint_runs: 5,
                footprint_steps: 50,
                scale_reps: 1,
                scale_submit_steps: 1_000,
                scale_sizes: vec![100, 1_000],
                scale_budget: Duration::from_secs(20),
                list_runs: 1_000,
                list_reps: 5,
                decorator_reps: 1,
                decorator_steps: 10,
                decorator_slots: 4,
                pyfanout_reps: 1,
                pyfanout_steps: 50,
                pyfanout_slots: 4,
                log_reps: 1,
                log_chatty: loglatency::Pace {
                    lines: 50,
                    every: Duration::from_millis(10),
                },
                log_quiet: loglatency::Pace {
                    lines: 5,
                    every: Duration::from_millis(250),
                },
                journal_reps: 1,
                journal_steps: 100,
                takeover_reps: 1,
                takeover_runs: 100,
                takeover_snapshot_every: 64 << 10,
            };
        }
        Self {
            amqp_reps: 5,
            amqp: amqp::AmqpPlan {
                messages: 10_000,
                size: 200,
                round_trips: 1_000,
            },
            hop_reps: 3,
            hop_steps: 200,
            fanout_reps: 2,
            fanout_steps: 10_000,
            fanout_window: Duration::from_secs(60),
            seed_reps: 5,
            artifact_reps: 3,
            artifact_bytes: 1 << 30,
            footprint_reps: 3,
            footprint_runs: 100,
            footprint_steps: 1_000,
            // Seven rounds: a 10k-step run takes tens of milliseconds of CPU, and three of
            // them left the ratio to the 1k run swinging by a third between whole runs.
            scale_reps: 7,
            scale_submit_steps: 10_000,
            scale_sizes: vec![1_000, 10_000, 100_000],
            scale_budget: Duration::from_secs(120),
            list_runs: 10_000,
            list_reps: 30,
            decorator_reps: 5,
            decorator_steps: 50,
            decorator_slots: 4,
            pyfanout_reps: 3,
            pyfanout_steps: 500,
            pyfanout_slots: 4,
            log_reps: 3,
            log_chatty: loglatency::Pace {
                lines: 500,
                every: Duration::from_millis(10),
            },
            log_quiet: loglatency::Pace {
                lines: 40,
                every: Duration::from_millis(250),
            },
            journal_reps: 5,
            journal_steps: 1_000,
            takeover_reps: 5,
            takeover_runs: 1_000,
            takeover_snapshot_every: 1 << 20,
        }
    }
}

/// The AMQP figures the others are compared with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    publish_rate: f64,
    rt_p50_ms: f64,
    rt_p99_ms: f64,
}

fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{} GiB", n >> 30),
        n => format!("{} MiB", n >> 20),
    }
}

/// Runs the selected benchmarks, prints the table and writes `latest.md` / `latest.json`.
pub async fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    let started_at = crate::report::now_utc();
    let mut plan = Plan::new(o.quick);
    if let Some(n) = o.fanout_steps {
        plan.fanout_steps = n;
    }
    let env = Env {
        drover: std::fs::canonicalize(&o.drover)?,
        amqp_url: o.amqp_url.clone(),
        repo: std::fs::canonicalize(&o.repo)?,
        python: o.python.clone(),
        quick: o.quick,
    };
    let wanted = |n: u8| o.only.is_empty() || o.only.contains(&n);
    let mut rows: Vec<Row> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut fail = |bench: &str, e: anyhow::Error, rows: &mut Vec<Row>| {
        eprintln!("bench: {bench} failed: {e:#}");
        rows.push(Row::new(bench, "failed", "", vec![]).note(format!("{e:#}")));
        failures.push(bench.to_string());
    };

    // 1 is always measured: every other figure is judged against it.
    eprintln!("bench: 1 amqp limit");
    let limits = match amqp_rows(&env, &plan, &mut rows).await {
        Ok(l) => Some(l),
        Err(e) => {
            fail("1 amqp", e, &mut rows);
            None
        }
    };
    let nan = Limits {
        publish_rate: f64::NAN,
        rt_p50_ms: f64::NAN,
        rt_p99_ms: f64::NAN,
    };
    let limits = limits.unwrap_or(nan);

    if wanted(2) {
        eprintln!("bench: 2 hop latency");
        if let Err(e) = hop_rows(&env, &plan, limits, &mut rows).await {
            fail("2 hop", e, &mut rows);
        }
    }
    if wanted(3) {
        eprintln!("bench: 3 fan-out");
        if let Err(e) = fanout_rows(&env, &plan, limits, &mut rows).await {
            fail("3 fan-out", e, &mut rows);
        }
    }
    if wanted(4) {
        eprintln!("bench: 4 seed pipeline");
        if let Err(e) = seed_rows(&env, &plan, &mut rows).await {
            fail("4 seed", e, &mut rows);
        }
    }
    if wanted(5) {
        eprintln!("bench: 5 artifacts");
        if let Err(e) = artifact_rows(&env, &plan, &mut rows).await {
            fail("5 artifact", e, &mut rows);
        }
    }
    if wanted(6) {
        eprintln!("bench: 6 footprint");
        if let Err(e) = footprint_rows(&env, &plan, &o.profile, &mut rows).await {
            fail("6 footprint", e, &mut rows);
        }
    }
    if wanted(7) {
        eprintln!("bench: 7 scale");
        let sizes = plan.scale_sizes.clone();
        match scale::run(
            &env,
            plan.scale_reps,
            plan.scale_submit_steps,
            &sizes,
            plan.scale_budget,
        )
        .await
        {
            Ok(r) => rows.extend(r),
            Err(e) => fail("7 scale", e, &mut rows),
        }
    }

    if wanted(8) {
        eprintln!("bench: 8 listing");
        if let Err(e) = listing_rows(&env, &plan, &mut rows).await {
            fail("8 listing", e, &mut rows);
        }
    }

    if wanted(9) {
        eprintln!("bench: 9 decorator pipelines");
        if let Err(e) = decorator_rows(&env, &plan, &mut rows).await {
            fail("9 decorator", e, &mut rows);
        }
    }

    if wanted(10) {
        eprintln!("bench: 10 python fan-out");
        if let Err(e) = pyfanout_rows(&env, &plan, &mut rows).await {
            fail("10 python fan-out", e, &mut rows);
        }
    }

    if wanted(11) {
        eprintln!("bench: 11 log latency");
        if let Err(e) = log_rows(&env, &plan, &mut rows).await {
            fail("11 log latency", e, &mut rows);
        }
    }

    if wanted(12) {
        eprintln!("bench: 12 journal cost");
        if let Err(e) = journal_rows(&env, &plan, &mut rows).await {
            fail("12 journal", e, &mut rows);
        }
    }

    if wanted(13) {
        eprintln!("bench: 13 controller takeover");
        if let Err(e) = takeover_rows(&env, &plan, limits, &mut rows).await {
            fail("13 takeover", e, &mut rows);
        }
    }

    let report = Report {
        mode: if o.quick { "quick" } else { "full" }.to_string(),
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        machine: Machine::probe(&o.python, &o.profile),
        rows,
    };
    let md = report.markdown();
    println!("{md}");
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(o.out.join("latest.md"), &md)?;
    std::fs::write(
        o.out.join("latest.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("bench: wrote {}/latest.md and latest.json", o.out.display());
    if !failures.is_empty() {
        bail!("benchmark(s) failed: {}", failures.join(", "));
    }
    Ok(())
}

async fn amqp_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<Limits> {
    let ns = drover_test_support::fresh_namespace("bench-");
    let mut samples = Vec::new();
    for _ in 0..plan.amqp_reps {
        samples.push(amqp::measure(&env.amqp_url, &ns, plan.amqp).await?);
    }
    let pick = |f: fn(&amqp::AmqpSample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let n = count(plan.amqp.messages);
    let publish = Row::new(
        "1 amqp",
        &format!("publish persistent + confirms, {n} × {} B", plan.amqp.size),
        "msg/s",
        pick(|s| s.publish_rate),
    )
    .note("raw lapin, one channel, all in flight, every confirm awaited; durable queue");
    let consume = Row::new(
        "1 amqp",
        &format!("consume + ack, {n} × {} B", plan.amqp.size),
        "msg/s",
        pick(|s| s.consume_rate),
    )
    .note("raw lapin, prefetch 1000, one ack per message");
    let p50 = Row::new("1 amqp", "round trip of one message, p50", "ms", pick(|s| s.rt_p50_ms))
        .note(format!("publish (persistent, confirm) until both the confirm and the delivery on a second connection arrived; {} samples per repetition, the figure is each repetition's percentile", plan.amqp.round_trips));
    let p99 = Row::new(
        "1 amqp",
        "round trip of one message, p99",
        "ms",
        pick(|s| s.rt_p99_ms),
    );
    let limits = Limits {
        publish_rate: publish.median,
        rt_p50_ms: p50.median,
        rt_p99_ms: p99.median,
    };
    rows.extend([publish, consume, p50, p99]);
    Ok(limits)
}

async fn hop_rows(env: &Env, plan: &Plan, l: Limits, rows: &mut Vec<Row>) -> Result<()> {
    let s = hop::run(env, plan.hop_reps, plan.hop_steps).await?;
    let pick = |f: fn(&hop::HopSample) -> f64| s.iter().map(f).collect::<Vec<f64>>();
    let p50 = Row::new(
        "2 hop",
        &format!("hop p50, {}-step chain, one agent", plan.hop_steps),
        "ms",
        pick(|s| s.p50_ms),
    )
    .limit("AMQP round trip p50", l.rt_p50_ms, "ms");
    let met = p50.median < 5.0 && p50.median <= 3.0 * l.rt_p50_ms;
    let stamp = stats::median(&pick(|s| s.stamp_cost_ms));
    rows.push(p50.goal("p50 < 5 ms and ≤ 3× AMQP round trip", met).note(format!(
        "next step's first `date +%s%N` minus this step's last; includes sh exit/start and one fork/exec of date (a step's own two stamps are {stamp:.2} ms apart)"
    )));
    rows.push(
        Row::new("2 hop", "hop p99", "ms", pick(|s| s.p99_ms)).limit(
            "AMQP round trip p99",
            l.rt_p99_ms,
            "ms",
        ),
    );
    rows.push(
        Row::new("2 hop", "hop p50, steps printing a line at their end", "ms", pick(|s| s.printing_p50_ms))
            .note("the stamped chain, each step echoing one line to its log after its last stamp: the hop includes the end of a log"),
    );
    let artifact = Row::new(
        "2 hop",
        &format!(
            "hop p50, {}-step chain handing a small artifact from step to step",
            plan.hop_steps
        ),
        "ms",
        pick(|s| s.artifact_p50_ms),
    );
    let met = artifact.median <= 3.0;
    rows.push(artifact.goal("p50 ≤ 3 ms", met).note(
        "each step reads its parent's output (a few bytes) as an input and writes its own between its two stamps: the hop adds an upload and a download",
    ));
    let long_steps = plan.hop_steps * hop::LONG_CHAIN;
    let long = Row::new(
        "2 hop",
        &format!("hop p50, {long_steps}-step chain handing a small artifact from step to step"),
        "ms",
        pick(|s| s.long_artifact_p50_ms),
    )
    .limit(
        &format!("the {}-step chain's hop p50", plan.hop_steps),
        stats::median(&pick(|s| s.artifact_p50_ms)),
        "ms",
    );
    let met = long.ratio.is_some_and(|r| r <= 1.2);
    rows.push(long.goal("≤ 1.2× the shorter chain's", met));
    rows.push(
        Row::new("2 hop", "hop p50, chain of `true`, controller view", "ms", pick(|s| s.api_p50_ms))
            .note("next step's claim minus this step's Finished, as the controller recorded them (whole ms; excludes the agent's process start)"),
    );
    rows.push(Row::new(
        "2 hop",
        "step cycle, chain of `true` (run time / steps)",
        "ms",
        pick(|s| s.cycle_ms),
    ));
    Ok(())
}

async fn fanout_rows(env: &Env, plan: &Plan, l: Limits, rows: &mut Vec<Row>) -> Result<()> {
    let n = count(plan.fanout_steps);
    let peer = celery::run(env, plan.fanout_reps, plan.fanout_steps, plan.hop_steps).await?;
    let celery_row = Row::new(
        "3 fan-out",
        &format!("Celery 5 peer: {n} no-op tasks, submit → all run"),
        "tasks/s",
        peer.fanout_rate.clone(),
    )
    .note(format!(
        "bench/celery_peer.py: a Celery {} worker on the same broker, prefork pool × {} (the CPU count), task_acks_late, persistent messages published with confirms, no result backend; each task appends a byte to a file, counted until all ran; submitting alone took {:.1} s (median)",
        peer.version,
        peer.concurrency,
        stats::median(&peer.submit_secs)
    ));
    let celery_rate = celery_row.median;
    let starts = plan.fanout_steps.min(BARE_STARTS);
    let mut bare = Vec::new();
    for _ in 0..plan.fanout_reps {
        bare.push(tokio::task::spawn_blocking(move || fanout::bare_start_ms(starts)).await??);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let defaults = format!("1 agent, `drover up` defaults ({cpus} slots: auto, the CPU count)");
    for (agents, concurrency, label) in [
        (1, None, defaults.as_str()),
        (2, Some(4), "2 agents × 4 slots"),
    ] {
        let fplan = fanout::FanoutPlan {
            reps: plan.fanout_reps,
            steps: plan.fanout_steps,
            agents,
            concurrency,
            window: plan.fanout_window,
        };
        let measured = fanout::run(env, fplan).await?;
        let how: Vec<String> = measured
            .iter()
            .map(|r| match r.measured {
                fanout::Measured::WholeRun => "whole run".to_string(),
                fanout::Measured::Window { ended, secs } => {
                    format!("{ended} steps ended in a {secs:.0} s window")
                }
            })
            .collect();
        let rates = measured.iter().map(|r| r.rate).collect();
        let row = Row::new(
            "3 fan-out",
            &format!("{n} independent `true` steps, {label}"),
            "steps/s",
            rates,
        )
        .limit("Celery peer, same run", celery_rate, "tasks/s");
        let met = row.median >= 1000.0 && row.median >= 2.0 * celery_rate;
        rows.push(
            row.goal("≥ 1,000 steps/s and ≥ 2× Celery", met)
                .note(format!(
                    "each step its own process and workdir; {}; raw AMQP publish rate {:.0} msg/s",
                    how.join(", "),
                    l.publish_rate
                )),
        );
        if agents == 1 {
            rows.extend(step_cpu_rows(&measured, cpus, celery_rate));
            rows.extend(floor_rows(
                &bare,
                starts,
                &peer.broker_ms,
                cpus,
                celery_rate,
            ));
        }
    }
    rows.push(celery_row);
    rows.push(
        Row::new(
            "3 fan-out",
            &format!("Celery 5 peer: {}-task chain, hop p50", plan.hop_steps),
            "ms",
            peer.hop_p50_ms.clone(),
        )
        .limit("AMQP round trip p50", l.rt_p50_ms, "ms")
        .note("one chain of `.si()` tasks, each appending its start time; consecutive starts' difference (compare with bench 2's hop)"),
    );
    rows.push(Row::new(
        "3 fan-out",
        &format!("Celery 5 peer: {}-task chain, hop p99", plan.hop_steps),
        "ms",
        peer.hop_p99_ms,
    ));
    Ok(())
}

/// Where a step of the one-agent fan-out spent CPU, and whether twice the Celery peer's rate
/// leaves room for drover at all: the step processes and the broker against the CPU time a step
/// may take on this machine's CPUs at that rate.
fn step_cpu_rows(measured: &[fanout::Repetition], cpus: usize, celery_rate: f64) -> Vec<Row> {
    let figure = |what: &str| format!("CPU a step, 1 agent: {what}");
    let of = |f: fn(&fanout::StepCpu) -> Option<f64>| -> Vec<f64> {
        measured.iter().filter_map(|r| f(&r.cpu)).collect()
    };
    let mut rows = vec![
        Row::new(
            "3 fan-out",
            &figure("`drover up` (controller and agent)"),
            "ms",
            of(|c| Some(c.drover_ms)),
        )
        .note("/proc/PID/stat of `drover up`, user + system, per step: over the window, or from the submission until the run was seen ended"),
        Row::new(
            "3 fan-out",
            &figure("the step processes"),
            "ms",
            of(|c| Some(c.steps_ms)),
        )
        .note("the children `drover up` reaped (cutime + cstime): the `true` processes"),
    ];
    let broker = of(|c| c.broker_ms);
    if broker.len() != measured.len() {
        rows.push(broker_unmeasured(&figure("the broker")));
        return rows;
    }
    rows.push(
        Row::new("3 fan-out", &figure("the broker"), "ms", broker)
            .note("/proc/PID/stat of the one beam.smp process"),
    );
    let floor = of(|c| Some(c.steps_ms + c.broker_ms?));
    let row = Row::new(
        "3 fan-out",
        &figure("the step processes and the broker"),
        "ms",
        floor,
    );
    rows.push(against_twice_the_peer(row, cpus, celery_rate).note(
        "at or above 1×, twice the peer's rate is out of reach however little drover itself costs",
    ));
    rows
}

/// A broker CPU row left empty: its process could not be told apart.
fn broker_unmeasured(figure: &str) -> Row {
    Row::new("3 fan-out", figure, "ms", Vec::new())
        .note("not measured: not exactly one beam.smp process on this machine")
}

/// `row` (CPU a step, ms) against the CPU time a step may take on `cpus` CPUs at twice the
/// Celery peer's rate.
fn against_twice_the_peer(row: Row, cpus: usize, celery_rate: f64) -> Row {
    let budget = cpus as f64 * 1000.0 / (2.0 * celery_rate);
    let what = format!("CPU a step at 2× the Celery peer's rate on {cpus} CPUs");
    row.limit(&what, budget, "ms")
}

/// `true` processes the bench starts itself, per repetition, to measure what one costs.
const BARE_STARTS: usize = 3_000;

/// The least a step can cost here with a process per step and one broker message per step, by
/// figures that involve no drover at all: a `true` the bench starts itself and the broker's CPU
/// a Celery task; against the CPU time a step may take at twice the Celery peer's rate.
fn floor_rows(
    bare: &[f64],
    starts: usize,
    broker: &[f64],
    cpus: usize,
    celery_rate: f64,
) -> Vec<Row> {
    let mut rows = vec![
        Row::new(
            "3 fan-out",
            "a `true` started outside drover, one after another: CPU a start",
            "ms",
            bare.to_vec(),
        )
        .note(format!(
            "{starts} starts per repetition by the bench itself (std::process::Command), no cluster running; the children's CPU it reaped (cutime + cstime)"
        )),
    ];
    if broker.len() != bare.len() {
        rows.push(broker_unmeasured("Celery 5 peer: the broker's CPU a task"));
        return rows;
    }
    rows.push(
        Row::new("3 fan-out", "Celery 5 peer: the broker's CPU a task", "ms", broker.to_vec())
            .note("/proc/PID/stat of the one beam.smp process over each whole peer fan-out (worker start and stop included), per task"),
    );
    let floor = bare.iter().zip(broker).map(|(b, k)| b + k).collect();
    let row = Row::new(
        "3 fan-out",
        "floor without drover: a `true` started outside drover and the broker's CPU a Celery task",
        "ms",
        floor,
    );
    rows.push(
        against_twice_the_peer(row, cpus, celery_rate).note("at or above 1×, no engine that starts a process per step and passes each through this broker reaches twice the peer's rate on this machine"),
    );
    rows
}

async fn seed_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = seed::run(env, plan.seed_reps).await?;
    let inprocess = Row::new(
        "4 seed",
        "in-process floor: the 3 functions in one fresh python process",
        "ms",
        s.inprocess_ms,
    )
    .note("bench/seed.py inprocess on the step environment's python: interpreter start, imports (pandas, scikit-learn), the work, teardown");
    // A row of milliseconds against the floor's median.
    let against_floor = |what: &str, samples: Vec<f64>| {
        Row::new("4 seed", what, "ms", samples).limit("in-process floor", inprocess.median, "ms")
    };
    let floor = against_floor("the 3 functions as 3 plain python processes", s.floor_ms);
    let drover = against_floor(
        "seed pipeline, warm env, nothing cached: submit → run ended",
        s.drover_ms,
    );
    let met = drover.ratio.is_some_and(|r| r <= 0.25);
    rows.push(drover.goal("≤ 0.25× in-process floor", met).note(
        "examples/pipeline_from_functions.py's functions and pipeline via bench/seed.py, cache off so every step runs; `drover up --python-env venv`, env built and warm parent started before timing; from just before start() to the run's ended_at; the submitting script caches bytecode, as the floor does",
    ));
    // The goal's fresh agent is on a machine whose caches are warm: uv's downloads and the
    // bytecode cache beside them, both filled by an earlier agent that built the same packages.
    let first = against_floor(
        "first seed run on a fresh agent, bytecode cache warm: submit → run ended",
        s.first_warm_ms,
    );
    let met = first.ratio.is_some_and(|r| r <= 2.5);
    rows.push(first.goal("≤ 2.5× in-process floor", met).note(
        "warm: uv's package download cache and the bytecode cache (--python-bytecode-cache shared with the first cluster, which built the same environment and ran the seed), as a machine has them once any agent of it built these packages; cold: everything else. A new `drover up --python-env venv` for each sample, nothing built: the timed run builds the step environment, starts the warm parent and runs the steps warm",
    ));
    let first = against_floor(
        "first seed run on a fresh agent, bytecode cache cold: submit → run ended",
        s.first_cold_ms,
    );
    rows.push(first.note(
        "as the row above but with a new empty --python-bytecode-cache dir: the first preload compiles the ~900 files it imports (about 3 s of CPU, more than the floor's whole run) on the two CPUs it shares with the import itself, which puts this row's lower bound here at 1.8× to 2.7× the floor, depending on the day's floor (bench/results/2026-12-03-firstrun-bound.md). Samples alternate with the row above's",
    ));
    rows.push(inprocess);
    rows.push(floor);
    rows.push(
        Row::new(
            "4 seed",
            "warm parents: resident memory each",
            "MiB",
            s.parents_rss_mib,
        )
        .note("VmRSS of each `drover_warm.py` of the agent after the timed runs"),
    );
    rows.push(
        Row::new("4 seed", "warm parents: private memory each", "MiB", s.parents_private_mib)
            .note("Private_Clean + Private_Dirty; a forked step shares the rest with its parent until it writes"),
    );
    let cached = Row::new(
        "4 seed",
        "all-cached re-run: submit → run ended",
        "ms",
        s.cached_ms,
    );
    let met = cached.median < 300.0;
    rows.push(cached.goal("< 300 ms", met));
    Ok(())
}

async fn pyfanout_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = pyfanout::run(
        env,
        plan.pyfanout_reps,
        plan.pyfanout_steps,
        plan.pyfanout_slots,
    )
    .await?;
    let n = count(plan.pyfanout_steps);
    let label = format!("1 agent × {} slots", plan.pyfanout_slots);
    let commands = Row::new(
        "10 python fan-out",
        &format!("{n} independent `true` command steps, {label}"),
        "steps/s",
        s.true_rate,
    )
    .note("the same agent as the Python run below, just before it; steps over the run's first dispatch to its last end (controller timestamps)");
    let python = Row::new(
        "10 python fan-out",
        &format!("{n} Python function steps `def f(i): return i * 2`, {label}"),
        "steps/s",
        s.python_rate,
    )
    .limit("`true` fan-out, same agent", commands.median, "steps/s");
    let met = python.ratio.is_some_and(|r| r >= 0.5);
    rows.push(python.goal("≥ 0.5× the `true` fan-out", met).note(format!(
        "`drover up --python-env venv`, environment built and warm parent started by a warm-up run; {} of {} steps started warm",
        s.warm, s.steps
    )));
    rows.push(commands);
    rows.push(
        Row::new(
            "10 python fan-out",
            "warm parent: resident memory",
            "MiB",
            s.parents_rss_mib,
        )
        .note(format!(
            "VmRSS of the agent's `drover_warm.py`, sampled while {} forked steps (`time.sleep(2)`) run",
            plan.pyfanout_slots
        )),
    );
    rows.push(
        Row::new(
            "10 python fan-out",
            "warm child: private memory each",
            "MiB",
            s.children_private_mib,
        )
        .note("Private_Clean + Private_Dirty of /proc/PID/smaps_rollup of each forked step while it runs; the rest it shares with its parent"),
    );
    Ok(())
}

async fn artifact_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = artifact::run(env, plan.artifact_reps, plan.artifact_bytes).await?;
    let size = bytes(plan.artifact_bytes);
    let cp_sum = Row::new(
        "5 artifact",
        &format!("cp of a {size} file, then sha256sum of the copy"),
        "MiB/s",
        s.cp_sum_rate,
    )
    .note("same disk, page cache warm, no fsync; the copy's time plus the digest's");
    let cp = Row::new(
        "5 artifact",
        &format!("cp of a {size} file"),
        "MiB/s",
        s.cp_rate,
    )
    .note("page cache warm, no fsync");
    let drover = Row::new(
        "5 artifact",
        &format!("{size} output → next step's input"),
        "MiB/s",
        s.drover_rate,
    )
    .limit("cp + sha256sum", cp_sum.median, "MiB/s");
    let met = drover.ratio.is_some_and(|r| r >= 0.5);
    rows.push(drover.goal("≥ 50 % of cp + sha256sum", met).note(
        "producer's last stamp to consumer's first: hash, upload, blob store (hashed, fsynced), one hop, download with hash; see bench/results/2026-12-01-io-profile.md",
    ));
    rows.push(cp_sum);
    rows.push(cp);
    let growth = s.hwm_after_mib - s.hwm_before_mib;
    rows.push(
        Row::new("5 artifact", "peak RSS of `drover up` (controller + agent) over the transfers", "MiB", vec![s.hwm_after_mib])
            .goal("grows < 64 MiB (streamed)", growth < 64.0)
            .note(format!("VmHWM {:.1} MiB before the first transfer, {:.1} MiB after the last (+{growth:.1} MiB)", s.hwm_before_mib, s.hwm_after_mib)),
    );
    Ok(())
}

async fn footprint_rows(env: &Env, plan: &Plan, profile: &str, rows: &mut Vec<Row>) -> Result<()> {
    let s = footprint::run(
        env,
        plan.footprint_reps,
        plan.footprint_runs,
        plan.footprint_steps,
    )
    .await?;
    let c = Row::new(
        "6 footprint",
        "idle controller RSS",
        "MiB",
        s.controller_idle,
    );
    let met = c.median < 40.0;
    rows.push(c.goal("< 40 MiB", met).note(
        "`drover controller` and `drover agent` as separate processes, VmRSS after 5 s idle",
    ));
    let a = Row::new("6 footprint", "idle agent RSS", "MiB", s.agent_idle);
    let met = a.median < 15.0;
    rows.push(
        a.goal("< 15 MiB", met)
            .note(footprint::text_order(env, profile)),
    );
    let loaded = Row::new(
        "6 footprint",
        &format!(
            "controller RSS holding {} finished runs × {} steps",
            plan.footprint_runs,
            count(plan.footprint_steps)
        ),
        "MiB",
        s.controller_loaded,
    );
    let met = loaded.median < 64.0;
    rows.push(loaded.goal("< 64 MiB", met).note(
        "the first run executes; the others are identical and all cache hits (see bench/src/footprint.rs)",
    ));
    Ok(())
}

async fn listing_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = listing::run(env, plan.list_runs, plan.list_reps).await?;
    let n = count(plan.list_runs);
    let first = Row::new(
        "8 listing",
        &format!("GET /api/v1/runs?limit=50, newest page, {n} runs stored"),
        "ms",
        s.first_page,
    );
    let met = first.median < 50.0;
    rows.push(first.goal("< 50 ms", met).note(format!(
        "one request's round trip from the bench's HTTP client; each run has {} cached steps; {} requests, the figure is their median",
        listing::STEPS,
        plan.list_reps
    )));
    rows.push(
        Row::new(
            "8 listing",
            &format!("page of 50 after the middle run (?after=), {n} runs"),
            "ms",
            s.middle_page,
        )
        .note("keyset pagination through the creation-time index"),
    );
    rows.push(
        Row::new(
            "8 listing",
            &format!("?status= matching no run, {n} runs"),
            "ms",
            s.filter_none,
        )
        .note("the worst case of a filter: every run's header is read, no run's steps"),
    );
    Ok(())
}

async fn decorator_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    use decorator::{Shape, Way};
    let s = decorator::run(
        env,
        plan.decorator_reps,
        plan.decorator_steps,
        plan.decorator_slots,
    )
    .await?;
    let n = count(plan.decorator_steps);
    let bench = "9 decorator";
    let limit = "add_function_step, same run";
    for (shape, label) in [
        (Shape::Chain, format!("chain of {n} `return x + 1` steps")),
        (
            Shape::Fanout,
            format!(
                "fan-out of {n} `return x + 1` steps, 1 agent × {} slots",
                plan.decorator_slots
            ),
        ),
    ] {
        let dec = s.decorator.per_step(shape).to_vec();
        let fun = s.functions.per_step(shape).to_vec();
        let functions = Row::new(
            bench,
            &format!("{label}, add_function_step: time per step"),
            "ms",
            fun.clone(),
        );
        let decorated = Row::new(
            bench,
            &format!("{label}, decorator pipeline: time per component"),
            "ms",
            dec.clone(),
        )
        .limit(limit, functions.median, "ms")
        .note(
            "the first step's dispatch to the last step's end, as the controller recorded them, divided by the number of steps; the decorator pipeline's function only makes the calls (a lazy value passed on is a DAG edge), each call one add_step through the driver's channel, its agent and the controller",
        );
        let overhead: Vec<f64> = dec.iter().zip(&fun).map(|(d, f)| d - f).collect();
        let overhead = Row::new(
            bench,
            &format!("{label}: overhead per component call (decorator − add_function_step)"),
            "ms",
            overhead,
        )
        .note("per repetition: the decorator pipeline's time per component minus that of the add_function_step run next to it");
        let functions_end = Row::new(
            bench,
            &format!("{label}, add_function_step: submit → run ended"),
            "ms",
            s.functions.to_end(shape).to_vec(),
        );
        let decorated_end = Row::new(
            bench,
            &format!("{label}, decorator pipeline: submit → run ended"),
            "ms",
            s.decorator.to_end(shape).to_vec(),
        )
        .limit(limit, functions_end.median, "ms");
        rows.extend([decorated, functions, overhead, decorated_end, functions_end]);
    }
    let spacing = Row::new(
        bench,
        &format!("fan-out of {n}, decorator pipeline: one component call (time between dispatches)"),
        "ms",
        s.decorator.fanout_dispatch_spacing.clone(),
    )
    .note(format!(
        "the first to the last step's dispatch divided by {}: the driver makes its calls one after another, each an add_step through its channel, its agent and the controller (persisted and flushed, the job published) before the call returns; add_function_step's steps are all dispatched at once (median {:.2} ms apart)",
        plan.decorator_steps.saturating_sub(1),
        crate::stats::median(&s.functions.fanout_dispatch_spacing)
    ));
    rows.push(spacing);
    let driver = crate::stats::median(&s.decorator.to_driver_claim);
    let (d, f) = (s.way(Way::Decorator), s.way(Way::Functions));
    for (dec, fun, what) in [
        (
            &d.to_dispatch,
            &f.to_dispatch,
            "submit → first step dispatched",
        ),
        (
            &d.to_claim,
            &f.to_claim,
            "submit → first step claimed by an agent",
        ),
    ] {
        let functions = Row::new(
            bench,
            &format!("{what}, add_function_step"),
            "ms",
            fun.clone(),
        );
        let decorated = Row::new(
            bench,
            &format!("{what}, decorator pipeline"),
            "ms",
            dec.clone(),
        )
        .limit(limit, functions.median, "ms");
        let decorated = if what.ends_with("dispatched") {
            decorated.note(format!(
            "from just before the submitting call (the pipeline function's call / start()) to the controller's timestamp of the first step's first attempt, chains and fan-outs alike; a decorator pipeline first starts its driver (submit → driver claimed: median {driver:.0} ms), which then loads the module and adds the step"
        ))
        } else {
            decorated
        };
        rows.extend([decorated, functions]);
    }
    Ok(())
}

async fn log_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let bench = "11 log latency";
    for (pace, what) in [
        (plan.log_chatty, "a line every"),
        (plan.log_quiet, "a line every"),
    ] {
        let s = loglatency::run(env, plan.log_reps, pace).await?;
        let every = pace.every.as_millis();
        for (follower, samples, how) in [
            (
                "`drover logs -f`",
                &s.cli,
                "its standard output read line by line",
            ),
            (
                "the web UI's log stream",
                &s.stream,
                "GET .../log/stream, the event stream the run page reads, decoded as it arrives",
            ),
        ] {
            let p50 = Row::new(
                bench,
                &format!("{what} {every} ms → {follower}, p50"),
                "ms",
                samples.iter().map(|l| l.p50).collect(),
            );
            let met = p50.median < 100.0;
            rows.push(p50.goal("< 100 ms", met).note(format!(
                "{} lines per repetition, each stamped by the step when printed and by the follower ({how}) on arrival; `drover up --agents 1`",
                pace.lines
            )));
            rows.push(Row::new(
                bench,
                &format!("{what} {every} ms → {follower}, p99"),
                "ms",
                samples.iter().map(|l| l.p99).collect(),
            ));
        }
    }
    Ok(())
}

async fn journal_rows(env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let s = journal::run(env, plan.journal_reps, plan.journal_steps).await?;
    let bench = "12 journal";
    let steps = plan.journal_steps;
    let n = count(steps);
    let pick = |samples: &[journal::Sample], f: fn(&journal::Sample) -> f64| {
        samples.iter().map(f).collect::<Vec<f64>>()
    };
    // One figure with the journal off and on, the latter against the former.
    let pair = |what: &str, off: &str, on: &str, unit: &str, f: fn(&journal::Sample) -> f64| {
        let off = Row::new(bench, &format!("{what}, {off}"), unit, pick(&s.off, f));
        let on = Row::new(bench, &format!("{what}, {on}"), unit, pick(&s.on, f)).limit(
            "sled alone, same run",
            off.median,
            unit,
        );
        (off, on)
    };
    let ms_per_step = |s: &journal::Sample| 1000.0 / s.steps_per_s;
    let (off, on) = pair(
        &format!("{n} independent `true` steps"),
        "sled alone (`--state-journal off`)",
        "`--state-journal stream`",
        "steps/s",
        |s| s.steps_per_s,
    );
    let off = off.note(format!(
        "`drover up --agents 1 --python-env system` (slots: the CPU count); the run of {n} steps follows an 8-step warm-up run, steps over its first dispatch to its last end (controller timestamps); pairs of runs: {}, the mode that goes first alternating, each run on a new `drover up` in a namespace of its own, removed after",
        plan.journal_reps
    ));
    let on = on.note("every flush also appended to the stream `<ns>.journal` and confirmed by the broker (one local RabbitMQ node) before sled is flushed");
    let (time_off, time_on) = pair(
        "time per step",
        "sled alone",
        "with the journal",
        "ms",
        ms_per_step,
    );
    let time_on = time_on.note(
        "1000 / steps per second; the ratio is the per-step cost of the journal against sled alone",
    );
    let added: Vec<f64> =
        s.on.iter()
            .zip(&s.off)
            .map(|(on, off)| ms_per_step(on) - ms_per_step(off))
            .collect();
    let added = Row::new(
        bench,
        "time the journal adds per step (on − off, each pair)",
        "ms",
        added,
    );
    let (cpu_off, cpu_on) = pair(
        "CPU of `drover up` per step",
        "sled alone",
        "with the journal",
        "ms",
        |s| s.cpu_ms_per_step,
    );
    let cpu_off = cpu_off.note("user + system time of the `drover up` process (controller and agent in one; the steps' own processes excluded) from just before the submission to the run's end, over the steps");
    let sizes: Vec<journal::Size> = s.on.iter().filter_map(|s| s.journal).collect();
    let bytes = Row::new(
        bench,
        "journal bytes per step",
        "B",
        sizes
            .iter()
            .map(|j| j.bytes as f64 / steps as f64)
            .collect(),
    )
    .note(format!(
        "the payloads of the records appended from the warm-up run's end to the controller's exit (read back from the stream), over the steps; {:.2} records (batches) per step, median",
        stats::median(
            &sizes
                .iter()
                .map(|j| j.records as f64 / steps as f64)
                .collect::<Vec<f64>>()
        )
    ));
    rows.extend([off, on, time_off, time_on, added, cpu_off, cpu_on, bytes]);
    Ok(())
}

async fn takeover_rows(env: &Env, plan: &Plan, l: Limits, rows: &mut Vec<Row>) -> Result<()> {
    use takeover::Variant;
    let reps = plan.takeover_reps;
    let plain = takeover::run(
        env,
        reps,
        Variant {
            runs: 0,
            snapshot_every: 0,
        },
    )
    .await?;
    let mut grown = Vec::new();
    for snapshot_every in [0, plan.takeover_snapshot_every] {
        let v = Variant {
            runs: plan.takeover_runs,
            snapshot_every,
        };
        grown.push((v, takeover::run(env, reps, v).await?));
    }
    rows.extend(takeover::rows(&plain, &grown, l.rt_p50_ms));
    Ok(())
}
