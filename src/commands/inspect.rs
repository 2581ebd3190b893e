//! Read-only commands: runs, status, logs, artifacts, agents, queues.

use crate::cli::{ArtifactsCommand, Global, ListArgs, LogsArgs, StatusArgs};
use crate::client::Client;
use crate::output::{ago, duration_ms, table};
use crate::sse::EventReader;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn str_field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    }
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

async fn get_doc(client: &Client, path: &str) -> Result<Value> {
    client
        .get_json::<Value>(path)
        .await?
        .with_context(|| format!("the controller at {} has no {path}", client.base()))
}

pub async fn runs(g: &Global, args: ListArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let doc = get_doc(&client, "/api/v1/runs").await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list(&doc, "runs")
        .iter()
        .map(|r| {
            vec![
                str_field(r, "run_id"),
                str_field(r, "name"),
                str_field(r, "project"),
                str_field(r, "version"),
                str_field(r, "status"),
                ago(r.get("created_at").and_then(Value::as_u64)),
                duration_ms(
                    r.get("started_at").and_then(Value::as_u64),
                    r.get("ended_at").and_then(Value::as_u64),
                ),
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
    let Some(doc) = client
        .get_json::<Value>(&format!("/api/v1/runs/{}", args.run))
        .await?
    else {
        bail!("no run {} at {}", args.run, client.base());
    };
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "run {}  {} ({} {})  {}",
        str_field(&doc, "run_id"),
        str_field(&doc, "name"),
        str_field(&doc, "project"),
        str_field(&doc, "version"),
        str_field(&doc, "status")
    );
    if let Some(err) = doc.get("error").and_then(Value::as_str) {
        println!("{err}");
    }
    println!("{}", client.run_page(&args.run));
    let rows: Vec<Vec<String>> = list(&doc, "steps")
        .iter()
        .map(|s| {
            let mut status = str_field(s, "status");
            if s.get("cache_hit").and_then(Value::as_bool) == Some(true) {
                status.push_str(" (cache hit)");
            }
            let agent = list(s, "attempts")
                .last()
                .map(|a| str_field(a, "agent"))
                .unwrap_or_else(|| "-".into());
            vec![
                str_field(s, "name"),
                status,
                str_field(s, "queue"),
                str_field(s, "attempt"),
                agent,
                duration_ms(
                    s.get("started_at").and_then(Value::as_u64),
                    s.get("ended_at").and_then(Value::as_u64),
                ),
            ]
        })
        .collect();
    table(
        &["STEP", "STATUS", "QUEUE", "ATTEMPT", "AGENT", "DURATION"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(g: &Global, args: LogsArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    if args.follow {
        return follow_log(&client, &args).await;
    }
    let Some((bytes, _size)) = client.log(&args.run, &args.step, args.attempt, 0).await? else {
        bail!(
            "no step {} in run {} at {}",
            args.step,
            args.run,
            client.base()
        );
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(&bytes)?;
    stdout.flush()?;
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
    loop {
        let opened = client.events(&path, last_id.as_deref()).await;
        let response = match opened {
            Ok(Some(r)) => r,
            Ok(None) => bail!(
                "no step {} in run {} at {}",
                args.step,
                args.run,
                client.base()
            ),
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
                "log" => {
                    let chunk: Value = serde_json::from_str(&event.data)
                        .with_context(|| format!("bad log event {:?}", event.data))?;
                    let data = chunk["data"].as_str().unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .context("bad base64 in a log event")?;
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                    last_id = event.id.or(last_id);
                }
                "attempt" => {
                    let chunk: Value = serde_json::from_str(&event.data).unwrap_or_default();
                    if chunk["previous"].as_u64().unwrap_or(0) > 0 {
                        eprintln!("drover: attempt {} started", chunk["attempt"]);
                    }
                }
                "end" => return Ok(ExitCode::SUCCESS),
                "error" => bail!("the controller cannot stream this log: {}", event.data),
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
    let ArtifactsCommand::Get {
        run,
        step,
        name,
        output,
    } = command;
    let client = Client::new(g)?;
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

/// The file name from a `content-disposition: attachment; filename="x"` header, if safe.
fn file_name_of(resp: &reqwest::Response) -> Option<String> {
    let header = resp.headers().get("content-disposition")?.to_str().ok()?;
    let name = header.split("filename=").nth(1)?.trim_matches('"');
    let safe = !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != "..";
    safe.then(|| name.to_string())
}

pub async fn agents(g: &Global, args: ListArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let doc = get_doc(&client, "/api/v1/agents").await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list(&doc, "agents")
        .iter()
        .map(|a| {
            let queues: Vec<String> = list(a, "queues")
                .iter()
                .filter_map(|q| q.as_str().map(String::from))
                .collect();
            let state = if a.get("alive").and_then(Value::as_bool) == Some(false) {
                "gone"
            } else if a.get("draining").and_then(Value::as_bool) == Some(true) {
                "draining"
            } else {
                "alive"
            };
            vec![
                str_field(a, "id"),
                str_field(a, "host"),
                queues.join(","),
                match a.get("slots").and_then(Value::as_u64) {
                    // 0 slots: services mode, no limit.
                    Some(0) => format!("{}/unlimited", str_field(a, "busy")),
                    _ => format!("{}/{}", str_field(a, "busy"), str_field(a, "slots")),
                },
                resources(a),
                state.to_string(),
                ago(a.get("last_seen").and_then(Value::as_u64)),
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
            "STATE",
            "LAST SEEN",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `4 cpu, 15.6 GiB` from an agent's reported machine size.
fn resources(agent: &Value) -> String {
    let cpus = agent.get("cpus").and_then(Value::as_u64).unwrap_or(0);
    let mib = agent.get("memory_mib").and_then(Value::as_u64).unwrap_or(0);
    if cpus == 0 && mib == 0 {
        return "-".to_string();
    }
    format!("{cpus} cpu, {:.1} GiB", mib as f64 / 1024.0)
}

pub async fn queues(g: &Global, args: ListArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let doc = get_doc(&client, "/api/v1/queues").await?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let queues = list(&doc, "queues");
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                str_field(q, "name"),
                str_field(q, "messages"),
                str_field(q, "consumers"),
                str_field(q, "waiting_steps"),
            ]
        })
        .collect();
    table(&["QUEUE", "READY", "CONSUMERS", "WAITING STEPS"], &rows);
    println!("dead letters: {}", str_field(&doc, "dead_letters"));
    for q in queues {
        if let Some(w) = q.get("warning").and_then(Value::as_str) {
            println!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
