//! Benchmark 10, log latency: a step prints lines that carry the time they were printed, and two
//! followers stamp each line as it reaches them: `drover logs -f` (its standard output, read
//! line by line) and the log's event stream that the web UI's run page reads
//! (`GET .../log/stream`). Everything runs on one host, so one clock serves both ends.

use crate::cluster::{Cluster, Env};
use crate::stats;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::StreamExt;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the step prints.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub lines: usize,
    pub every: Duration,
}

/// p50 and p99 of one followed step, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

/// Per repetition, for each follower.
#[derive(Debug, Clone, Default)]
pub struct LogSamples {
    pub cli: Vec<Latency>,
    pub stream: Vec<Latency>,
}

/// The step: waits a second (so both followers are attached), then prints `lines` lines of
/// `<ns since the epoch> <padding>`, flushing each, `every` apart.
const TALK: &str = r#"import sys, time
lines, every = int(sys.argv[1]), float(sys.argv[2])
time.sleep(1.0)
for i in range(lines):
    print(time.time_ns(), "x" * 60, flush=True)
    time.sleep(every)
"#;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The latency of one received line, from its stamp.
fn latency_ms(line: &str, arrived: i128) -> Option<f64> {
    let printed: i128 = line.split_whitespace().next()?.parse().ok()?;
    Some((arrived - printed) as f64 / 1e6)
}

fn summary(what: &str, mut ms: Vec<f64>, expected: usize) -> Result<Latency> {
    if ms.len() != expected {
        bail!(
            "{what} received {} of the {expected} lines the step printed",
            ms.len()
        );
    }
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        p50: stats::percentile(&ms, 50.0),
        p99: stats::percentile(&ms, 99.0),
    })
}

/// `reps` steps printing at `pace`, each followed both ways.
pub async fn run(env: &Env, reps: usize, pace: Pace) -> Result<LogSamples> {
    let mut c = Cluster::new(env)?;
    let result = runs(&mut c, env, reps, pace).await;
    c.shutdown().await;
    result
}

async fn runs(c: &mut Cluster, env: &Env, reps: usize, pace: Pace) -> Result<LogSamples> {
    c.start_controller("up", &["up", "--agents", "1", "--python-env", "system"])
        .await?;
    let script = c.path().join("talk.py");
    std::fs::write(&script, TALK)?;
    let mut s = LogSamples::default();
    for rep in 0..reps {
        let toml = pipeline(&env.python, &script, pace);
        let run = c.submit_toml(&format!("talk-{rep}.toml"), &toml)?;
        let cli = follow_cli(c, &run)?;
        let stream = follow_stream(c, &run);
        let timeout = Duration::from_secs(60) + pace.every * pace.lines as u32;
        let (streamed, waited) = tokio::join!(
            tokio::time::timeout(timeout, stream),
            c.wait(&run, Duration::from_millis(200), timeout)
        );
        waited?;
        let streamed = streamed.context("the event stream did not end with the step")??;
        let printed = tokio::task::spawn_blocking(move || cli.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the drover logs -f reader panicked"))??;
        s.cli.push(summary("drover logs -f", printed, pace.lines)?);
        s.stream
            .push(summary("the log's event stream", streamed, pace.lines)?);
    }
    Ok(s)
}

fn pipeline(python: &str, script: &Path, pace: Pace) -> String {
    format!(
        "[pipeline]\nname = \"log-latency\"\nproject = \"bench\"\n\n[[step]]\nname = \"talk\"\ncommand = [{:?}, {:?}, \"{}\", \"{}\"]\n",
        python,
        script.display().to_string(),
        pace.lines,
        pace.every.as_secs_f64()
    )
}

type Reader = std::thread::JoinHandle<Result<Vec<f64>>>;

/// Starts `drover logs RUN talk -f`; its reader thread returns each line's latency once the
/// command exits (at the step's end).
fn follow_cli(c: &Cluster, run: &str) -> Result<Reader> {
    let mut child = c
        .command()
        .args(["logs", run, "talk", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start drover logs -f")?;
    let stdout = child.stdout.take().context("no stdout")?;
    Ok(std::thread::spawn(move || {
        let mut ms = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let arrived = now_ns();
            ms.extend(latency_ms(&line, arrived));
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("drover logs -f exited with {status}");
        }
        Ok(ms)
    }))
}

/// Reads the step's log event stream until its `end` event; each line's latency.
async fn follow_stream(c: &Cluster, run: &str) -> Result<Vec<f64>> {
    let url = format!("{}/api/v1/runs/{run}/steps/talk/log/stream", c.url);
    let resp = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut body = resp.bytes_stream();
    let (mut text, mut log) = (String::new(), Vec::<u8>::new());
    let mut ms = Vec::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk?));
        let arrived = now_ns();
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let name = event.lines().find_map(|l| l.strip_prefix("event:"));
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            match name.map(str::trim) {
                Some("log") => {
                    let v: serde_json::Value = serde_json::from_str(&data)?;
                    let b64 = v["data"].as_str().context("a log event without data")?;
                    log.extend(base64::engine::general_purpose::STANDARD.decode(b64)?);
                    while let Some(nl) = log.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = log.drain(..=nl).collect();
                        ms.extend(latency_ms(&String::from_utf8_lossy(&line), arrived));
                    }
                }
                Some("end") => return Ok(ms),
                _ => {}
            }
        }
    }
    bail!("the event stream {url} closed before its end event")
}
