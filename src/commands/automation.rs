//! `drover schedule ...` and `drover trigger ...`: the controller keeps schedules and
//! triggers; these commands ask it to change them and show them.

use crate::cli::{Global, ListArgs, PipelineFrom, ScheduleCommand, TriggerCommand};
use crate::client::Client;
use crate::output::{ago, human_ms, table};
use anyhow::{Context, Result};
use drover_api::{
    AddSchedule, AddTrigger, Firing, PipelineSource, ScheduleList, ScheduleView, TriggerList,
    TriggerOn, TriggerView,
};
use drover_protocol::message::now_ms;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::process::ExitCode;

pub async fn schedule(g: &Global, command: ScheduleCommand) -> Result<ExitCode> {
    let client = Client::new(g)?;
    match command {
        ScheduleCommand::Add(args) => {
            let add = AddSchedule {
                name: args.name,
                cron: args.cron,
                timezone: args.timezone,
                overlap: args.overlap,
                source: source(&client, &args.from, args.params).await?,
            };
            let view: ScheduleView = post(&client, "/api/v1/schedules", &add).await?;
            if args.json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                println!(
                    "schedule {} added: {}/{} on \"{}\" ({}), next {}",
                    view.name,
                    view.project,
                    view.pipeline,
                    view.cron,
                    view.timezone,
                    until(view.next_slot)
                );
            }
        }
        ScheduleCommand::List(ListArgs { json }) => {
            let list: ScheduleList = get(&client, "/api/v1/schedules").await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                print_schedules(&list.schedules);
            }
        }
        ScheduleCommand::Remove { name } => {
            let view: ScheduleView = change(&client, "schedules", &name, "remove").await?;
            println!("schedule {} removed", view.name);
        }
        ScheduleCommand::Pause { name } => {
            let view: ScheduleView = change(&client, "schedules", &name, "pause").await?;
            println!("schedule {} paused", view.name);
        }
        ScheduleCommand::Resume { name } => {
            let view: ScheduleView = change(&client, "schedules", &name, "resume").await?;
            println!(
                "schedule {} resumed, next {}",
                view.name,
                until(view.next_slot)
            );
        }
        ScheduleCommand::RunNow { name, json } => {
            let firing: Firing = change(&client, "schedules", &name, "run-now").await?;
            let url = client.run_page(firing.run_id.as_str());
            if json {
                let out =
                    serde_json::json!({"run_id": firing.run_id, "url": url, "schedule": name});
                println!("{out}");
            } else {
                println!("submitted run {} (schedule {name})", firing.run_id);
                println!("{url}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn trigger(g: &Global, command: TriggerCommand) -> Result<ExitCode> {
    let client = Client::new(g)?;
    match command {
        TriggerCommand::Add(args) => {
            let (on, upstream) = match (args.on_success, args.on_failure) {
                (Some(p), _) => (TriggerOn::Success, p),
                (None, Some(p)) => (TriggerOn::Failure, p),
                (None, None) => anyhow::bail!("give --on-success or --on-failure"),
            };
            let add = AddTrigger {
                name: args.name,
                on,
                upstream,
                param_name: Some(args.param_name),
                source: source(&client, &args.from, args.params).await?,
            };
            let view: TriggerView = post(&client, "/api/v1/triggers", &add).await?;
            if args.json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                println!(
                    "trigger {} added: each run of {} that ends in {} starts {} with {}=RUN",
                    view.name,
                    view.upstream,
                    view.on.as_str(),
                    view.downstream,
                    view.param_name
                );
            }
        }
        TriggerCommand::List(ListArgs { json }) => {
            let list: TriggerList = get(&client, "/api/v1/triggers").await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                print_triggers(&list.triggers);
            }
        }
        TriggerCommand::Remove { name } => {
            let view: TriggerView = change(&client, "triggers", &name, "remove").await?;
            println!("trigger {} removed", view.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The pipeline source of `add`: the file's text, or the run (`latest` resolved here).
async fn source(
    client: &Client,
    from: &PipelineFrom,
    params: Vec<(String, String)>,
) -> Result<PipelineSource> {
    let params = params.into_iter().collect();
    Ok(match (&from.file, &from.from_run) {
        (Some(file), _) => PipelineSource {
            from_run: None,
            pipeline: Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            ),
            params,
        },
        (None, Some(run)) => PipelineSource {
            from_run: Some(client.resolve_run(run).await?),
            pipeline: None,
            params,
        },
        (None, None) => anyhow::bail!("give a pipeline FILE or --from RUN"),
    })
}

async fn get<T: DeserializeOwned>(client: &Client, path: &str) -> Result<T> {
    client.get_json(path).await?.with_context(|| {
        format!(
            "the controller at {} has no {path}; is it older than this drover?",
            client.base()
        )
    })
}

async fn post<B: Serialize, T: DeserializeOwned>(
    client: &Client,
    path: &str,
    body: &B,
) -> Result<T> {
    client
        .post_json(path, body)
        .await?
        .with_context(|| format!("the controller at {} has no {path}", client.base()))
}

/// `POST /api/v1/{kind}/{name}/{what}`; a 404 names the missing schedule or trigger.
async fn change<T: DeserializeOwned>(
    client: &Client,
    kind: &str,
    name: &str,
    what: &str,
) -> Result<T> {
    let path = format!("/api/v1/{kind}/{name}/{what}");
    client
        .post_json(&path, &serde_json::json!({}))
        .await?
        .with_context(|| {
            format!(
                "no {} named {name:?} at {} (see `drover {} list`)",
                kind.trim_end_matches('s'),
                client.base(),
                kind.trim_end_matches('s')
            )
        })
}

/// `in 4.0s`, `in 6h14m (2026-12-02T01:00:00Z)`, `now` when due, `-` when none.
fn until(slot: Option<u64>) -> String {
    let Some(t) = slot else {
        return "-".to_string();
    };
    let now = now_ms();
    if t <= now {
        return "now".to_string();
    }
    let wait = t - now;
    if wait < 3_600_000 {
        format!("in {}", human_ms(wait))
    } else {
        format!(
            "in {}h{:02}m ({})",
            wait / 3_600_000,
            (wait / 60_000) % 60,
            utc(t)
        )
    }
}

/// A time as RFC 3339 in UTC, to the second.
pub fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn print_schedules(schedules: &[ScheduleView]) {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                format!("{}/{}", s.project, s.pipeline),
                if s.paused { "paused" } else { "active" }.to_string(),
                s.last_fired.as_ref().map_or("-".to_string(), |f| {
                    format!("{} {}", ago(Some(f.at)), f.run_id)
                }),
                until(s.next_slot),
                s.last_skipped.as_ref().map_or("-".to_string(), |k| {
                    format!("{} ({}, {})", s.skipped, ago(Some(k.at)), k.reason)
                }),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "CRON",
            "TZ",
            "PIPELINE",
            "STATE",
            "LAST FIRED",
            "NEXT",
            "SKIPPED",
        ],
        &rows,
    );
}

fn print_triggers(triggers: &[TriggerView]) {
    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                format!("{} {}", t.on.as_str(), t.upstream),
                t.downstream.clone(),
                t.param_name.clone(),
                t.fired.to_string(),
                t.last_fired.as_ref().map_or("-".to_string(), |f| {
                    format!("{} {}", ago(Some(f.at)), f.run_id)
                }),
            ]
        })
        .collect();
    table(
        &["NAME", "ON", "STARTS", "PARAM", "FIRED", "LAST FIRED"],
        &rows,
    );
}
