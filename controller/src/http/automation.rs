//! `/api/v1/schedules` and `/api/v1/triggers`: listing reads the store; every change is checked
//! here, then made by the owning task, which answers once it is durable.

use super::{ApiError, App};
use crate::automation::cadence::Cadence;
use crate::automation::check_name;
use crate::automation::schedules::ScheduleRecord;
use crate::automation::triggers::{TriggerRecord, pipeline_key};
use crate::service::Command;
use crate::service::automation::{Change, Changed, Unchanged};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::{
    AddSchedule, AddTrigger, Firing, PipelineSource, ScheduleList, ScheduleView, TriggerList,
    TriggerView,
};
use drover_protocol::RunId;
use drover_protocol::message::now_ms;
use drover_protocol::spec::PipelineSpec;
use drover_protocol::validate::validate;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// The parameter a trigger sets to the upstream run's id unless told otherwise.
const DEFAULT_TRIGGER_PARAM: &str = "trigger_run";

pub fn schedule_view(s: &ScheduleRecord, now: u64) -> ScheduleView {
    ScheduleView {
        name: s.name.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        overlap: s.overlap,
        paused: s.paused,
        project: s.spec.pipeline.project.clone(),
        pipeline: s.spec.pipeline.name.clone(),
        params: s.params.clone(),
        from_run: s.from_run.clone(),
        created_at: s.created_at,
        last_fired: s.last_fired.clone(),
        last_skipped: s.last_skipped.clone(),
        skipped: s.skipped,
        next_slot: s.next_slot(now),
    }
}

fn trigger_view(t: &TriggerRecord) -> TriggerView {
    TriggerView {
        name: t.name.clone(),
        on: t.on,
        upstream: t.upstream(),
        downstream: t.downstream(),
        param_name: t.param_name.clone(),
        params: t.params.clone(),
        from_run: t.from_run.clone(),
        created_at: t.created_at,
        fired: t.fired,
        last_fired: t.last_fired.clone(),
    }
}

/// `GET /api/v1/schedules`.
pub async fn list_schedules(State(app): State<App>) -> Result<Json<ScheduleList>, ApiError> {
    let now = now_ms();
    let schedules = app.store.schedules()?;
    Ok(Json(ScheduleList {
        schedules: schedules.iter().map(|s| schedule_view(s, now)).collect(),
    }))
}

/// `POST /api/v1/schedules`: 201 with the new schedule.
pub async fn add_schedule(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let add: AddSchedule = parse_body(&body, "{\"name\", \"cron\", \"from_run\" or \"pipeline\"}")?;
    check_name("schedule", &add.name).map_err(ApiError::bad_request)?;
    let cadence =
        Cadence::parse(&add.cron, add.timezone.as_deref()).map_err(ApiError::bad_request)?;
    let (spec, params, from_run) = resolve(&app, add.source, None)?;
    let record = ScheduleRecord {
        name: add.name,
        cron: add.cron.split_whitespace().collect::<Vec<_>>().join(" "),
        timezone: cadence.zone_name().to_string(),
        overlap: add.overlap,
        paused: false,
        spec,
        params,
        from_run,
        created_at: now_ms(),
        last_slot: None,
        last_fired: None,
        last_skipped: None,
        skipped: 0,
    };
    match ask(&app, Change::AddSchedule(Box::new(record))).await? {
        Changed::Schedule(s) => {
            Ok((StatusCode::CREATED, Json(schedule_view(&s, now_ms()))).into_response())
        }
        _ => Err(ApiError::internal("unexpected answer to adding a schedule")),
    }
}

/// `POST /api/v1/schedules/{name}/remove`: the schedule removed.
pub async fn remove_schedule(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    schedule_answer(&app, Change::RemoveSchedule(name)).await
}

/// `POST /api/v1/schedules/{name}/pause`.
pub async fn pause_schedule(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    schedule_answer(&app, Change::PauseSchedule(name, true)).await
}

/// `POST /api/v1/schedules/{name}/resume`: slots passed while paused are not made up.
pub async fn resume_schedule(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    schedule_answer(&app, Change::PauseSchedule(name, false)).await
}

/// `POST /api/v1/schedules/{name}/run-now`: 202 with the run submitted, whatever the slot and
/// whether its previous run is still going.
pub async fn run_now(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match ask(&app, Change::RunNow(name)).await? {
        Changed::Fired(firing) => {
            Ok((StatusCode::ACCEPTED, Json::<Firing>(firing)).into_response())
        }
        _ => Err(ApiError::internal("unexpected answer to run-now")),
    }
}

async fn schedule_answer(app: &App, change: Change) -> Result<Response, ApiError> {
    match ask(app, change).await? {
        Changed::Schedule(s) => Ok(Json(schedule_view(&s, now_ms())).into_response()),
        _ => Err(ApiError::internal("unexpected answer to a schedule change")),
    }
}

