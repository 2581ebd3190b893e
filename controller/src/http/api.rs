//! JSON endpoints: runs, abort, agents, queues, health and metrics (one step: [`super::steps`]).

use super::views;
use super::{ApiError, App};
use crate::scheduler::{Event, StepStatus};
use crate::service::Command;
use crate::store::RunQuery;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use drover_api::RunStatus;
use drover_api::{AbortAccepted, AgentList, Health, QueueList, QueueView, RunList};
use drover_protocol::message::{Abort, now_ms};
use drover_protocol::names::services_queue;
use drover_protocol::{QueueName, RunId, StepName};
use serde::Deserialize;
use std::collections::BTreeMap;

pub async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let connected = app.broker.is_connected();
    let status = if connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Health::of(connected)))
}

pub async fn metrics(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let runs = app.store.runs()?;
    let agents = app.store.agents()?;
    // A broker that cannot answer leaves the gauge out rather than failing the scrape.
    let dead = match app.broker.queue_stats(&app.names.dead()).await {
        Ok(stats) => Some(stats.map_or(0, |s| s.messages)),
        Err(e) => {
            tracing::debug!("metrics: cannot read the dead-letter queue: {e}");
            None
        }
    };
    app.metrics.set_amqp_reconnects(app.broker.reconnects());
    let mut text = app.metrics.render(&runs);
    text.push_str(&super::scrape::render(&runs, &agents, dead, now_ms()));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// Largest page `GET /api/v1/runs` answers, and its size when `?limit=` is not given.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub struct RunFilter {
    status: Option<String>,
    project: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /api/v1/runs`: a page of runs, newest first, from the creation-time index; reads the
/// headers it walks past and the steps of the runs it returns, nothing else.
pub async fn list_runs(
    State(app): State<App>,
    Query(filter): Query<RunFilter>,
) -> Result<impl IntoResponse, ApiError> {
    let status = match filter.status.as_deref() {
        None => None,
        Some(s) => Some(
            RunStatus::ALL
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| {
                    let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::bad_request(format!(
                        "unknown ?status={s:?}; one of {}",
                        known.join(", ")
                    ))
                })?,
        ),
    };
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "?limit={limit}: a page holds 1 to {MAX_PAGE} runs"
        )));
    }
    let after = match filter.after.as_deref() {
        None => None,
        Some(a) => Some(
            RunId::new(a)
                .map_err(|e| ApiError::bad_request(format!("?after={a:?} is not a run id: {e}")))?,
        ),
    };
    let query = RunQuery {
        status,
        project: filter.project,
        name: filter.name,
    };
    let page = app
        .store
        .runs_page(&query, after.as_ref(), limit)?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "?after={}: no such run; pass the `next` of the previous page",
                filter.after.unwrap_or_default()
            ))
        })?;
    let runs = page
        .runs
        .iter()
        .map(|r| views::summary(r, app.run_url(&r.run_id)))
        .collect();
    Ok(Json(RunList {
        runs,
        next: page.next,
    }))
}

pub async fn get_run(
    State(app): State<App>,
    Path(run): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let run = app.run(&run)?;
    Ok(Json(app.run_view(&run)))
}

/// The controller's own account of the run, as plain text.
pub async fn console(
    State(app): State<App>,
    Path(run): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let mut text = super::console::lines(&record).join("\n");
    text.push('\n');
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

#[derive(Debug, Deserialize)]
pub struct AbortQuery {
    step: Option<String>,
    reason: Option<String>,
}

pub async fn abort_run(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<AbortQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let step = match q.step {
        Some(s) => {
            let name = StepName::new(s.as_str())
                .ok()
                .filter(|n| record.step(n).is_some())
                .ok_or_else(|| ApiError::not_found(format!("run {run} has no step {s:?}")))?;
            Some(name)
        }
        None => None,
    };
    let abort = Abort {
        run_id: record.run_id.clone(),
        step: step.clone(),
        reason: Some(
            q.reason
                .unwrap_or_else(|| "aborted through the HTTP API".into()),
        ),
    };
    app.commands
        .send(Command::Local(Event::Abort(abort)))
        .await
        .map_err(|_| ApiError::unavailable("the controller is shutting down"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AbortAccepted {
            run_id: record.run_id,
            step,
        }),
    ))
}

pub async fn agents(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let now = now_ms();
    let mut running = views::running_by_agent(&app.store.runs()?);
    let agents = app
        .store
        .agents()?
        .iter()
        .filter_map(|a| {
            let steps = running.remove(a.info.id.as_str()).unwrap_or_default();
            // An agent still named by a running step stays, however long it has been silent.
            (!steps.is_empty() || !views::forgotten(a, now))
                .then(|| views::agent_view(a, now, steps))
        })
        .collect();
    Ok(Json(AgentList { agents }))
}

#[derive(Debug, Deserialize)]
pub struct QueuesQuery {
    /// A queue to list even when no step has used it yet, so an autoscaler's query for it
    /// always finds a number (0) rather than nothing.
    queue: Option<String>,
}

pub async fn queues(
    State(app): State<App>,
    Query(q): Query<QueuesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    // queue -> (waiting, running)
    let mut steps: BTreeMap<QueueName, (usize, usize)> =
        BTreeMap::from([(services_queue(), (0, 0))]);
    if let Some(name) = q.queue {
        let queue = QueueName::new(name.as_str())
            .map_err(|e| ApiError::bad_request(format!("bad ?queue={name:?}: {e}")))?;
        steps.insert(queue, (0, 0));
    }
    for run in app.store.runs()? {
        for step in &run.steps {
            let n = steps.entry(step.queue.clone()).or_default();
            if !run.status.is_terminal() && step.status == StepStatus::Queued {
                n.0 += 1;
            }
            if !run.status.is_terminal() && step.status == StepStatus::Running {
                n.1 += 1;
            }
        }
    }
    let agents = app.store.agents()?;
    let now = now_ms();
    let mut queues = Vec::new();
    for (queue, (waiting_steps, running_steps)) in steps {
        let broker_queue = app.names.user_queue(&queue);
        let stats = app.broker.queue_stats(&broker_queue).await.map_err(|e| {
            ApiError::unavailable(format!(
                "cannot read queue {broker_queue} from the broker: {e}"
            ))
        })?;
        let (messages, consumers) = stats.map_or((0, 0), |s| (s.messages, s.consumers));
        let served = agents.iter().any(|a| a.serves(&queue, now));
        let warning = (waiting_steps > 0 && consumers == 0 && !served).then(|| {
            format!(
                "{waiting_steps} step(s) wait on queue \"{queue}\" but no agent consumes it; start one with `{}`",
                crate::service::agent_command(&queue)
            )
        });
        queues.push(QueueView {
            name: queue,
            broker_queue,
            exists: stats.is_some(),
            messages,
            consumers,
            waiting_steps,
            running_steps,
            active_steps: waiting_steps + running_steps,
            warning,
        });
    }
    let dead = app
        .broker
        .queue_stats(&app.names.dead())
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the dead-letter queue: {e}")))?;
    Ok(Json(QueueList {
        queues,
        dead_letters: dead.map_or(0, |s| s.messages),
        dead_lettered_by_controller: app.metrics.dead_letters(),
    }))
}
