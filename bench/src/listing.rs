//! Benchmark 8, listing: `GET /api/v1/runs` with many stored runs. The runs are one run of a few
//! cached `true` steps that executes, then identical runs published straight to the services
//! queue, whose steps are all cache hits, so the controller stores `runs` finished runs (each
//! with its step records) without executing their steps.

use crate::cluster::{Cluster, Env};
use anyhow::{Context, Result};
use drover_amqp::{Broker, Target};
use drover_protocol::message::{Message, Submit};
use drover_protocol::spec::PipelineSpec;
use drover_protocol::{Names, RunId};
use drover_test_support::{Check, Deadline, eventually_async};
use std::time::{Duration, Instant};

/// Steps per run: what a summary reads besides the header.
pub const STEPS: usize = 3;
/// Submissions published before their confirms are awaited together.
const WINDOW: usize = 500;

/// The pipeline each stored run has: a few `true` steps, cached.
pub fn pipeline() -> String {
    let mut out = "[pipeline]\nname = \"listing\"\nproject = \"bench\"\n".to_string();
    for i in 0..STEPS {
        out.push_str(&format!(
            "\n[[step]]\nname = \"l{i}\"\ncommand = [\"true\"]\ncache = true\n"
        ));
    }
    out
}

/// Milliseconds per request, each sample one request.
#[derive(Debug, Clone, Default)]
pub struct ListingSamples {
    /// The newest page of 50.
    pub first_page: Vec<f64>,
    /// The page of 50 after the run in the middle (keyset).
    pub middle_page: Vec<f64>,
    /// A status no run has: every header is read, no run returned.
    pub filter_none: Vec<f64>,
}

/// Stores `runs` runs in a fresh `drover up`, then times `reps` requests of each kind.
pub async fn run(env: &Env, runs: usize, reps: usize) -> Result<ListingSamples> {
    let mut c = Cluster::new(env)?;
    let result = measure(&mut c, runs, reps).await;
    c.shutdown().await;
    result
}

async fn measure(c: &mut Cluster, runs: usize, reps: usize) -> Result<ListingSamples> {
    c.start_controller("up", &["up", "--agents", "1", "--python-env", "system"])
        .await?;
    let toml = pipeline();
    let first = c.submit_toml("listing.toml", &toml)?;
    c.wait(&first, Duration::from_millis(100), Duration::from_secs(60))
        .await?;
    let ids = publish(c, &toml, runs.saturating_sub(1)).await?;
    let last = ids.last().cloned().unwrap_or_else(|| first.clone());
    // Submissions are applied in order, so the last one stored means all are.
    let stored = Deadline::new(
        format!("the controller to store {runs} runs"),
        Duration::from_secs(60 + runs as u64 / 50),
    )
    .every(Duration::from_millis(200));
    eventually_async(stored, || async {
        match c.run_exists(last.as_str()).await {
            Ok(true) => Check::Ready(()),
            Ok(false) => Check::NotYet("the last run is not stored yet".to_string()),
            Err(e) => Check::Failed(format!("{e:#}")),
        }
    })
    .await?;
    let middle = ids
        .get(ids.len() / 2)
        .cloned()
        .unwrap_or_else(|| first.clone());
    let mut s = ListingSamples::default();
    for _ in 0..reps {
        s.first_page
            .push(timed(c, "/api/v1/runs?limit=50", 50).await?);
        s.middle_page
            .push(timed(c, &format!("/api/v1/runs?limit=50&after={middle}"), 50).await?);
        s.filter_none
            .push(timed(c, "/api/v1/runs?limit=50&status=aborted", 0).await?);
    }
    Ok(s)
}

/// Publishes `n` submissions of `toml` to the services queue; returns their run ids in order.
pub async fn publish(c: &Cluster, toml: &str, n: usize) -> Result<Vec<String>> {
    let names = Names::new(&c.ns)?;
    let broker = Broker::connect_with_retry(
        &c.amqp_url(),
        names.clone(),
        "bench",
        Duration::from_secs(10),
    )
    .await?;
    let publisher = broker.publisher().await?;
    let spec = PipelineSpec::from_toml(toml)?;
    let services = Target::Submit;
    let mut ids = Vec::with_capacity(n);
    let messages: Vec<Message> = (0..n)
        .map(|_| {
            let run_id = RunId::generate();
            ids.push(run_id.to_string());
            Message::Submit(Submit {
                run_id,
                spec: spec.clone(),
                params: Default::default(),
                submitted_by: Some("bench".into()),
                external: false,
            })
        })
        .collect();
    for chunk in messages.chunks(WINDOW) {
        let sends = chunk.iter().map(|m| publisher.publish(&services, m));
        for result in futures_util::future::join_all(sends).await {
            result.context("publishing a submission")?;
        }
    }
    broker.close().await;
    Ok(ids)
}

/// One request's time in ms; checks the page holds `expect` runs.
async fn timed(c: &Cluster, path: &str, expect: usize) -> Result<f64> {
    let start = Instant::now();
    let doc = c.get(path).await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let got = doc["runs"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(got == expect, "{path}: {got} runs, expected {expect}");
    Ok(ms)
}
