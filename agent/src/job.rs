//! One attempt end to end: workdir, inputs, the process, outputs, and the `Finished` report.

use crate::Shared;
use crate::artifacts::{self, Route};
use crate::channel::{self, Channel};
use crate::logstream::{self, LogSender, LogStream};
use crate::phases::Phases;
use crate::process::{self, Ended, ProcessSpec};
use crate::pyenv::{self, PreparedPython};
use crate::running::Registration;
use crate::slots::{AttemptSlot, SlotGuard};
use crate::workdir::Workdir;
use drover_protocol::OutputName;
use drover_protocol::message::{
    ArtifactRef, AttemptRef, Finished, JobKind, Message, Outcome, StartKind, StepJob, now_ms,
};
use drover_protocol::refs::{self, Reference};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an attempt ended, before it is reported.
struct Report {
    outcome: Outcome,
    exit_code: Option<i32>,
    outputs: BTreeMap<OutputName, ArtifactRef>,
    /// The bytes of the outputs that go inside `Finished` instead of an upload.
    inline: BTreeMap<OutputName, ByteBuf>,
    message: Option<String>,
}

impl Report {
    fn error(message: String) -> Self {
        Self {
            outcome: Outcome::Error,
            exit_code: None,
            outputs: BTreeMap::new(),
            inline: BTreeMap::new(),
            message: Some(message),
        }
    }

    fn released(message: String) -> Self {
        Self {
            outcome: Outcome::Released,
            ..Self::error(message)
        }
    }
}

