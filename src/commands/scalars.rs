//! `drover scalars`: the scalars a run's steps reported, as the last value and count of each
//! series, or the stored points as JSON.

use crate::cli::Global;
use crate::cli::ScalarsArgs;
use crate::client::Client;
use crate::output::table;
use anyhow::{Context, Result};
use drover_api::ScalarList;
use serde_json::Value;
use std::process::ExitCode;

pub async fn scalars(g: &Global, args: ScalarsArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let run = client.resolve_run(&args.run).await?;
    let mut path = format!("/api/v1/runs/{run}/scalars");
    if let Some(step) = &args.step {
        path.push_str(&format!("?step={step}"));
    }
    let what = match &args.step {
        Some(step) => format!("run {run} or its step {step:?}"),
        None => format!("run {run}"),
    };
    let doc = client
        .get_json::<Value>(&path)
        .await?
        .with_context(|| format!("the controller at {} has no {what}", client.base()))?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let list: ScalarList =
        serde_json::from_value(doc).with_context(|| format!("unexpected document from {path}"))?;
    if list.series.is_empty() {
        eprintln!("no scalars reported in {what}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .series
        .iter()
        .map(|s| {
            let sampled = if s.stride > 1 {
                format!(" (every {})", s.stride)
            } else {
                String::new()
            };
            vec![
                s.step.to_string(),
                s.title.clone(),
                s.series.clone(),
                format!("{}{sampled}", s.count),
                s.last.0.to_string(),
                s.last.1.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "STEP",
            "TITLE",
            "SERIES",
            "POINTS",
            "LAST ITERATION",
            "LAST VALUE",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
