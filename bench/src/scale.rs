//! Benchmark 7, scale: generated layered DAGs, submitted through the real CLI and controller
//! (submit + validate) and pushed through the pure scheduler in a child process with a time
//! budget (how scheduling time grows with the number of steps).

use crate::cluster::{Cluster, Env};
use crate::report::Row;
use anyhow::{Context, Result, bail};
use drover_controller::scheduler::{
    Action, Event, RunRecord, RunStatus, SchedulerConfig, State, handle,
};
use drover_controller::store::Store;
use drover_protocol::message::{Claimed, Finished, Outcome, StepJob, Submit};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::{AgentId, RunId};
use drover_test_support::{Check, Deadline, eventually_async};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Steps per layer of the generated DAG.
const WIDTH: usize = 100;

/// A layered DAG of `n` `true` steps: every step after the first layer has two parents in the
/// layer before it.
pub fn dag_toml(n: usize, queue: &str) -> String {
    let mut out = format!(
        "[pipeline]\nname = \"scale-{n}\"\nproject = \"bench\"\ndefault_queue = \"{queue}\"\n"
    );
    for i in 0..n {
        out.push_str(&format!(
            "\n[[step]]\nname = \"s{i}\"\ncommand = [\"true\"]\n"
        ));
        if i >= WIDTH {
            let layer_start = (i / WIDTH - 1) * WIDTH;
            let j = i % WIDTH;
            out.push_str(&format!(
                "parents = [\"s{}\", \"s{}\"]\n",
                layer_start + j,
                layer_start + (j + 1) % WIDTH
            ));
        }
    }
    out
}

/// The child process: feeds a whole run through the scheduler, printing JSON progress lines.
pub fn worker(n: usize) -> Result<()> {
    let text = dag_toml(n, "default");
    let stdout = std::io::stdout();
    let emit = |v: Value| -> Result<()> {
        let mut lock = stdout.lock();
        writeln!(lock, "{v}")?;
        lock.flush()?;
        Ok(())
    };
    let mut state = State::new(SchedulerConfig {
        controller_url: "http://127.0.0.1:1".into(),
        lease_ms: 30_000,
        artifact_store: None,
        epoch: 0,
        inline_outputs: 0,
    });
    let run_id = RunId::generate();
    let agent = AgentId::new("bench")?;
    let spec = PipelineSpec::from_toml(&text)?;
    let start = Instant::now();
    let cpu_start = cpu_ms()?;
    let mut now = 1_000u64;
    let fx = handle(
        &mut state,
        Event::Submit(Submit {
            run_id: run_id.clone(),
            spec,
            params: BTreeMap::new(),
            submitted_by: None,
            external: false,
        }),
        now,
    );
    emit(json!({
        "submit_ms": start.elapsed().as_secs_f64() * 1000.0,
        "submit_cpu_ms": cpu_ms()? - cpu_start,
    }))?;
    // Measuring the store's cost is not scheduling: its time is left out of the figures.
    let measuring = Instant::now();
    let cpu_before_measuring = cpu_ms()?;
    if let Some(run) = state.runs.get(&run_id) {
        let (persist_ms, bytes, event_ms) = persist_cost(run)?;
        emit(
            json!({"persist_ms": persist_ms, "record_bytes": bytes, "event_persist_ms": event_ms}),
        )?;
    }
    let left_out = measuring.elapsed();
    let cpu_left_out = cpu_ms()? - cpu_before_measuring;
    let elapsed_ms = || (start.elapsed() - left_out).as_secs_f64() * 1000.0;
    let mut queue: VecDeque<StepJob> = jobs(fx.actions);
    let mut done = 0usize;
    let mut last_report = Instant::now();
    while let Some(job) = queue.pop_front() {
        now += 1;
        let claimed = Claimed {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent.clone(),
        };
        handle(&mut state, Event::Claimed(claimed), now);
        let finished = Finished {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
            agent: agent.clone(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            outputs: BTreeMap::new(),
            message: None,
            started_at: now,
            ended_at: now,
            log_delays: Vec::new(),
            start: None,
            log_size: None,
            inline: Default::default(),
        };
        let fx = handle(&mut state, Event::Finished(finished), now);
        queue.extend(jobs(fx.actions));
        done += 1;
        if last_report.elapsed() > Duration::from_millis(500) {
            emit(json!({"done": done, "elapsed_ms": elapsed_ms()}))?;
            last_report = Instant::now();
        }
    }
    let status = state.runs.get(&run_id).map(|r| r.status);
    if status != Some(RunStatus::Succeeded) || done != n {
        bail!("the run ended {status:?} after {done} of {n} steps");
    }
    let cpu = cpu_ms()? - cpu_start - cpu_left_out;
    emit(json!({"done": done, "total_ms": elapsed_ms(), "cpu_ms": cpu}))
}

/// CPU time this thread has used, in ms. The scheduler runs on the worker's one thread, so this
/// is its cost alone: unlike the wall clock, it leaves out the time the thread waited for a
/// core while other work shared the machine.
fn cpu_ms() -> Result<f64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as f64 * 1000.0 + t.tv_nsec() as f64 / 1e6)
}