/// Whether the job's claim was confirmed: until it resolves to true, nothing of the job runs.
pub(crate) type Claim = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Runs a job once `claim` is confirmed and reports how it ended; an unconfirmed claim ends it
/// unreported (the job went back to its queue). `cancel` stops it: reported `aborted`, or
/// `released` (handed back to run elsewhere) when `release` was cancelled first.
///
/// While the claim is in flight, a command step whose inputs are small (or none) is made ready:
/// its workdir, inputs and environment, and, for a step run as another user, its process
/// spawned and held at its gate in its cgroup ([`process::hold`]). The process is spawned (or
/// its gate opened) only once the claim is confirmed; a held one is killed if it is not.
///
/// The slots are given back as soon as the attempt's work is over (process reaped, outputs
/// stored), before its log's last chunk and its `Finished` are confirmed: the next job's claim
/// then overlaps this report instead of waiting for its confirm. The workdir is emptied once
/// `Finished` is sent.
///
/// `Finished` does not wait for the confirm of the log's last chunk either: it carries the log's
/// size and is published after that chunk on the same channel, and the job ends only once every
/// log byte is confirmed (the agent's drain waits for it; the spool is outside the workdir).
pub async fn run(
    shared: Arc<Shared>,
    job: StepJob,
    cancel: CancellationToken,
    release: CancellationToken,
    slots: SlotGuard,
    claim: Claim,
) {
    let mut phases = Phases::default();
    let mut claim = claim;
    // Polled once first, so that `Claimed` is on its way while the job is made ready.
    let early = tokio::select! {
        biased;
        confirmed = &mut claim => Some(confirmed),
        () = std::future::ready(()) => None,
    };
    let held = hold(&shared, &job, slots.attempt_slot(), &mut phases).await;
    let confirmed = match early {
        Some(confirmed) => confirmed,
        None => claim.await,
    };
    if !confirmed {
        if let Some(Ok(mut prepared)) = held
            && let Some(started) = prepared.started.take()
        {
            started.abandon().await;
        }
        return;
    }
    phases.mark("claim");
    let started_at = now_ms();
    let attempt = AttemptRef {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
    };
    let log = LogStream::start(
        shared.publisher.clone(),
        attempt.clone(),
        logstream::spool_path(&shared.config.work_dir, &attempt),
        shared.config.max_log_size,
        shared.abort.clone(),
    );
    let (mut report, start, workdir) = execute(
        &shared,
        &job,
        &log,
        cancel,
        slots.attempt_slot(),
        held,
        &mut phases,
    )
    .await;
    drop(slots);
    if shared.take_fenced(&attempt) {
        // Its lease ran out while the agent was cut off: the controller has declared it lost
        // (and may run it again), so a report would pass the stop off as the step's own failure.
        log.note("stopped by the agent: cut off from the broker for longer than the lease")
            .await;
        log.finish().await;
        tracing::info!(
            "{}/{} attempt {} stopped: cut off from the broker beyond its lease; not reported",
            job.run_id,
            job.step,
            job.attempt
        );
        return;
    }
    if report.outcome == Outcome::Aborted && release.is_cancelled() {
        // The processes are gone (killed with their group): the next attempt cannot overlap.
        report = Report::released(format!(
            "the agent was draining and its drain timeout ({}) expired",
            humantime::format_duration(shared.config.drain_timeout)
        ));
    }
    if let Some(m) = &report.message {
        log.note(m).await;
    }
    let ended_at = now_ms();
    let mut log = log.close().await;
    if log.held_back() {
        // The broker does not take the log now, nor would it take `Finished`: waiting for the
        // log first lets `Finished` tell the console how late it was.
        log.delivered().await;
    }
    phases.mark("log");
    let told_delays = log.delays();
    let finished = Message::Finished(Finished {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: shared.id.clone(),
        outcome: report.outcome,
        exit_code: report.exit_code,
        outputs: report.outputs,
        message: report.message,
        started_at,
        ended_at,
        log_delays: told_delays.clone(),
        start,
        log_size: Some(log.size),
        inline: report.inline,
    });
    let mut delay = Duration::from_millis(200);
    for attempt_no in 1..=8 {
        match shared
            .reports
            .send(finished.clone(), job.event_batches)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(
                    "cannot report the end of {}/{} (try {attempt_no}): {e}",
                    job.run_id,
                    job.step
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    phases.mark("finished");
    // Emptied once the controller has the result: a spare for a later attempt, or removed.
    drop(workdir);
    // Usually confirmed meanwhile: the chunk went out before `Finished`.
    let log = log.delivered().await;
    phases.mark("log confirmed");
    for delay in log.delays.iter().filter(|d| !told_delays.contains(d)) {
        tracing::warn!(
            "{}/{} attempt {}: log bytes from offset {} reached the broker {} ms late, after its Finished; the console does not show this delay",
            job.run_id,
            job.step,
            job.attempt,
            delay.offset,
            delay.delayed_ms
        );
    }
    tracing::info!(
        "{}/{} attempt {} ended: {:?}; log {} bytes, {} dropped past its cap",
        job.run_id,
        job.step,
        job.attempt,
        report.outcome,
        log.size,
        log.dropped
    );
    tracing::debug!(
        "{}/{} attempt {} phases: {}",
        job.run_id,
        job.step,
        job.attempt,
        phases.describe()
    );
}

/// Runs the attempt's phases; the report says how it ended, the start how a Python function
/// step's process started (`None` when none did), and the workdir is that of an attempt whose
/// process ran to its end, for the caller to let go of once the result is sent: emptying it
/// (inputs, outputs, what the step left) is not on the way to the next step.
async fn execute(
    shared: &Shared,
    job: &StepJob,
    log: &LogStream,
    cancel: CancellationToken,
    slot: Arc<AttemptSlot>,
    held: Option<Result<Prepared, Report>>,
    phases: &mut Phases,
) -> (Report, Option<StartKind>, Option<Workdir>) {
    let mut start = None;
    let mut workdir = None;
    let attempt = attempt(
        shared,
        job,
        log,
        cancel,
        slot,
        held,
        &mut start,
        &mut workdir,
        phases,
    );
    match attempt.await {
        Ok(report) | Err(report) => (report, start, workdir),
    }
}

/// Where each downloaded input is: `(step, output)` -> absolute path in the workdir.
type InputPaths = HashMap<(String, String), PathBuf>;

/// What an attempt made ready for its process.
struct Prepared {
    route: Route,
    /// Removed when dropped: after the process and its outputs are done with.
    workdir: Workdir,
    /// Python function steps' channel to their agent, for the attempt's life.
    channel: Option<Channel>,
    spec: ProcessSpec,
    /// The process, held at its gate, when it was spawned before the claim was confirmed.
    started: Option<process::Started<'static>>,
}

/// Inputs of at most this many bytes in all are fetched while the claim is in flight: about as
/// long as the claim's round trip on a local network, and little to waste when the claim
/// fails and the job goes back to its queue.
const INPUTS_FETCHED_AHEAD: u64 = 1 << 20;

/// Whether [`hold`] prepares `job` while its claim is in flight: a command step whose inputs
/// total at most [`INPUTS_FETCHED_AHEAD`]. A Python function step is prepared once claimed (its
/// environment may take long and logs what it does).
fn prepared_during_claim(job: &StepJob) -> bool {
    let inputs: u64 = job.job.inputs.iter().map(|input| input.size).sum();
    matches!(job.job.kind, JobKind::Command { .. }) && inputs <= INPUTS_FETCHED_AHEAD
}

/// While the claim is in flight: prepares a command step with small inputs (local work and
/// their download), holding a `--run-as` step's process at its gate; `None` for any other
/// step, which is prepared only once claimed. An `Err` is reported once the claim is confirmed.
async fn hold(
    shared: &Shared,
    job: &StepJob,
    slot: Arc<AttemptSlot>,
    phases: &mut Phases,
) -> Option<Result<Prepared, Report>> {
    if !prepared_during_claim(job) {
        return None;
    }
    let mut prepared = match prepare(shared, job, None, slot, phases).await {
        Ok(prepared) => prepared,
        Err(report) => return Some(Err(report)),
    };
    match process::hold(&prepared.spec) {
        Some(Ok(started)) => prepared.started = Some(started),
        Some(Err(e)) => return Some(Err(Report::error(e.to_string()))),
        // Not gated here: the process starts once the claim is confirmed.
        None => {}
    }
    phases.mark("spawn");
    Some(Ok(prepared))
}

/// The attempt's workdir, inputs, channel and process spec; `log` reports a Python
/// environment's preparation (a command step has none).
async fn prepare(
    shared: &Shared,
    job: &StepJob,
    log: Option<LogSender>,
    slot: Arc<AttemptSlot>,
    phases: &mut Phases,
) -> Result<Prepared, Report> {
    let config = &shared.config;
    let base = config.controller_base(&job.controller_url);
    let route = shared
        .routes
        .for_job(job, &shared.http, &base)
        .map_err(|e| Report::error(format!("cannot use the artifact store: {e}")))?;
    tracing::debug!(
        "{}/{}: artifacts through {}",
        job.run_id,
        job.step,
        route.describe()
    );
    let workdir = Workdir::create(&config.work_dir, job, config.keep_workdirs, &shared.spares)
        .map_err(|e| {
            Report::error(format!(
                "cannot create a workdir under {}: {e}",
                config.work_dir.display()
            ))
        })?;
    phases.mark("workdir");
    let inputs = download_inputs(job, &route, &workdir).await?;
    let blobs = download_blobs(job, &route, &workdir).await?;
    phases.mark("inputs");
    // Python function steps get a channel to their agent for the attempt's life.
    let channel = match &job.job.kind {
        JobKind::Function { .. } => Some(open_channel(shared, job, &base, &route, &workdir, slot)?),
        JobKind::Command { .. } => None,
    };
    let given = Given {
        base: &base,
        inputs: &inputs,
        blobs: &blobs,
        channel: channel.as_ref().map(Channel::path),
        owner: channel.as_ref().map(Channel::owner),
    };
    let spec = process_spec(shared, job, log, &workdir, &given).await?;
    phases.mark("environment");
    if let Some(user) = &config.run_as {
        crate::run_as::hand_over(workdir.path(), user).map_err(|e| {
            Report::error(format!(
                "cannot hand the workdir over to {} (--run-as): {e}",
                user.name
            ))
        })?;
    }
    Ok(Prepared {
        route,
        workdir,
        channel,
        spec,
        started: None,
    })
}

/// The phases of one attempt in order, from what [`hold`] prepared when it did; an `Err` is the
/// report of the phase that ended it early.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    shared: &Shared,
    job: &StepJob,
    log: &LogStream,
    cancel: CancellationToken,
    slot: Arc<AttemptSlot>,
    held: Option<Result<Prepared, Report>>,
    start: &mut Option<StartKind>,
    done_with: &mut Option<Workdir>,
    phases: &mut Phases,
) -> Result<Report, Report> {
    let mut ready = match held {
        Some(held) => held?,
        None => prepare(shared, job, Some(log.sender()), slot, phases).await?,
    };
    let started = ready.started.take();
    let exit_code = run_process(shared, &ready.spec, started, job, log, cancel, start).await?;
    phases.mark(match start {
        Some(StartKind::Warm) => "process (warm)",
        Some(StartKind::Cold) => "process (cold)",
        None => "process",
    });
    let stored = ready
        .channel
        .as_ref()
        .map(Channel::artifacts)
        .unwrap_or_default();
    drop(ready.channel.take());
    let inline_most = job
        .inline_outputs
        .min(shared.config.max_message_size as u64 / 4);
    let sent = send_outputs(job, &ready.route, &ready.workdir, exit_code, inline_most).await;
    *done_with = Some(ready.workdir);
    let mut report = sent?;
    phases.mark("outputs");
    // The channel refused artifact names that are declared outputs, so nothing is replaced.
    for (name, artifact) in stored {
        report.outputs.entry(name).or_insert(artifact);
    }
    Ok(report)
}

/// Downloads every input into `_inputs/<step>/<output>/` of the workdir.
async fn download_inputs(
    job: &StepJob,
    route: &Route,
    workdir: &Workdir,
) -> Result<InputPaths, Report> {
    let mut inputs = InputPaths::new();
    for input in &job.job.inputs {
        let dest = workdir
            .path()
            .join("_inputs")
            .join(input.step.as_str())
            .join(input.output.as_str())
            .join(input.file_name.as_str());
        let what = format!("downloading {}.{}", input.step, input.output);
        let download = || artifacts::download(route, input, &dest);
        let fetched = match &input.content {
            Some(bytes) => artifacts::write_given(input, bytes, &dest),
            None => artifacts::retrying(&what, download).await,
        };
        if let Err(e) = fetched {
            return Err(Report::error(format!(
                "cannot download input {}.{}: {e}",
                input.step, input.output
            )));
        }
        inputs.insert((input.step.to_string(), input.output.to_string()), dest);
    }
    Ok(inputs)
}

/// Downloads every blob kwarg of a function step into `_inputs/_kwargs/<name>.pkl`.
async fn download_blobs(
    job: &StepJob,
    route: &Route,
    workdir: &Workdir,
) -> Result<BTreeMap<String, PathBuf>, Report> {
    let JobKind::Function { blobs, .. } = &job.job.kind else {
        return Ok(BTreeMap::new());
    };
    let mut paths = BTreeMap::new();
    for (name, blob) in blobs {
        let file = drover_protocol::FileName::sanitized(&format!("{name}.pkl"));
        let dest = workdir
            .path()
            .join("_inputs")
            .join("_kwargs")
            .join(file.as_str());
        let what = format!("kwarg {name}");
        let download = || artifacts::download_blob(route, &blob.digest, &what, &dest);
        if let Err(e) = artifacts::retrying(&what, download).await {
            return Err(Report::error(format!("cannot download kwarg {name}: {e}")));
        }
        paths.insert(name.clone(), dest);
    }
    Ok(paths)
}

/// Listens on the attempt's channel socket.
fn open_channel(
    shared: &Shared,
    job: &StepJob,
    base: &str,
    route: &Route,
    workdir: &Workdir,
    slot: Arc<AttemptSlot>,
) -> Result<Channel, Report> {
    let context = channel::Context {
        attempt: AttemptRef {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
        },
        base: base.to_string(),
        http: shared.http.clone(),
        route: route.clone(),
        workdir: workdir.path().to_path_buf(),
        slot,
        csrf: Default::default(),
        owner: Default::default(),
        declared: job.job.outputs.keys().cloned().collect(),
        artifacts: Default::default(),
    };
    Channel::open(context, &shared.config.work_dir)
        .map_err(|e| Report::error(format!("cannot open the step's channel: {e}")))
}

/// What the agent prepared for the process.
struct Given<'a> {
    /// The controller's base URL.
    base: &'a str,
    inputs: &'a InputPaths,
    /// Blob kwargs: name -> downloaded file.
    blobs: &'a BTreeMap<String, PathBuf>,
    /// The channel's socket (Python function steps).
    channel: Option<&'a std::path::Path>,
    /// Where the channel learns the step's process group.
    owner: Option<Arc<std::sync::OnceLock<i32>>>,
}

