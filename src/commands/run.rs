//! `drover run` (validate, submit, optionally wait), `drover rerun` and `drover abort`.

use super::names;
use crate::cli::{AbortArgs, Global, RerunArgs, RunArgs, StatusArgs};
use crate::client::Client;
use anyhow::{Context, Result};
use drover_amqp::{Broker, Target};
use drover_api::{RerunAccepted, RerunRequest, RunStatus, RunView, StepStatus};
use drover_protocol::message::{Abort, Message, Submit};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::validate::validate;
use drover_protocol::{QueueName, RunId, StepName};
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code for a pipeline rejected before submission.
const EXIT_INVALID: u8 = 2;

pub async fn run(g: &Global, args: RunArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let spec = match PipelineSpec::from_toml(&text) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!(
                "error: {} is not a valid pipeline file:\n{e}",
                args.file.display()
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let params: BTreeMap<String, String> = args.params.iter().cloned().collect();
    if let Err(errors) = validate(&spec, &params) {
        eprintln!("error: {}: {errors}", args.file.display());
        eprintln!("nothing was submitted");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let run_id = RunId::generate();
    let queue = QueueName::new(args.queue.as_str()).context("bad --queue")?;
    let submit = Submit {
        run_id: run_id.clone(),
        spec,
        params,
        submitted_by: submitter(),
        external: false,
    };
    publish_to_services(g, &queue, Message::Submit(submit)).await?;
    let client = Client::new(g)?;
    let url = client.run_page(run_id.as_str());
    if !args.json {
        println!("submitted run {run_id}");
        println!("{url}");
    }
    if !args.wait {
        if args.json {
            let out = serde_json::json!({"run_id": run_id, "url": url, "status": "submitted", "steps": {}});
            println!("{out}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    finish(&client, run_id.as_str(), &url, args.json).await
}

/// Waits for the run, prints the outcome, and turns it into the exit code.
async fn finish(client: &Client, run_id: &str, url: &str, json: bool) -> Result<ExitCode> {
    let view = wait_for(client, run_id, !json).await?;
    if json {
        let steps: BTreeMap<&str, &str> = view
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.status.as_str()))
            .collect();
        let out = serde_json::json!({"run_id": run_id, "url": url, "status": view.status, "error": view.error, "steps": steps});
        println!("{out}");
    } else {
        report_end(client, &view).await;
    }
    Ok(if view.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn submitter() -> Option<String> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    Some(format!("{user}@{host}"))
}

async fn publish_to_services(g: &Global, queue: &QueueName, msg: Message) -> Result<()> {
    let names = names(g)?;
    let limit = super::serve::message_size(g)?;
    let size = msg.encode()?.len();
    anyhow::ensure!(
        size <= limit,
        "the {} message is {size} bytes, more than --max-message-size ({limit} bytes); nothing was submitted: make the pipeline smaller, or raise the limit here and on the controller",
        msg.kind()
    );
    let broker =
        Broker::connect_with_retry(&g.amqp(), names.clone(), "cli", Duration::from_secs(5))
            .await?
            .with_max_message_size(limit)
            .with_queues(g.queues());
    // A submitter under per-role broker users may not declare: the controller has.
    broker.declare_topology_if_permitted().await?;
    broker.declare_user_queue_if_permitted(queue).await?;
    let publisher = broker.publisher().await?;
    let target = if *queue == QueueName::services() {
        Target::Submit
    } else {
        Target::Queue(names.user_queue(queue))
    };
    publisher
        .publish(&target, &msg)
        .await
        .with_context(|| format!("submitting to queue {}", names.user_queue(queue)))?;
    broker.close().await;
    Ok(())
}

/// The shortest wait between two polls of a run.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The longest: one answer slowed by something else (a busy controller, a takeover) must not
/// keep the CLI from seeing the run end for minutes.
const POLL_AT_MOST: Duration = Duration::from_secs(10);

/// How long to wait before the next poll of a run whose last answer took `took`: 20 times as
/// long as the answer took, within [`POLL_EVERY`] and [`POLL_AT_MOST`], so that a waiting CLI
/// costs the controller about 5 % of a core at most for runs whose view takes up to half a
/// second to make (a 10k-step run's took 44–89 ms during a fan-out).
fn poll_pause(took: Duration) -> Duration {
    (took * 20).clamp(POLL_EVERY, POLL_AT_MOST)
}

/// Polls the run until it ends, printing each step's status changes when `progress` is set.
async fn wait_for(client: &Client, run: &str, progress: bool) -> Result<RunView> {
    let start = Instant::now();
    let mut seen: HashMap<StepName, StepStatus> = HashMap::new();
    let mut warned = false;
    let mut unanswered: Option<Instant> = None;
    loop {
        let asked = Instant::now();
        let answer = client.run(run).await;
        let pause = poll_pause(asked.elapsed());
        let view = match answer {
            Ok(view) => {
                unanswered = None;
                view
            }
            // A takeover: the active controller is gone and a standby is taking its place.
            Err(e) if crate::controllers::failing_over(&e, &mut unanswered) => {
                tracing::debug!("waiting for an active controller: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match view {
            Some(view) => {
                if progress {
                    for s in &view.steps {
                        if seen.get(&s.name) != Some(&s.status) {
                            let extra = if s.cache_hit { " (cache hit)" } else { "" };
                            eprintln!(
                                "[{:>6.1}s] {:<24} {}{extra}",
                                start.elapsed().as_secs_f64(),
                                s.name,
                                s.status
                            );
                            seen.insert(s.name.clone(), s.status);
                        }
                    }
                }
                if view.status.is_terminal() {
                    return Ok(view);
                }
            }
            None if !warned && start.elapsed() > Duration::from_secs(10) => {
                eprintln!(
                    "warning: the controller at {} has not picked up run {run} after 10s; is a controller running in this namespace?",
                    client.base()
                );
                warned = true;
            }
            None => {}
        }
        tokio::time::sleep(pause).await;
    }
}

/// Prints the outcome; for a failed run, names the failed steps and the tail of their logs.
async fn report_end(client: &Client, view: &RunView) {
    println!("run {} {}", view.run_id, view.status);
    if let Some(err) = &view.error {
        println!("{err}");
    }
    for s in view.steps.iter().filter(|s| s.status == StepStatus::Failed) {
        let why = match (&s.message, s.exit_code) {
            (Some(m), _) => m.clone(),
            (None, Some(code)) => format!("exit code {code}"),
            (None, None) => "no exit code".to_string(),
        };
        println!("step {} failed: {why}", s.name);
        if let Ok(Some(log)) = client
            .log(view.run_id.as_str(), s.name.as_str(), None, 0)
            .await
        {
            let text = String::from_utf8_lossy(&log.bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            println!("--- last {} line(s) of {}'s log ---", tail.len(), s.name);
            for line in tail {
                println!("{line}");
            }
            println!("---");
        }
    }
    let skipped: Vec<&str> = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Skipped)
        .map(|s| s.name.as_str())
        .collect();
    if !skipped.is_empty() {
        println!("skipped: {}", skipped.join(", "));
    }
}

pub async fn wait(g: &Global, args: StatusArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let run_id = client.resolve_run(&args.run).await?.to_string();
    let url = client.run_page(&run_id);
    if !args.json {
        println!("{url}");
    }
    finish(&client, &run_id, &url, args.json).await
}

/// Asks the controller to submit the run's pipeline again, as it was submitted, with the
/// given parameters changed; the new run records which run it came from.
pub async fn rerun(g: &Global, args: RerunArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let of = client.resolve_run(&args.run).await?;
    let request = RerunRequest {
        params: args.params.iter().cloned().collect(),
        submitted_by: submitter(),
    };
    let path = format!("/api/v1/runs/{of}/rerun");
    let Some(accepted) = client
        .post_json::<_, RerunAccepted>(&path, &request)
        .await?
    else {
        anyhow::bail!("no run {of} at {}", client.base());
    };
    let run_id = accepted.run_id.to_string();
    let url = client.run_page(&run_id);
    if !args.json {
        println!("submitted run {run_id} (rerun of {of})");
        println!("{url}");
    }
    if !args.wait {
        if args.json {
            let out = serde_json::json!({"run_id": run_id, "rerun_of": of, "url": url, "params": accepted.params, "status": "submitted", "steps": {}});
            println!("{out}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    finish(&client, &run_id, &url, args.json).await
}

pub async fn abort(g: &Global, args: AbortArgs) -> Result<ExitCode> {
    let run_id = if args.run == crate::client::LATEST {
        Client::new(g)?.resolve_run(&args.run).await?
    } else {
        RunId::new(args.run.as_str())?
    };
    let step = args.step.as_deref().map(StepName::new).transpose()?;
    let queue = QueueName::new(drover_protocol::names::SERVICES_QUEUE)?;
    let msg = Message::Abort(Abort {
        run_id: run_id.clone(),
        step: step.clone(),
        reason: Some("aborted from the command line".into()),
    });
    publish_to_services(g, &queue, msg).await?;
    match step {
        Some(s) => println!("abort of step {s} of run {run_id} requested"),
        None => println!("abort of run {run_id} requested"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_wait_twenty_times_as_long_as_the_last_answer_took() {
        assert_eq!(poll_pause(Duration::from_millis(2)), POLL_EVERY);
        assert_eq!(poll_pause(Duration::from_millis(10)), POLL_EVERY);
        assert_eq!(
            poll_pause(Duration::from_millis(150)),
            Duration::from_secs(3)
        );
        assert_eq!(poll_pause(Duration::from_secs(30)), POLL_AT_MOST);
    }
}
