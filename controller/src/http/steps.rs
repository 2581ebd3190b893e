//! A run's steps one at a time: reading one (optionally waiting until it ends) and adding one to
//! a running dynamic run. Agents call these for the steps they run, over the attempt's channel.

use super::views;
use super::{ApiError, App};
use crate::service::{Command, Refused};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use drover_api::{AddStep, StepAdded, StepView};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// The longest `?wait=` accepted, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// The largest add-step request read: a step's spec, function source included (its arguments'
/// values travel as blobs).
pub const MAX_ADD_STEP_BYTES: usize = 8 << 20;

#[derive(Debug, Deserialize)]
pub struct StepQuery {
    wait: Option<String>,
}

/// The step's view; with `?wait=SECS`, answered once the step is terminal or after SECS,
/// whichever comes first (the caller looks at the status).
pub async fn get_step(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    Query(q): Query<StepQuery>,
) -> Result<Json<StepView>, ApiError> {
    let wait = match q.wait.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bad ?wait={text:?}: give whole seconds from 0 to {MAX_WAIT_SECS}"
                ))
            })?,
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    // Subscribed before the first read, so no change between the read and the wait is missed.
    let mut changes = app.store.watch_runs();
    loop {
        let record = app.run(&run)?;
        let view = views::run_view(&record, app.run_url(&record.run_id))
            .steps
            .into_iter()
            .find(|s| s.name.as_str() == step)
            .ok_or_else(|| ApiError::not_found(format!("run {run} has no step {step:?}")))?;
        if view.status.is_terminal() || Instant::now() >= deadline {
            return Ok(Json(view));
        }
        let woke = tokio::select! {
            _ = app.shutdown.cancelled() => false,
            _ = tokio::time::sleep_until(deadline) => false,
            changed = changed(&mut changes, &record.run_id) => changed,
        };
        if !woke {
            return Ok(Json(view));
        }
    }
}

/// Waits for the next write of run `id`; `false` when no more changes can come.
async fn changed(
    changes: &mut broadcast::Receiver<drover_protocol::RunId>,
    id: &drover_protocol::RunId,
) -> bool {
    loop {
        match changes.recv().await {
            Ok(changed) if &changed == id => return true,
            Ok(_) => {}
            // Changes were missed: read again, which is what a change of this run would do.
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// Adds a step to a running dynamic run, for the current attempt of one of its running steps.
pub async fn add_step(
    State(app): State<App>,
    Path(run): Path<String>,
    body: Body,
) -> Result<Json<StepAdded>, ApiError> {
    let record = app.run(&run)?;
    let body = axum::body::to_bytes(body, MAX_ADD_STEP_BYTES)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the add-step request (at most {} MiB): {e}",
                MAX_ADD_STEP_BYTES >> 20
            ))
        })?;
    let request: AddStep = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad add-step request: {e}; send JSON {{caller, attempt, call: {{seq, component, digest}}, step}}"
        ))
    })?;
    if let Some(function) = &request.step.function {
        for (kwarg, blob) in &function.blobs {
            let stored = app
                .blobs
                .stat(&blob.digest)
                .await
                .map_err(ApiError::internal)?;
            if stored.is_none() {
                return Err(ApiError::bad_request(format!(
                    "argument {kwarg} of step {}: blob {} is not stored; upload it first \
                     (PUT /api/v1/blobs/{})",
                    request.step.name, blob.digest, blob.digest
                )));
            }
        }
    }
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::unavailable("the controller is shutting down");
    app.commands
        .send(Command::AddStep {
            run: record.run_id,
            request: Box::new(request),
            reply,
        })
        .await
        .map_err(|_| gone())?;
    match answer.await.map_err(|_| gone())? {
        Ok(added) => Ok(Json(added)),
        Err(Refused::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(Refused::Unavailable(why)) => Err(ApiError::unavailable(why)),
    }
}