/// The process to start: argv and environment with `${STEP.OUTPUT}` resolved to the
/// downloaded files' absolute paths; a function step runs the harness on a written `job.json`.
async fn process_spec(
    shared: &Shared,
    job: &StepJob,
    log: Option<LogSender>,
    workdir: &Workdir,
    given: &Given<'_>,
) -> Result<ProcessSpec, Report> {
    let (base, inputs) = (given.base, given.inputs);
    let resolve = |r: &Reference| match r {
        Reference::Output { step, output } => inputs
            .get(&(step.clone(), output.clone()))
            .map(|p| p.display().to_string()),
        // Parameters, ids and artifact URLs were filled in by the controller.
        _ => None,
    };
    let mut env = base_env(job, base, workdir.path());
    if let Some(socket) = given.channel {
        env.insert("DROVER_CHANNEL".into(), socket.display().to_string());
    }
    for (k, v) in &job.job.env {
        env.insert(k.clone(), refs::render(v, resolve));
    }
    let argv = match &job.job.kind {
        JobKind::Command { argv } => argv.iter().map(|a| refs::render(a, resolve)).collect(),
        JobKind::Function {
            source,
            entry,
            kwargs,
            returns,
            requirements,
            python,
            blobs: _,
            prewarm: _,
        } => {
            let blobs: BTreeMap<&String, String> = given
                .blobs
                .iter()
                .map(|(name, path)| (name, path.display().to_string()))
                .collect();
            let prepared =
                pyenv::prepare(&shared.config.python, requirements, python.as_deref(), log)
                    .await
                    .map_err(|e| {
                        Report::error(format!("cannot prepare the Python environment: {e}"))
                    })?;
            let job_json = serde_json::json!({
                "source": source,
                "entry": entry,
                "kwargs": kwargs,
                "inputs": inputs.iter().map(|((s, o), p)| (format!("{s}.{o}"), p.display().to_string())).collect::<BTreeMap<_, _>>(),
                "returns": returns,
                "blobs": blobs,
                "output_dir": drover_protocol::validate::FUNCTION_OUTPUT_DIR,
            });
            let path = workdir.path().join("job.json");
            std::fs::write(&path, job_json.to_string())
                .map_err(|e| Report::error(format!("cannot write {}: {e}", path.display())))?;
            harness_argv(&prepared, &mut env)
        }
    };
    Ok(ProcessSpec {
        argv,
        env,
        cwd: workdir.path().to_path_buf(),
        timeout: job.job.timeout_ms.map(Duration::from_millis),
        kill_grace: shared.config.kill_grace,
        record: Some(Registration::new(
            &shared.entries,
            AttemptRef {
                run_id: job.run_id.clone(),
                step: job.step.clone(),
                attempt: job.attempt,
            },
            workdir.path(),
        )),
        user: shared.config.run_as.as_ref().map(|u| (u.uid, u.gid)),
        started: given.owner.clone(),
    })
}

