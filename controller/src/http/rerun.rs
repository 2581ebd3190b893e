//! Submitting a run again from what was submitted for it, with parameters changed, and listing
//! a run's artifacts.

use super::{ApiError, App};
use crate::scheduler::refuse_own_queues;
use crate::service::Command;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use drover_api::{ArtifactList, ArtifactView, RerunAccepted, RerunRequest};
use drover_protocol::message::Submit;
use drover_protocol::validate::validate;
use drover_protocol::{RunId, StepName};
use serde::Deserialize;

/// `POST /api/v1/runs/{run}/rerun`: validates the earlier run's spec with its parameter
/// overrides changed by the request's, then submits it as a new run that records its origin.
pub async fn rerun(
    State(app): State<App>,
    Path(run): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: RerunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RerunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be a JSON object {{\"params\": {{NAME: VALUE}}}}: {e}"
            ))
        })?
    };
    let record = app.run(&run)?;
    let Some(submitted) = app.store.submitted(&record.run_id)? else {
        return Err(ApiError::bad_request(format!(
            "run {run} was submitted to a controller release that did not keep what was submitted, so it cannot be run again; submit its pipeline file with `drover run FILE`"
        )));
    };
    let mut params = submitted.params.clone();
    params.extend(request.params);
    let pipeline = validate(&submitted.spec, &params).map_err(|errors| {
        ApiError::bad_request(format!(
            "run {run} cannot be run again with these parameters: {errors}"
        ))
    })?;
    refuse_own_queues(&pipeline.steps, &app.names)
        .map_err(|why| ApiError::bad_request(format!("run {run} cannot be run again: {why}")))?;
    let run_id = RunId::generate();
    let submit = Submit {
        run_id: run_id.clone(),
        spec: submitted.spec,
        params: params.clone(),
        submitted_by: request.submitted_by.or(submitted.submitted_by),
        external: false,
    };
    app.commands
        .send(Command::Rerun {
            submit,
            of: record.run_id.clone(),
        })
        .await
        .map_err(|_| ApiError::unavailable("the controller is shutting down"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RerunAccepted {
            url: app.run_url(&run_id),
            run_id,
            rerun_of: record.run_id,
            params,
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ArtifactsQuery {
    step: Option<String>,
}

/// `GET /api/v1/runs/{run}/artifacts[?step=S]`: every stored output, in step order.
pub async fn artifacts(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<ArtifactsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let only = match q.step {
        Some(s) => Some(
            StepName::new(s.as_str())
                .ok()
                .filter(|n| record.step(n).is_some())
                .ok_or_else(|| ApiError::not_found(format!("run {run} has no step {s:?}")))?,
        ),
        None => None,
    };
    let base = format!("{}/api/v1/runs/{}", app.public_url, record.run_id);
    let artifacts = record
        .steps
        .iter()
        .filter(|s| only.as_ref().is_none_or(|n| *n == s.name))
        .flat_map(|s| {
            s.outputs.iter().map(|(name, a)| ArtifactView {
                step: s.name.clone(),
                name: name.to_string(),
                file_name: a.file_name.clone(),
                size: a.size,
                digest: a.digest.clone(),
                url: format!("{base}/steps/{}/artifacts/{name}", s.name),
            })
        })
        .collect();
    Ok(Json(ArtifactList {
        run_id: record.run_id,
        artifacts,
    }))
}