/// `GET /api/v1/triggers`.
pub async fn list_triggers(State(app): State<App>) -> Result<Json<TriggerList>, ApiError> {
    let triggers = app.store.triggers()?;
    Ok(Json(TriggerList {
        triggers: triggers.iter().map(trigger_view).collect(),
    }))
}

/// `POST /api/v1/triggers`: 201 with the new trigger; 400 when the downstream pipeline does
/// not declare the parameter or the trigger would close a loop.
pub async fn add_trigger(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let add: AddTrigger = parse_body(
        &body,
        "{\"name\", \"on\", \"upstream\", \"from_run\" or \"pipeline\"}",
    )?;
    check_name("trigger", &add.name).map_err(ApiError::bad_request)?;
    let Some((project, pipeline)) = add
        .upstream
        .split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!(
            "upstream pipeline {:?} must be PROJECT/NAME, as `drover runs` shows them",
            add.upstream
        )));
    };
    let param_name = add
        .param_name
        .unwrap_or_else(|| DEFAULT_TRIGGER_PARAM.to_string());
    let (spec, params, from_run) = resolve(&app, add.source, Some(&param_name))?;
    let record = TriggerRecord {
        name: add.name,
        on: add.on,
        project: project.to_string(),
        pipeline: pipeline.to_string(),
        param_name,
        spec,
        params,
        from_run,
        created_at: now_ms(),
        fired: 0,
        last_fired: None,
    };
    match ask(&app, Change::AddTrigger(Box::new(record))).await? {
        Changed::Trigger(t) => Ok((StatusCode::CREATED, Json(trigger_view(&t))).into_response()),
        _ => Err(ApiError::internal("unexpected answer to adding a trigger")),
    }
}

/// `POST /api/v1/triggers/{name}/remove`: the trigger removed.
pub async fn remove_trigger(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match ask(&app, Change::RemoveTrigger(name)).await? {
        Changed::Trigger(t) => Ok(Json(trigger_view(&t)).into_response()),
        _ => Err(ApiError::internal(
            "unexpected answer to removing a trigger",
        )),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON object {shape}: {e}")))
}

async fn ask(app: &App, change: Change) -> Result<Changed, ApiError> {
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::unavailable("the controller is shutting down");
    app.commands
        .send(Command::Automation { change, reply })
        .await
        .map_err(|_| gone())?;
    match answer.await.map_err(|_| gone())? {
        Ok(changed) => Ok(changed),
        Err(Unchanged::NotFound(why)) => Err(ApiError::not_found(why)),
        Err(Unchanged::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(Unchanged::Unavailable(why)) => Err(ApiError::unavailable(why)),
    }
}

/// A source's pipeline, its parameter overrides and the run it came from.
type Resolved = (PipelineSpec, BTreeMap<String, String>, Option<RunId>);

/// The pipeline and parameter overrides a source names, validated as a submission with them
/// would be (with `trigger_param` set, when it is a trigger's).
fn resolve(
    app: &App,
    source: PipelineSource,
    trigger_param: Option<&str>,
) -> Result<Resolved, ApiError> {
    let (spec, mut params, from_run) = match (source.from_run, source.pipeline) {
        (Some(run), None) => {
            let record = app.run(run.as_str())?;
            let Some(submitted) = app.store.submitted(&record.run_id)? else {
                return Err(ApiError::bad_request(format!(
                    "run {run} was submitted to a controller release that did not keep what was submitted; give its pipeline file instead"
                )));
            };
            (submitted.spec, submitted.params, Some(record.run_id))
        }
        (None, Some(text)) => {
            let spec = PipelineSpec::from_toml(&text).map_err(|e| {
                ApiError::bad_request(format!("the pipeline is not a valid pipeline file:\n{e}"))
            })?;
            (spec, BTreeMap::new(), None)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of from_run (a run whose pipeline to submit) and pipeline (a TOML pipeline's text)",
            ));
        }
    };
    params.extend(source.params);
    let mut checked = params.clone();
    if let Some(param) = trigger_param {
        if !spec.parameters.contains_key(param) {
            let declared: Vec<&str> = spec.parameters.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!(
                "pipeline {} declares no parameter {param:?} to receive the upstream run's id: declare it (`{param} = {{ default = \"\" }}` under [parameters]) or name a declared one with --param-name (declared: {})",
                pipeline_key(&spec.pipeline.project, &spec.pipeline.name),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
        checked.insert(param.to_string(), RunId::generate().to_string());
    }
    let key = || pipeline_key(&spec.pipeline.project, &spec.pipeline.name);
    let pipeline = validate(&spec, &checked).map_err(|errors| {
        ApiError::bad_request(format!(
            "pipeline {} cannot be submitted with these parameters: {errors}",
            key()
        ))
    })?;
    crate::scheduler::refuse_own_queues(&pipeline.steps, &app.names).map_err(|why| {
        ApiError::bad_request(format!("pipeline {} cannot be submitted: {why}", key()))
    })?;
    Ok((spec, params, from_run))
}
