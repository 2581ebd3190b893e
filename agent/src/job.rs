//! One attempt end to end: workdir, inputs, the process, outputs, and the `Finished` report.

use crate::Shared;
use crate::artifacts;
use crate::logstream::LogStream;
use crate::process::{self, Ended, ProcessSpec};
use crate::pyenv;
use crate::workdir::Workdir;
use drover_amqp::Target;
use drover_protocol::OutputName;
use drover_protocol::message::{
    ArtifactRef, AttemptRef, Finished, JobKind, Message, Outcome, StepJob, now_ms,
};
use drover_protocol::refs::{self, Reference};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an attempt ended, before it is reported.
struct Report {
    outcome: Outcome,
    exit_code: Option<i32>,
    outputs: BTreeMap<OutputName, ArtifactRef>,
    message: Option<String>,
}

impl Report {
    fn error(message: String) -> Self {
        Self {
            outcome: Outcome::Error,
            exit_code: None,
            outputs: BTreeMap::new(),
            message: Some(message),
        }
    }
}

/// Runs a claimed job and reports how it ended. `cancel` aborts it.
pub async fn run(shared: Arc<Shared>, job: StepJob, cancel: CancellationToken) {
    let started_at = now_ms();
    let attempt = AttemptRef {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
    };
    let log = LogStream::start(
        shared.publisher.clone(),
        shared.config.names.events(),
        attempt.clone(),
    );
    let report = execute(&shared, &job, &log, cancel).await;
    if let Some(m) = &report.message {
        log.note(m);
    }
    log.finish().await;
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
        ended_at: now_ms(),
    });
    let target = Target::Queue(shared.config.names.events());
    let mut delay = Duration::from_millis(200);
    for attempt_no in 1..=8 {
        match shared.publisher.publish(&target, &finished).await {
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
    tracing::info!(
        "{}/{} attempt {} ended: {:?}",
        job.run_id,
        job.step,
        job.attempt,
        report.outcome
    );
}

async fn execute(
    shared: &Shared,
    job: &StepJob,
    log: &LogStream,
    cancel: CancellationToken,
) -> Report {
    let config = &shared.config;
    let base = config.controller_base(&job.controller_url);
    let route = match shared.routes.for_job(job, &shared.http, &base) {
        Ok(r) => r,
        Err(e) => return Report::error(format!("cannot use the artifact store: {e}")),
    };
    tracing::debug!(
        "{}/{}: artifacts through {}",
        job.run_id,
        job.step,
        route.describe()
    );
    let workdir = match Workdir::create(&config.work_dir, job, config.keep_workdirs) {
        Ok(w) => w,
        Err(e) => {
            return Report::error(format!(
                "cannot create a workdir under {}: {e}",
                config.work_dir.display()
            ));
        }
    };

    // Inputs: `${STEP.OUTPUT}` resolves to the downloaded file's absolute path.
    let mut inputs: HashMap<(String, String), PathBuf> = HashMap::new();
    for input in &job.job.inputs {
        let dest = workdir
            .path()
            .join("_inputs")
            .join(input.step.as_str())
            .join(input.output.as_str())
            .join(input.file_name.as_str());
        let what = format!("downloading {}.{}", input.step, input.output);
        let download = || artifacts::download(&route, input, &dest);
        if let Err(e) = artifacts::retrying(&what, download).await {
            return Report::error(format!(
                "cannot download input {}.{}: {e}",
                input.step, input.output
            ));
        }
        inputs.insert((input.step.to_string(), input.output.to_string()), dest);
    }
    let resolve = |r: &Reference| match r {
        Reference::Output { step, output } => inputs
            .get(&(step.clone(), output.clone()))
            .map(|p| p.display().to_string()),
        Reference::Param(_) => None,
    };

    let mut env = base_env(job, &base, workdir.path());
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
        } => {
            let prepared = match pyenv::prepare(
                &config.python,
                requirements,
                python.as_deref(),
                Some(log.sender()),
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    return Report::error(format!("cannot prepare the Python environment: {e}"));
                }
            };
            let job_json = serde_json::json!({
                "source": source,
                "entry": entry,
                "kwargs": kwargs,
                "inputs": inputs.iter().map(|((s, o), p)| (format!("{s}.{o}"), p.display().to_string())).collect::<BTreeMap<_, _>>(),
                "returns": returns,
                "output_dir": drover_protocol::validate::FUNCTION_OUTPUT_DIR,
            });
            let path = workdir.path().join("job.json");
            if let Err(e) = std::fs::write(&path, job_json.to_string()) {
                return Report::error(format!("cannot write {}: {e}", path.display()));
            }
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
    };

    let spec = ProcessSpec {
        argv,
        env,
        cwd: workdir.path().to_path_buf(),
        timeout: job.job.timeout_ms.map(Duration::from_millis),
        kill_grace: config.kill_grace,
    };
    let ended = match process::run(&spec, log.sender(), cancel).await {
        Ok(e) => e,
        Err(e) => return Report::error(e.to_string()),
    };
    let (outcome, exit_code, message) = match ended {
        Ended::Exited(0) => (Outcome::Succeeded, Some(0), None),
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
    if outcome != Outcome::Succeeded {
        return Report {
            outcome,
            exit_code,
            outputs: BTreeMap::new(),
            message,
        };
    }

    let mut outputs = BTreeMap::new();
    for (name, relative) in &job.job.outputs {
        let path = match workdir.output_path(relative) {
            Ok(p) => p,
            Err(why) => {
                return Report {
                    outcome: Outcome::Failed,
                    exit_code,
                    outputs: BTreeMap::new(),
                    message: Some(format!("output '{name}' {why}")),
                };
            }
        };
        let what = format!("uploading output '{name}'");
        match artifacts::retrying(&what, || artifacts::upload(&route, &path)).await {
            Ok(r) => {
                outputs.insert(name.clone(), r);
            }
            Err(e) => return Report::error(format!("cannot upload output '{name}': {e}")),
        }
    }
    Report {
        outcome,
        exit_code,
        outputs,
        message: None,
    }
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
