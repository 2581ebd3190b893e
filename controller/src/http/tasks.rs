//! Registered tasks: `POST /api/v1/tasks` registers (or updates) one, `GET /api/v1/tasks` lists
//! them (`?project=`, `?name=`: equal regardless of case), `GET /api/v1/tasks/{id}` reads one. A pipeline's `add_step(base_task_...)` finds its
//! task here when it is built.

use super::{ApiError, App};
use crate::store::TaskRecord;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use drover_api::{RegisterTask, TaskList, TaskView};
use drover_protocol::RunId;
use drover_protocol::message::now_ms;
use serde::Deserialize;

/// The longest project or task name accepted.
const MAX_NAME: usize = 256;

#[derive(Debug, Deserialize)]
pub struct TaskQuery {
    project: Option<String>,
    name: Option<String>,
}

pub async fn register(State(app): State<App>, body: Bytes) -> Result<Json<TaskView>, ApiError> {
    let request: RegisterTask = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a task registration {{\"project\", \"name\", \"script\", ...}}: {e}"
        ))
    })?;
    for (field, value) in [("project", &request.project), ("name", &request.name)] {
        if value.trim().is_empty() || value.len() > MAX_NAME || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "the task's {field} {value:?} must be 1 to {MAX_NAME} characters without NUL"
            )));
        }
    }
    if let Some(problem) = request.requirements.iter().find_map(|r| {
        drover_protocol::validate::check_requirement(r)
            .err()
            .map(|e| (r, e))
    }) {
        return Err(ApiError::bad_request(format!(
            "the task's requirement {:?} {}",
            problem.0, problem.1
        )));
    }
    let now = now_ms();
    let created_at = match &request.id {
        Some(id) => {
            let known = app.store.task(id)?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "no task {id:?} to update; register it without an id"
                ))
            })?;
            known.created_at
        }
        None => now,
    };
    let record = TaskRecord {
        id: request.id.unwrap_or_else(|| RunId::generate().to_string()),
        project: request.project,
        name: request.name,
        task_type: request.task_type,
        script: request.script,
        script_name: request.script_name,
        requirements: request.requirements,
        parameters: request.parameters,
        created_at,
        updated_at: now,
    };
    app.store.put_task(&record).await?;
    Ok(Json(view(record)))
}

pub async fn list(
    State(app): State<App>,
    Query(q): Query<TaskQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let tasks = app
        .store
        .tasks()?
        .into_iter()
        .filter(|t| same_name(q.project.as_deref(), &t.project))
        .filter(|t| same_name(q.name.as_deref(), &t.name))
        .map(view)
        .collect();
    Ok(Json(TaskList { tasks }))
}

pub async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let record = app
        .store
        .task(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no task {id:?}")))?;
    Ok(Json(view(record)))
}

/// Project and task names match regardless of case, as ClearML finds tasks by name.
fn same_name(wanted: Option<&str>, name: &str) -> bool {
    wanted.is_none_or(|w| w.to_lowercase() == name.to_lowercase())
}

fn view(t: TaskRecord) -> TaskView {
    TaskView {
        id: t.id,
        project: t.project,
        name: t.name,
        task_type: t.task_type,
        script: t.script,
        script_name: t.script_name,
        requirements: t.requirements,
        parameters: t.parameters,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}