/// The harness under the prepared interpreter, with the SDK on its path.
fn harness_argv(prepared: &PreparedPython, env: &mut BTreeMap<String, String>) -> Vec<String> {
    env.insert(
        "PYTHONPATH".into(),
        prepared.pythonpath.display().to_string(),
    );
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    vec![
        prepared.python.display().to_string(),
        prepared.harness.display().to_string(),
        "job.json".to_string(),
    ]
}

/// Runs the process to its end, setting `start` for a Python function step. `Ok` holds the exit
/// code of a success; any other end is the attempt's report.
async fn run_process(
    shared: &Shared,
    spec: &ProcessSpec,
    started: Option<process::Started<'_>>,
    job: &StepJob,
    log: &LogStream,
    cancel: CancellationToken,
    start: &mut Option<StartKind>,
) -> Result<Option<i32>, Report> {
    // Stopped before its program ran (a job claimed ahead waits for a slot, and a drain or an
    // abort may come meanwhile): the program never starts.
    if cancel.is_cancelled() {
        if let Some(started) = started {
            started.abandon().await;
        }
        return Err(Report {
            outcome: Outcome::Aborted,
            exit_code: None,
            outputs: BTreeMap::new(),
            inline: BTreeMap::new(),
            message: Some("aborted before it started".to_string()),
        });
    }
    let warm = match &job.job.kind {
        JobKind::Function {
            prewarm: Some(false),
            ..
        } => None,
        JobKind::Function {
            source,
            requirements,
            ..
        } => {
            shared
                .warm
                .run(spec, source, requirements, log.sender(), cancel.clone())
                .await
        }
        JobKind::Command { .. } => None,
    };
    let ended = match warm {
        Some(ended) => {
            *start = Some(StartKind::Warm);
            ended
        }
        None => {
            if matches!(job.job.kind, JobKind::Function { .. }) {
                *start = Some(StartKind::Cold);
            }
            match started {
                Some(started) => started.run(spec, log.sender(), cancel).await,
                None => process::run(spec, log.sender(), cancel).await,
            }
        }
    }
    .map_err(|e| Report::error(e.to_string()))?;
    let (outcome, exit_code, message) = match ended {
        Ended::Exited(0) => return Ok(Some(0)),
        Ended::Exited(code) => (Outcome::Failed, Some(code), None),
        Ended::Signaled(sig) => (
            Outcome::Failed,
            None,
            Some(format!("killed by signal {sig}")),
        ),
        Ended::TimedOut => (
            Outcome::TimedOut,
            None,
            Some(format!("timed out after {}", humanize(job.job.timeout_ms))),
        ),
        Ended::Cancelled => (Outcome::Aborted, None, Some("aborted".to_string())),
    };
    Err(Report {
        outcome,
        exit_code,
        outputs: BTreeMap::new(),
        inline: BTreeMap::new(),
        message,
    })
}

