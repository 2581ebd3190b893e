//! Triggers as stored: run a pipeline when a run of another ends (succeeded or failed), with
//! the upstream run's id as a parameter; which triggers an ended run fires, and the refusal of a
//! trigger that would close a loop.

use drover_api::{Firing, RunStatus, TriggerOn};
use drover_protocol::RunId;
use drover_protocol::spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// One trigger; the record of the `triggers` tree, keyed by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub name: String,
    pub on: TriggerOn,
    /// The upstream pipeline's project and name.
    pub project: String,
    pub pipeline: String,
    pub param_name: String,
    /// What each firing submits, captured at `add`.
    pub spec: PipelineSpec,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub from_run: Option<RunId>,
    pub created_at: u64,
    #[serde(default)]
    pub fired: u64,
    #[serde(default)]
    pub last_fired: Option<Firing>,
}

/// `PROJECT/NAME` of a pipeline.
pub fn pipeline_key(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

impl TriggerRecord {
    pub fn upstream(&self) -> String {
        pipeline_key(&self.project, &self.pipeline)
    }

    pub fn downstream(&self) -> String {
        pipeline_key(&self.spec.pipeline.project, &self.spec.pipeline.name)
    }

    /// Whether a run of `project`/`name` that ended `status` at `ended_at` fires this trigger;
    /// runs that ended before the trigger was added do not.
    pub fn fired_by(&self, project: &str, name: &str, status: RunStatus, ended_at: u64) -> bool {
        let wanted = match self.on {
            TriggerOn::Success => status == RunStatus::Succeeded,
            TriggerOn::Failure => status == RunStatus::Failed,
        };
        wanted && self.project == project && self.pipeline == name && ended_at >= self.created_at
    }
}

/// Refuses `new` when the triggers with it would run a pipeline again because of its own
/// run: the error names the loop, trigger by trigger.
pub fn check_no_loop<'a>(
    existing: impl IntoIterator<Item = &'a TriggerRecord>,
    new: &TriggerRecord,
) -> Result<(), String> {
    let mut edges: BTreeMap<String, Vec<&TriggerRecord>> = BTreeMap::new();
    for t in existing {
        edges.entry(t.upstream()).or_default().push(t);
    }
    // Breadth-first from the new trigger's downstream; reaching its upstream closes a loop.
    let start = new.downstream();
    let goal = new.upstream();
    let mut came_from: BTreeMap<String, Option<&TriggerRecord>> = BTreeMap::new();
    came_from.insert(start.clone(), None);
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        if at == goal {
            let mut chain = Vec::new();
            let mut cursor = at;
            while let Some(Some(t)) = came_from.get(&cursor) {
                chain.push(*t);
                cursor = t.upstream();
            }
            chain.reverse();
            let steps: Vec<String> = std::iter::once(new)
                .chain(chain)
                .map(|t| format!("{} ({} -> {})", t.name, t.upstream(), t.downstream()))
                .collect();
            return Err(format!(
                "trigger {} would loop: {}; remove one of them first",
                new.name,
                steps.join(", then ")
            ));
        }
        for t in edges.get(&at).into_iter().flatten() {
            let next = t.downstream();
            if !came_from.contains_key(&next) {
                came_from.insert(next.clone(), Some(*t));
                queue.push_back(next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(name: &str, upstream: &str, downstream: &str) -> TriggerRecord {
        let (project, pipeline) = upstream.split_once('/').unwrap();
        let (dp, dn) = downstream.split_once('/').unwrap();
        TriggerRecord {
            name: name.into(),
            on: TriggerOn::Success,
            project: project.into(),
            pipeline: pipeline.into(),
            param_name: "trigger_run".into(),
            spec: PipelineSpec::from_toml(&format!(
                "[pipeline]\nname = \"{dn}\"\nproject = \"{dp}\"\n"
            ))
            .unwrap(),
            params: BTreeMap::new(),
            from_run: None,
            created_at: 1_000,
            fired: 0,
            last_fired: None,
        }
    }

    #[test]
    fn a_trigger_closing_a_loop_is_refused_naming_the_loop() {
        let ab = trigger("ab", "p/a", "p/b");
        let bc = trigger("bc", "p/b", "p/c");
        let other = trigger("xy", "p/x", "p/y");
        let ca = trigger("ca", "p/c", "p/a");
        let err = check_no_loop([&ab, &bc, &other], &ca).unwrap_err();
        assert_eq!(
            err,
            "trigger ca would loop: ca (p/c -> p/a), then ab (p/a -> p/b), then bc (p/b -> p/c); remove one of them first"
        );
        let itself = trigger("aa", "p/a", "p/a");
        assert!(
            check_no_loop([], &itself)
                .unwrap_err()
                .contains("aa (p/a -> p/a)")
        );
        let cd = trigger("cd", "p/c", "p/d");
        assert_eq!(check_no_loop([&ab, &bc, &other], &cd), Ok(()));
    }

    #[test]
    fn only_runs_of_its_pipeline_that_end_as_asked_after_it_was_added_fire_it() {
        let t = trigger("ab", "p/a", "p/b");
        assert!(t.fired_by("p", "a", RunStatus::Succeeded, 1_000));
        assert!(!t.fired_by("p", "a", RunStatus::Failed, 2_000));
        assert!(!t.fired_by("p", "a", RunStatus::Succeeded, 999));
        assert!(!t.fired_by("q", "a", RunStatus::Succeeded, 2_000));
        let mut f = t.clone();
        f.on = TriggerOn::Failure;
        assert!(f.fired_by("p", "a", RunStatus::Failed, 2_000));
        assert!(!f.fired_by("p", "a", RunStatus::Aborted, 2_000));
    }
}
