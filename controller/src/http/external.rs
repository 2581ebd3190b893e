//! Runs executed by their submitter: the process that runs an `external` run's steps reports
//! each attempt (taken, alive, ended) and appends its output to the attempt's log, as an agent
//! would over the broker; and the answers to step callbacks from the process running a
//! pipeline's logic. Reports and answers go to the owning task as requests; logs go to the log
//! store.

use super::{ApiError, App};
use crate::service::{Command, Refused};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use drover_api::{
    CallbackAnswer, CallbackAnswered, LogAppended, StepReport, StepReported, StepStatus,
};
use drover_protocol::message::LogChunk;
use drover_protocol::{AttemptNo, StepName};
use serde::Deserialize;
use tokio::sync::oneshot;

/// The largest report read (a finished attempt's outputs are a few lines each).
const MAX_REPORT_BYTES: usize = 1 << 20;
/// The largest log chunk taken in one request.
pub const MAX_LOG_CHUNK_BYTES: usize = 4 << 20;

/// Applies a report about one step of an external run; answers where the step stands.
pub async fn report(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    body: Body,
) -> Result<Json<StepReported>, ApiError> {
    let record = app.run(&run)?;
    let step = step_name(&step)?;
    let body = axum::body::to_bytes(body, MAX_REPORT_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the step report: {e}")))?;
    let report: StepReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad step report: {e}; send JSON {{runner, report: {{kind: started | alive | finished, ...}}}}"
        ))
    })?;
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::unavailable("the controller is shutting down");
    app.commands
        .send(Command::Report {
            run: record.run_id,
            step,
            report: Box::new(report),
            reply,
        })
        .await
        .map_err(|_| gone())?;
    match answer.await.map_err(|_| gone())? {
        Ok(reported) => Ok(Json(reported)),
        Err(Refused::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(Refused::Unavailable(why)) => Err(ApiError::unavailable(why)),
    }
}

/// Answers the callback of a step waiting for it (`await_callback`): run it or skip it.
pub async fn answer_callback(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    body: Body,
) -> Result<Json<CallbackAnswered>, ApiError> {
    let record = app.run(&run)?;
    let step = step_name(&step)?;
    let body = axum::body::to_bytes(body, MAX_REPORT_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the callback's answer: {e}")))?;
    let answer: CallbackAnswer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad callback answer: {e}; send JSON {{\"proceed\": true | false}}"
        ))
    })?;
    let (reply, answered) = oneshot::channel();
    let gone = || ApiError::unavailable("the controller is shutting down");
    app.commands
        .send(Command::Callback {
            run: record.run_id.clone(),
            step: step.clone(),
            proceed: answer.proceed,
            reply,
        })
        .await
        .map_err(|_| gone())?;
    match answered.await.map_err(|_| gone())? {
        Ok(status) => Ok(Json(CallbackAnswered {
            run_id: record.run_id,
            step,
            status,
        })),
        Err(Refused::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(Refused::Unavailable(why)) => Err(ApiError::unavailable(why)),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    attempt: u32,
    offset: u64,
}

/// Appends output of a running attempt of an external run to its log, from `offset` (bytes
/// before the log's end are skipped, so a chunk sent again is harmless).
pub async fn append_log(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
    body: Body,
) -> Result<Json<LogAppended>, ApiError> {
    let record = app.run(&run)?;
    let step = step_name(&step)?;
    if !record.external {
        return Err(ApiError::bad_request(format!(
            "run {run} is run by agents: its logs come from them"
        )));
    }
    let current = record
        .step(&step)
        .ok_or_else(|| ApiError::not_found(format!("run {run} has no step {step}")))?;
    let attempt = AttemptNo(q.attempt);
    if current.attempt != attempt || current.status != StepStatus::Running {
        return Err(ApiError::bad_request(format!(
            "attempt {attempt} of step {step} is not running: the step is {} (attempt {})",
            current.status.as_str(),
            current.attempt
        )));
    }
    let data = axum::body::to_bytes(body, MAX_LOG_CHUNK_BYTES)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the log chunk (at most {} MiB): {e}",
                MAX_LOG_CHUNK_BYTES >> 20
            ))
        })?;
    let chunk = LogChunk {
        run_id: record.run_id.clone(),
        step,
        attempt,
        offset: q.offset,
        data: data.to_vec(),
    };
    let (size, _) = app
        .logs
        .open_from(&chunk.run_id, &chunk.step, attempt, u64::MAX)
        .await
        .map_err(ApiError::internal)?;
    if chunk.offset > size {
        return Err(ApiError::bad_request(format!(
            "log chunk at offset {} of attempt {attempt} of step {} would leave a gap: the log \
             holds {size} bytes; send from there",
            chunk.offset, chunk.step
        )));
    }
    let end = (chunk.offset + chunk.data.len() as u64).max(size);
    app.logs.append(&chunk).await.map_err(ApiError::internal)?;
    Ok(Json(LogAppended { attempt, size: end }))
}

fn step_name(step: &str) -> Result<StepName, ApiError> {
    StepName::new(step).map_err(|e| ApiError::bad_request(format!("bad step name {step:?}: {e}")))
}