/// Sends every declared output of a successful process: up to `inline_most` bytes of them, in
/// the order declared, go inside `Finished`, the rest are uploaded; a missing one fails the
/// attempt.
async fn send_outputs(
    job: &StepJob,
    route: &Route,
    workdir: &Workdir,
    exit_code: Option<i32>,
    inline_most: u64,
) -> Result<Report, Report> {
    let mut report = Report {
        outcome: Outcome::Succeeded,
        exit_code,
        outputs: BTreeMap::new(),
        inline: BTreeMap::new(),
        message: None,
    };
    let mut room = inline_most;
    for (name, relative) in &job.job.outputs {
        let path = workdir.output_path(relative).map_err(|why| Report {
            outcome: Outcome::Failed,
            exit_code,
            outputs: BTreeMap::new(),
            inline: BTreeMap::new(),
            message: Some(format!("output '{name}' {why}")),
        })?;
        // A job without an allowance goes to a controller that may not take inline bytes at
        // all: even an empty output is uploaded then.
        let read = match inline_most {
            0 => None,
            _ => artifacts::read_small(&path, room)
                .map_err(|e| Report::error(format!("cannot read output '{name}': {e}")))?,
        };
        if let Some((artifact, bytes)) = read {
            room -= artifact.size;
            report.inline.insert(name.clone(), ByteBuf::from(bytes));
            report.outputs.insert(name.clone(), artifact);
            continue;
        }
        let what = format!("uploading output '{name}'");
        let uploaded = artifacts::retrying(&what, || artifacts::upload(route, &path))
            .await
            .map_err(|e| Report::error(format!("cannot upload output '{name}': {e}")))?;
        report.outputs.insert(name.clone(), uploaded);
    }
    Ok(report)
}