/// What the controller pays to write this run: the first write of the whole run record
/// (`Store::put_run` + `flush`, as the owner task does for a submission), and the write of an
/// event that changed one step (`Store::put_run_steps` + `flush`, as for a `Claimed`). Medians
/// of 5, in ms, and the record's encoded size.
fn persist_cost(run: &RunRecord) -> Result<(f64, usize, f64)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        store.put_run(run)?;
        rt.block_on(store.flush())?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut changed = run.clone();
    let mut event_times = Vec::new();
    for round in 0..5u64 {
        let i = changed.steps.len() / 2;
        changed.steps[i].lease_until = Some(round);
        let start = Instant::now();
        store.put_run_steps(&changed, &BTreeSet::from([i]))?;
        rt.block_on(store.flush())?;
        event_times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((
        crate::stats::median(&times),
        rmp_serde::to_vec_named(run)?.len(),
        crate::stats::median(&event_times),
    ))
}

fn jobs(actions: Vec<Action>) -> VecDeque<StepJob> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Dispatch { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

/// What the child got through before it finished or ran out of time.
#[derive(Debug, Clone, Copy)]
struct Progress {
    submit_ms: Option<f64>,
    submit_cpu_ms: Option<f64>,
    persist_ms: Option<f64>,
    record_bytes: Option<f64>,
    event_persist_ms: Option<f64>,
    done: usize,
    elapsed_ms: f64,
    /// CPU time of the whole run, once finished.
    cpu_ms: Option<f64>,
    finished: bool,
}

/// Runs the worker for `n` steps, killing it after `budget`.
fn schedule(n: usize, budget: Duration) -> Result<Progress> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["scale-worker", "--steps", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut p = Progress {
        submit_ms: None,
        submit_cpu_ms: None,
        persist_ms: None,
        record_bytes: None,
        event_persist_ms: None,
        done: 0,
        elapsed_ms: 0.0,
        cpu_ms: None,
        finished: false,
    };
    while let Some(left) = budget.checked_sub(started.elapsed()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let v: Value = serde_json::from_str(&line)?;
        if let Some(ms) = v["submit_ms"].as_f64() {
            p.submit_ms = Some(ms);
            p.submit_cpu_ms = v["submit_cpu_ms"].as_f64();
        }
        if let Some(ms) = v["persist_ms"].as_f64() {
            p.persist_ms = Some(ms);
            p.record_bytes = v["record_bytes"].as_f64();
            p.event_persist_ms = v["event_persist_ms"].as_f64();
        }
        if let Some(done) = v["done"].as_u64() {
            p.done = done as usize;
        }
        if let Some(ms) = v["elapsed_ms"].as_f64() {
            p.elapsed_ms = ms;
        }
        if let Some(ms) = v["total_ms"].as_f64() {
            p.elapsed_ms = ms;
            p.cpu_ms = v["cpu_ms"].as_f64();
            p.finished = true;
            break;
        }
    }
    if !p.finished {
        p.elapsed_ms = p.elapsed_ms.max(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(p)
}

/// Submit + validate through the CLI and the controller; then the scheduler at each size.
pub async fn run(
    env: &Env,
    reps: usize,
    submit_steps: usize,
    sizes: &[usize],
    budget: Duration,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut c = Cluster::new(env)?;
    c.uses_queue("scale");
    let submitted = submit_and_validate(&mut c, reps, submit_steps).await;
    c.shutdown().await;
    let submit_ms = submitted?;
    let ok = crate::stats::median(&submit_ms) < 1000.0;
    rows.push(
        Row::new(
            "7 scale",
            &format!("submit + validate {}-step DAG", submit_steps),
            "ms",
            submit_ms,
        )
        .goal("< 1 s", ok)
        .note("from `drover run FILE --json` (parse, validate, publish) until the controller serves the run over HTTP (validated, first layer dispatched, flushed); polled every 5 ms"),
    );

    // Round by round, every size once per round: each size's cost is compared with the
    // smallest size's, so both are taken under the same conditions (a machine that slows down
    // or speeds up during the benchmark would otherwise move only the sizes run at that time).
    let mut runs: Vec<Vec<Progress>> = vec![Vec::new(); sizes.len()];
    let rounds = reps.max(1);
    for round in 1..=rounds {
        for (of_size, &n) in runs.iter_mut().zip(sizes) {
            eprintln!(
                "bench: scale: round {round} of {rounds}: scheduling a {n}-step DAG (budget {budget:?})"
            );
            of_size.push(schedule(n, budget)?);
        }
    }
    // The per-step cost at the smallest size, events alone and the whole run.
    let mut base_per_step = (None, None);
    for (of_size, &n) in runs.iter().zip(sizes) {
        rows.extend(size_rows(n, of_size, budget, sizes[0], &mut base_per_step));
    }
    Ok(rows)
}

/// The rows of one size from its repetitions. Costs are CPU time of the scheduling thread, so a
/// machine shared with other work does not make a size look slower; wall times are in the notes.
fn size_rows(
    n: usize,
    runs: &[Progress],
    budget: Duration,
    smallest: usize,
    base_per_step: &mut (Option<f64>, Option<f64>),
) -> Vec<Row> {
    let all = |f: fn(&Progress) -> Option<f64>| runs.iter().filter_map(f).collect::<Vec<f64>>();
    let wall = |values: Vec<f64>| format!("{:.1} ms", crate::stats::median(&values));
    let accepted = all(|p| p.submit_cpu_ms);
    let accept_note = if accepted.len() == runs.len() {
        format!(
            "pure scheduler in-process: validate + first advance, CPU time (wall, median: {})",
            wall(all(|p| p.submit_ms))
        )
    } else {
        format!("did not return within the {budget:?} budget")
    };
    let mut rows = vec![
        Row::new(
            "7 scale",
            &format!("scheduler: accept {n}-step submit"),
            "ms",
            accepted,
        )
        .note(accept_note),
    ];
    let bytes = runs.iter().find_map(|p| p.record_bytes);
    rows.push(
        Row::new(
            "7 scale",
            &format!("controller: first write of the {n}-step run record"),
            "ms",
            all(|p| p.persist_ms),
        )
        .note(match bytes {
            Some(b) => format!(
                "Store::put_run + flush of the freshly submitted run ({:.1} MB msgpack); the first write of a run; a later event writes the header and only the steps it changed",
                b / 1e6
            ),
            None => "not reached within the budget".to_string(),
        }),
    );
    rows.push(
        Row::new(
            "7 scale",
            &format!("controller: write of an event that changed one step of the {n}-step run"),
            "ms",
            all(|p| p.event_persist_ms),
        )
        .note(match bytes {
            Some(_) => "Store::put_run_steps + flush after the run was written: the header and the one changed step record",
            None => "not reached within the budget",
        }),
    );
    let finished = runs.iter().all(|p| p.finished);
    let per_step = |cost: fn(&Progress) -> Option<f64>| -> Vec<f64> {
        match finished {
            true => all(cost).iter().map(|ms| ms * 1000.0 / n as f64).collect(),
            false => vec![f64::NAN],
        }
    };
    let done = runs.iter().map(|p| p.done).min().unwrap_or(0);
    let mut tail = format!(
        "; {done} of {n} steps in each of {} run(s), taken in rounds with every size, wall time per run (median) {}",
        runs.len(),
        wall(runs.iter().map(|p| p.elapsed_ms).collect())
    );
    if !finished {
        tail.push_str(&format!(
            " (a run stopped at the {budget:?} budget: only its first steps ran, while nearly every step was still pending)"
        ));
    }
    let events = per_step(|p| Some(p.cpu_ms? - p.submit_cpu_ms?));
    let whole = per_step(|p| p.cpu_ms);
    let figures = [
        (
            "scheduler: Claimed + Finished events, per step",
            events,
            "the events of a run after its submission through the pure scheduler, CPU time per step",
            &mut base_per_step.0,
        ),
        (
            "scheduler: whole run with its submission, per step",
            whole,
            "submit, then Claimed + Finished per step through the pure scheduler, CPU time per step",
            &mut base_per_step.1,
        ),
    ];
    for (name, values, what, base) in figures {
        let median = crate::stats::median(&values);
        let mut row = Row::new("7 scale", &format!("{name} ({n} steps)"), "µs", values);
        match *base {
            None => {
                *base = Some(median);
                row = row.goal("reference size", finished);
            }
            Some(base) => {
                let flat = finished && median <= 1.5 * base;
                row = row
                    .limit(&format!("per step at {smallest}"), base, "µs")
                    .goal("≤ 1.5× per step at the smallest size", flat);
            }
        }
        rows.push(row.note(format!("{what}{tail}")));
    }
    rows
}

async fn submit_and_validate(c: &mut Cluster, reps: usize, steps: usize) -> Result<Vec<f64>> {
    c.start_controller("controller", &["controller"]).await?;
    let path = c.path().join("scale.toml");
    std::fs::write(&path, dag_toml(steps, "scale"))?;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let run = c.submit(&path)?;
        let visible = Deadline::new(format!("run {run} to be visible"), Duration::from_secs(120))
            .every(Duration::from_millis(5));
        let (cluster, run): (&Cluster, &str) = (c, &run);
        eventually_async(visible, move || async move {
            match cluster.run_exists(run).await {
                Ok(true) => Check::Ready(()),
                Ok(false) => Check::NotYet("404".into()),
                Err(e) => Check::Failed(format!("{e:#}")),
            }
        })
        .await?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(samples)
}
