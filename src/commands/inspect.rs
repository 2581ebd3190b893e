//! Read-only commands: runs, status, logs, artifacts, agents, queues.

use crate::cli::{ArtifactsCommand, Global, ListArgs, LogsArgs, RunsArgs, StatusArgs};
use crate::client::Client;
use crate::output::{ago, duration_ms, table};
use crate::sse::EventReader;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use drover_api::SseEvent;
use drover_api::events::{AttemptStarted, LogData, LogEnded, LogNote, StreamError};
use drover_api::{
    AgentList, AgentView, ArtifactList, AttemptOutcome, AttemptView, QueueList, RunList, RunView,
};
use drover_protocol::FileName;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// `-` for a missing value.
fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The document at `path`, as sent (for `--json`) and as the contract's type.
async fn get_doc<T: DeserializeOwned>(client: &Client, path: &str) -> Result<(Value, T)> {
    let doc = client
        .get_json::<Value>(path)
        .await?
        .with_context(|| format!("the controller at {} has no {path}", client.base()))?;
    let typed = serde_json::from_value(doc.clone())
        .with_context(|| format!("unexpected document from {path}"))?;
    Ok((doc, typed))
}

pub async fn runs(g: &Global, args: RunsArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let mut query = format!("/api/v1/runs?limit={}", args.limit);
    for (key, value) in [
        ("status", &args.status),
        ("project", &args.project),
        ("name", &args.name),
    ] {
        if let Some(v) = value {
            query.push_str(&format!("&{key}={}", url_encode(v)));
        }
    }
    let (doc, list): (Value, RunList) = get_doc(&client, &query).await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.to_string(),
                r.name.clone(),
                r.project.clone(),
                r.version.clone(),
                r.status.to_string(),
                ago((r.created_at > 0).then_some(r.created_at)),
                duration_ms(r.started_at, r.ended_at),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "NAME", "PROJECT", "VERSION", "STATUS", "CREATED", "DURATION",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn status(g: &Global, args: StatusArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let run_id = client.resolve_run(&args.run).await?;
    let path = format!("/api/v1/runs/{run_id}");
    let Some(doc) = client.get_json::<Value>(&path).await? else {
        bail!("no run {run_id} at {}", client.base());
    };
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let run: RunView =
        serde_json::from_value(doc).with_context(|| format!("unexpected document from {path}"))?;
    println!(
        "run {}  {} ({} {})  {}",
        run.run_id, run.name, run.project, run.version, run.status
    );
    if let Some(err) = &run.error {
        println!("{err}");
    }
    if let Some(of) = &run.rerun_of {
        println!("rerun of {of}");
    }
    if run.external {
        println!("executed by the process that submitted it, not by agents");
    }
    if let Some(by) = &run.fired_by {
        match (by.kind, by.slot, &by.upstream) {
            (drover_api::FiredByKind::Schedule, Some(slot), _) => {
                println!(
                    "fired by schedule {} (slot {})",
                    by.name,
                    super::automation::utc(slot)
                )
            }
            (drover_api::FiredByKind::Schedule, None, _) => {
                println!("fired by schedule {} (run-now)", by.name)
            }
            (drover_api::FiredByKind::Trigger, _, Some(up)) => {
                println!("fired by trigger {} (after run {up})", by.name)
            }
            (drover_api::FiredByKind::Trigger, _, None) => {
                println!("fired by trigger {}", by.name)
            }
        }
    }
    println!("{}", client.run_page(run_id.as_str()));
    let rows: Vec<Vec<String>> = run
        .steps
        .iter()
        .map(|s| {
            let mut status = s.status.to_string();
            if s.cache_hit {
                status.push_str(" (cache hit)");
            }
            if let Some(reason) = &s.pending_reason {
                status.push_str(&format!(" ({reason})"));
            }
            let agent = or_dash(s.attempts.last().and_then(|a| a.agent.as_ref()));
            vec![
                s.name.to_string(),
                status,
                s.queue.to_string(),
                attempts_cell(&s.attempts),
                start_cell(&s.attempts),
                agent,
                duration_ms(s.started_at, s.ended_at),
            ]
        })
        .collect();
    table(
        &[
            "STEP", "STATUS", "QUEUE", "ATTEMPTS", "START", "AGENT", "DURATION",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// How many attempts a step had, with those that were not its failures set apart:
/// `3 (1 lost, 1 released)`.
fn attempts_cell(attempts: &[AttemptView]) -> String {
    let count = |o: AttemptOutcome| attempts.iter().filter(|a| a.outcome == Some(o)).count();
    let apart: Vec<String> = [AttemptOutcome::Lost, AttemptOutcome::Released]
        .into_iter()
        .map(|o| (count(o), o))
        .filter(|(n, _)| *n > 0)
        .map(|(n, o)| format!("{n} {o}"))
        .collect();
    if apart.is_empty() {
        attempts.len().to_string()
    } else {
        format!("{} ({})", attempts.len(), apart.join(", "))
    }
}

/// How each attempt's Python process started, oldest first: `warm`, or `cold, warm` after a
/// retry; `-` for command steps and attempts that ended before their process started.
fn start_cell(attempts: &[AttemptView]) -> String {
    let starts: Vec<&str> = attempts
        .iter()
        .map(|a| a.start.map_or("-", |k| k.as_str()))
        .collect();
    if starts.iter().all(|s| *s == "-") {
        "-".to_string()
    } else {
        starts.join(", ")
    }
}

pub async fn logs(g: &Global, mut args: LogsArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    args.run = client.resolve_run(&args.run).await?.to_string();
    if args.follow {
        return follow_log(&client, &args).await;
    }
    let Some(log) = client.log(&args.run, &args.step, args.attempt, 0).await? else {
        bail!(
            "no step {} in run {} at {}",
            args.step,
            args.run,
            client.base()
        );
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(&log.bytes)?;
    stdout.flush()?;
    if log.missing() > 0 {
        // Said on stderr: stdout stays the log's raw bytes.
        eprintln!(
            "drover: the last {} bytes of this log have not reached the controller yet; `drover logs -f` waits for them",
            log.missing()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How many times in a row a dropped log stream is reopened.
const FOLLOW_RETRIES: u32 = 30;

/// Prints the log's bytes as the controller's event stream delivers them, until the step ends;
/// resumes where it was (`Last-Event-ID`) when the connection drops.
async fn follow_log(client: &Client, args: &LogsArgs) -> Result<ExitCode> {
    let mut path = format!("/api/v1/runs/{}/steps/{}/log/stream", args.run, args.step);
    if let Some(a) = args.attempt {
        path.push_str(&format!("?attempt={a}"));
    }
    let mut stdout = std::io::stdout();
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    let mut unanswered = None;
    loop {
        let opened = client.events(&path, last_id.as_deref()).await;
        if opened.is_ok() {
            unanswered = None;
        }
        let response = match opened {
            Ok(Some(r)) => r,
            Ok(None) => bail!(
                "no step {} in run {} at {}",
                args.step,
                args.run,
                client.base()
            ),
            Err(e) if crate::controllers::failing_over(&e, &mut unanswered) => {
                tracing::debug!("log stream: {e:#}; waiting for an active controller");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) if failures < FOLLOW_RETRIES && last_id.is_some() => {
                failures += 1;
                tracing::debug!("log stream: {e:#}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut events = EventReader::new(response);
        loop {
            let event = match events.next().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("log stream: {e:#}");
                    break;
                }
            };
            failures = 0;
            match event.name.as_str() {
                LogData::NAME => {
                    let chunk: LogData = serde_json::from_str(&event.data)
                        .with_context(|| format!("bad log event {:?}", event.data))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(&chunk.data)
                        .context("bad base64 in a log event")?;
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                    last_id = event.id.or(last_id);
                }
                AttemptStarted::NAME => {
                    let started: AttemptStarted = serde_json::from_str(&event.data)
                        .with_context(|| format!("bad attempt event {:?}", event.data))?;
                    if started.previous.0 > 0 {
                        eprintln!("drover: attempt {} started", started.attempt);
                    }
                }
                LogNote::NAME => {
                    // Said on stderr: stdout stays the log's raw bytes.
                    if let Ok(note) = serde_json::from_str::<LogNote>(&event.data) {
                        eprintln!("drover: {}", note.text);
                    }
                }
                LogEnded::NAME => {
                    let ended = serde_json::from_str::<LogEnded>(&event.data)
                        .with_context(|| format!("bad end event {:?}", event.data))?;
                    if ended.missing > 0 {
                        eprintln!(
                            "drover: {} bytes of the log of attempt {} did not reach the controller (its agent may have stopped); they are stored if they arrive later: run `drover logs` again then",
                            ended.missing, ended.attempt
                        );
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                StreamError::NAME => {
                    let why = serde_json::from_str::<StreamError>(&event.data)
                        .map_or(event.data, |e| e.error);
                    bail!("the controller cannot stream this log: {why}")
                }
                _ => {}
            }
        }
        failures += 1;
        if failures > FOLLOW_RETRIES {
            bail!("the log stream kept dropping; the step may still be running");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn artifacts(g: &Global, command: ArtifactsCommand) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let (run, step, name, output) = match command {
        ArtifactsCommand::List { run, step, json } => {
            return list_artifacts(&client, &run, step.as_deref(), json).await;
        }
        ArtifactsCommand::Get {
            run,
            step,
            name,
            output,
        } => (client.resolve_run(&run).await?, step, name, output),
    };
    let path = format!("/api/v1/runs/{run}/steps/{step}/artifacts/{name}");
    let Some(resp) = client.download(&path).await? else {
        bail!("no artifact {name:?} for step {step:?} of run {run} (see `drover status {run}`)");
    };
    let target = match output {
        Some(p) => p,
        None => file_name_of(&resp).unwrap_or_else(|| name.clone()).into(),
    };
    let mut stream = resp.bytes_stream();
    if target.as_os_str() == "-" {
        let mut out = tokio::io::stdout();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?).await?;
        }
        out.flush().await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut file = tokio::fs::File::create(&target)
        .await
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    eprintln!("wrote {} ({written} bytes)", target.display());
    Ok(ExitCode::SUCCESS)
}

/// `drover artifacts list`: what `artifacts get` can fetch, one line per artifact.
async fn list_artifacts(
    client: &Client,
    run: &str,
    step: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let run = client.resolve_run(run).await?;
    let mut path = format!("/api/v1/runs/{run}/artifacts");
    if let Some(step) = step {
        path.push_str(&format!("?step={}", url_encode(step)));
    }
    let Some(doc) = client.get_json::<Value>(&path).await? else {
        match step {
            Some(step) => bail!("no run {run} with a step {step:?} at {}", client.base()),
            None => bail!("no run {run} at {}", client.base()),
        }
    };
    if json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let list: ArtifactList =
        serde_json::from_value(doc).with_context(|| format!("unexpected document from {path}"))?;
    let rows: Vec<Vec<String>> = list
        .artifacts
        .iter()
        .map(|a| {
            vec![
                a.step.to_string(),
                a.name.clone(),
                a.file_name.to_string(),
                a.size.to_string(),
                a.digest.to_string(),
            ]
        })
        .collect();
    table(&["STEP", "NAME", "FILE", "SIZE", "DIGEST"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// `text` as one query-string value.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The file name from a `content-disposition: attachment; filename="x"` header, if safe.
fn file_name_of(resp: &reqwest::Response) -> Option<String> {
    let header = resp.headers().get("content-disposition")?.to_str().ok()?;
    let name = header.split("filename=").nth(1)?.trim_matches('"');
    FileName::new(name).ok().map(String::from)
}

pub async fn agents(g: &Global, args: ListArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let (doc, list): (Value, AgentList) = get_doc(&client, "/api/v1/agents").await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .agents
        .iter()
        .map(|a| {
            let queues: Vec<&str> = a.queues.iter().map(|q| q.as_str()).collect();
            let state = if !a.alive {
                "gone"
            } else if a.draining {
                "draining"
            } else {
                "alive"
            };
            vec![
                a.id.to_string(),
                a.host.clone(),
                queues.join(","),
                match a.slots {
                    // 0 slots: services mode, no limit.
                    0 => format!("{}/unlimited", a.busy),
                    slots => format!("{}/{slots}", a.busy),
                },
                resources(a),
                installer(a),
                state.to_string(),
                ago((a.last_seen > 0).then_some(a.last_seen)),
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "HOST",
            "QUEUES",
            "BUSY",
            "MACHINE",
            "INSTALLER",
            "STATE",
            "LAST SEEN",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// What builds the agent's Python environments, in a few words (`uv on PATH`, `pip`); why
/// is in `--json`.
fn installer(agent: &AgentView) -> String {
    match &agent.installer {
        Some(text) => text.split(':').next().unwrap_or(text).to_string(),
        None => "-".to_string(),
    }
}

/// `4 cpu, 15.6 GiB` from an agent's reported machine size.
fn resources(agent: &AgentView) -> String {
    if agent.cpus == 0 && agent.memory_mib == 0 {
        return "-".to_string();
    }
    format!(
        "{} cpu, {:.1} GiB",
        agent.cpus,
        agent.memory_mib as f64 / 1024.0
    )
}

pub async fn queues(g: &Global, args: ListArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let (doc, list): (Value, QueueList) = get_doc(&client, "/api/v1/queues").await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .queues
        .iter()
        .map(|q| {
            vec![
                q.name.to_string(),
                q.messages.to_string(),
                q.consumers.to_string(),
                q.waiting_steps.to_string(),
            ]
        })
        .collect();
    table(&["QUEUE", "READY", "CONSUMERS", "WAITING STEPS"], &rows);
    println!("dead letters: {}", list.dead_letters);
    for w in list.queues.iter().filter_map(|q| q.warning.as_ref()) {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::AttemptNo;

    fn ended(n: u32, outcome: AttemptOutcome) -> AttemptView {
        AttemptView {
            attempt: AttemptNo(n),
            agent: None,
            queued_at: 0,
            started_at: None,
            ended_at: None,
            exit_code: None,
            outcome: Some(outcome),
            message: None,
            start: None,
            log_archive: None,
        }
    }

    #[test]
    fn attempts_set_lost_and_released_ones_apart_from_failures() {
        use AttemptOutcome::*;
        assert_eq!(attempts_cell(&[]), "0");
        assert_eq!(attempts_cell(&[ended(1, Failed), ended(2, Succeeded)]), "2");
        let tries = [ended(1, Lost), ended(2, Failed), ended(3, Succeeded)];
        assert_eq!(attempts_cell(&tries), "3 (1 lost)");
        let tries = [ended(1, Lost), ended(2, Released), ended(3, Lost)];
        assert_eq!(attempts_cell(&tries), "3 (2 lost, 1 released)");
    }

    #[test]
    fn the_start_column_names_each_attempts_start() {
        use drover_protocol::message::StartKind::{Cold, Warm};
        let started = |n, start| AttemptView {
            start,
            ..ended(n, AttemptOutcome::Failed)
        };
        assert_eq!(start_cell(&[]), "-");
        assert_eq!(start_cell(&[started(1, None)]), "-");
        assert_eq!(start_cell(&[started(1, Some(Warm))]), "warm");
        let tries = [
            started(1, None),
            started(2, Some(Cold)),
            started(3, Some(Warm)),
        ];
        assert_eq!(start_cell(&tries), "-, cold, warm");
    }
}
