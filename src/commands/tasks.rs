//! `drover tasks`: the tasks registered with the controller (scripts that called `Task.init`).

use crate::cli::{Global, TasksArgs};
use crate::client::Client;
use crate::output::{ago, table};
use anyhow::{Context, Result};
use drover_api::TaskList;
use serde_json::Value;
use std::process::ExitCode;

pub async fn tasks(g: &Global, args: TasksArgs) -> Result<ExitCode> {
    let client = Client::new(g)?;
    let mut path = "/api/v1/tasks".to_string();
    if let Some(project) = &args.project {
        path.push_str(&format!("?project={}", urlencoding(project)));
    }
    let doc = client
        .get_json::<Value>(&path)
        .await?
        .with_context(|| format!("the controller at {} has no {path}", client.base()))?;
    if args.json {
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    let list: TaskList =
        serde_json::from_value(doc).with_context(|| format!("unexpected document from {path}"))?;
    let rows: Vec<Vec<String>> = list
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.project.clone(),
                t.name.clone(),
                t.task_type.clone(),
                t.parameters.len().to_string(),
                ago(Some(t.updated_at)),
            ]
        })
        .collect();
    table(
        &["TASK", "PROJECT", "NAME", "TYPE", "PARAMETERS", "UPDATED"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `text` as a query value: unreserved characters kept, everything else percent-encoded.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
