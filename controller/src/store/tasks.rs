//! Registered tasks (`Task.init` outside drover), one record per task id in their own tree.
//! They are no run state: the HTTP layer writes them directly.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(super) const TASKS_TREE: &str = "tasks";

/// One registered task; fields older data may lack default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
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
    pub created_at: u64,
    pub updated_at: u64,
}