/// The only environment a step sees besides what it declares.
fn base_env(job: &StepJob, base: &str, workdir: &std::path::Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for key in ["PATH", "LANG", "LC_ALL", "TZ"] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    let dir = workdir.display().to_string();
    env.insert("HOME".into(), dir.clone());
    env.insert("TMPDIR".into(), format!("{dir}/_tmp"));
    env.insert("DROVER_WORKDIR".into(), dir);
    env.insert("DROVER_RUN_ID".into(), job.run_id.to_string());
    env.insert("DROVER_STEP".into(), job.step.to_string());
    env.insert("DROVER_ATTEMPT".into(), job.attempt.to_string());
    env.insert("DROVER_URL".into(), base.to_string());
    env
}

fn humanize(ms: Option<u64>) -> String {
    ms.map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::message::JobInput;
    use drover_protocol::{Digest, FileName, StepName};

    fn with_inputs(sizes: &[u64]) -> StepJob {
        let mut job = crate::workdir::tests::job();
        job.job.inputs = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| JobInput {
                step: StepName::new(format!("p{i}")).unwrap(),
                output: OutputName::new("out").unwrap(),
                digest: Digest::of_bytes(b""),
                size,
                file_name: FileName::sanitized("out.txt"),
                content: None,
            })
            .collect();
        job
    }

    #[test]
    fn command_steps_with_small_inputs_are_prepared_during_their_claim() {
        assert!(prepared_during_claim(&with_inputs(&[])));
        assert!(prepared_during_claim(&with_inputs(&[3, 4096])));
        let half = INPUTS_FETCHED_AHEAD / 2;
        assert!(prepared_during_claim(&with_inputs(&[half, half])));
        assert!(!prepared_during_claim(&with_inputs(&[half, half + 1])));
        assert!(!prepared_during_claim(&with_inputs(&[1 << 30])));
    }

    #[test]
    fn function_steps_are_prepared_once_claimed() {
        let mut job = crate::workdir::tests::job();
        job.job.kind = JobKind::Function {
            source: String::new(),
            entry: "f".into(),
            kwargs: BTreeMap::new(),
            returns: vec![],
            requirements: vec![],
            python: None,
            blobs: BTreeMap::new(),
            prewarm: None,
        };
        assert!(!prepared_during_claim(&job));
    }

    /// Outputs go inside `Finished`, in the order declared, while they fit in the room the job
    /// gives; the others are uploaded.
    #[tokio::test]
    async fn small_outputs_go_inside_the_result_while_they_fit() {
        let dir = tempfile::tempdir().unwrap();
        let store = drover_storage::LocalBlobs::open(&dir.path().join("blobs")).unwrap();
        let route = Route::Store(Arc::new(store.clone()));
        let spares = Arc::new(crate::workdir::Spares::new(dir.path()));
        let mut job = crate::workdir::tests::job();
        let workdir = Workdir::create(&dir.path().join("work"), &job, false, &spares).unwrap();
        let files = [
            ("a", vec![b'a'; 40 << 10]),
            ("b", vec![b'b'; 40 << 10]),
            ("c", vec![b'c'; 3]),
            ("d", vec![]),
        ];
        for (name, bytes) in &files {
            std::fs::write(workdir.path().join(name), bytes).unwrap();
            job.job
                .outputs
                .insert(OutputName::new(*name).unwrap(), (*name).to_string());
        }
        let name = |n: &str| OutputName::new(n).unwrap();
        let stored = |bytes: &[u8]| store.path_of(&Digest::of_bytes(bytes)).exists();

        let report = send_outputs(&job, &route, &workdir, Some(0), 64 << 10)
            .await
            .unwrap_or_else(|r| panic!("{:?}", r.message));
        let inline: Vec<&OutputName> = report.inline.keys().collect();
        assert_eq!(inline, [&name("a"), &name("c"), &name("d")]);
        assert_eq!(report.inline[&name("c")].as_ref(), b"ccc");
        assert_eq!(report.outputs.len(), 4);
        for (n, bytes) in &files {
            assert_eq!(report.outputs[&name(n)].digest, Digest::of_bytes(bytes));
            assert_eq!(report.outputs[&name(n)].size, bytes.len() as u64);
        }
        assert!(!stored(&files[0].1) && stored(&files[1].1) && !stored(&files[2].1));
        assert!(!stored(&files[3].1));

        let report = send_outputs(&job, &route, &workdir, Some(0), 0)
            .await
            .unwrap_or_else(|r| panic!("{:?}", r.message));
        assert!(report.inline.is_empty());
        assert!(files.iter().all(|(_, bytes)| stored(bytes)));
    }
}
