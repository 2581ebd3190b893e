//! What was submitted for each run, as sent (the spec before validation, the parameter
//! overrides and the run it re-runs, if any), so a run can be submitted again as it was even
//! after its stored pipeline changed or grew.

use drover_api::FiredBy;
use drover_protocol::RunId;
use drover_protocol::message::Submit;
use drover_protocol::spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(super) const SUBMITS_TREE: &str = "run_submits";

/// One run's submission; fields older data may lack default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub spec: PipelineSpec,
    /// The parameter overrides as given, not the effective parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// The run this one submitted again.
    #[serde(default)]
    pub rerun_of: Option<RunId>,
    /// The schedule or trigger that submitted it.
    #[serde(default)]
    pub fired_by: Option<FiredBy>,
}

impl Submitted {
    pub fn of(submit: &Submit, rerun_of: Option<RunId>) -> Self {
        Self {
            spec: submit.spec.clone(),
            params: submit.params.clone(),
            submitted_by: submit.submitted_by.clone(),
            rerun_of,
            fired_by: None,
        }
    }
}
