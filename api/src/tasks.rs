//! Tasks registered with the controller (`/api/v1/tasks`): a script that called `Task.init`
//! outside drover, kept so a pipeline can run it again as a step (`add_step(base_task_...)`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /api/v1/tasks`: registers a task, or updates the one `id` names (its parameters grow as
/// the script connects them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterTask {
    /// The task to update; `None` registers a new one.
    #[serde(default)]
    pub id: Option<String>,
    pub project: String,
    pub name: String,
    /// ClearML's task type (`training`, `data_processing`, ...).
    #[serde(default)]
    pub task_type: String,
    /// The script's source.
    pub script: String,
    /// The script's file name, for people and tracebacks.
    #[serde(default)]
    pub script_name: String,
    /// PEP 508 requirements, pinned as for function steps.
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Connected parameters as `"Section/name"` -> value as text.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// One registered task (`GET /api/v1/tasks/{id}`, and the answer to a registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub project: String,
    pub name: String,
    #[serde(default)]
    pub task_type: String,
    pub script: String,
    #[serde(default)]
    pub script_name: String,
    #[serde(default)]
    pub requirements: Vec<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
}

/// `GET /api/v1/tasks[?project=P][&name=N]`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}
