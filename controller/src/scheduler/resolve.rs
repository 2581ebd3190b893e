//! Filling in `${STEP.id}` and `${STEP.artifacts.NAME.url}` when a step is dispatched: ids are
//! `<run id>/<step>`, artifact URLs the controller's download address of an artifact the step
//! (a parent, by validation) stored, which is only known once that step has ended. A missing
//! artifact fails the consuming step, naming it.

use std::borrow::Cow;

use drover_protocol::message::JobKind;
use drover_protocol::refs::{self, Reference};
use drover_protocol::validate::Step;
use drover_protocol::{Digest, RunId};

use super::StepRecord;

/// What a reference is replaced with.
enum Fill<'a> {
    /// For the job: ids and URLs.
    Job { run_id: &'a RunId, base: &'a str },
    /// For the cache key: an artifact by its digest, so the key follows its content; ids stay
    /// as written, so a step that only names another step's id can still be a cache hit.
    Key,
}

/// `spec` with ids and artifact URLs filled in for its job, or why it cannot run.
pub(super) fn for_job<'a>(
    run_id: &RunId,
    spec: &'a Step,
    steps: &[StepRecord],
    base: &str,
) -> Result<Cow<'a, Step>, String> {
    resolved(spec, steps, &Fill::Job { run_id, base })
}

/// `spec` as its cache key sees it (see [`Fill::Key`]).
pub(super) fn for_key<'a>(spec: &'a Step, steps: &[StepRecord]) -> Result<Cow<'a, Step>, String> {
    resolved(spec, steps, &Fill::Key)
}

/// Whether any text of the step holds a reference filled here; most steps hold none, and
/// they are used as they are, without a copy.
fn refers(spec: &Step) -> bool {
    let any = |text: &str| refs::references(text).any(|r| filled_here(&r));
    let in_kind = match &spec.kind {
        JobKind::Command { argv } => argv.iter().any(|a| any(a)),
        JobKind::Function { kwargs, .. } => kwargs.values().any(|json| {
            matches!(serde_json::from_str(json), Ok(serde_json::Value::String(s)) if any(&s))
        }),
    };
    in_kind || spec.env.values().any(|v| any(v))
}

fn resolved<'a>(
    spec: &'a Step,
    steps: &[StepRecord],
    fill: &Fill<'_>,
) -> Result<Cow<'a, Step>, String> {
    if !refers(spec) {
        return Ok(Cow::Borrowed(spec));
    }
    let mut missing = None;
    let mut value = |r: &Reference| -> Option<String> {
        match r {
            Reference::StepId { step } => match fill {
                Fill::Job { run_id, .. } => Some(format!("{run_id}/{step}")),
                Fill::Key => None,
            },
            Reference::ArtifactUrl { step, artifact } => {
                let record = steps.iter().find(|s| s.name.as_str() == step);
                let stored = record.and_then(|s| {
                    s.outputs
                        .iter()
                        .find(|(name, _)| name.as_str() == artifact)
                        .map(|(_, a)| &a.digest)
                });
                match (stored, fill) {
                    (Some(_), Fill::Job { run_id, base }) => {
                        Some(url(base, run_id, step, artifact))
                    }
                    (Some(digest), Fill::Key) => Some(digest_text(digest)),
                    (None, _) => {
                        let known: Vec<String> = record
                            .map(|s| s.outputs.keys().map(ToString::to_string).collect())
                            .unwrap_or_default();
                        missing.get_or_insert_with(|| {
                            format!(
                                "{r}: step {step} has no artifact {artifact:?} (its artifacts: {known:?})"
                            )
                        });
                        None
                    }
                }
            }
            Reference::Param(_) | Reference::Output { .. } => None,
        }
    };
    let mut step = spec.clone();
    match &mut step.kind {
        JobKind::Command { argv } => {
            for arg in argv.iter_mut() {
                if refs::references(arg).any(|r| filled_here(&r)) {
                    *arg = refs::render_partial(arg, &mut value);
                }
            }
        }
        JobKind::Function { kwargs, .. } => {
            // Kwargs are JSON text: only strings hold references. A kwarg without an id or an
            // artifact URL keeps its text as sent, so its cache key does not change.
            for json in kwargs.values_mut() {
                if let Ok(serde_json::Value::String(s)) = serde_json::from_str(json)
                    && refs::references(&s).any(|r| filled_here(&r))
                {
                    *json =
                        serde_json::Value::String(refs::render_partial(&s, &mut value)).to_string();
                }
            }
        }
    }
    for v in step.env.values_mut() {
        if refs::references(v).any(|r| filled_here(&r)) {
            *v = refs::render_partial(v, &mut value);
        }
    }
    match missing {
        Some(why) => Err(why),
        None => Ok(Cow::Owned(step)),
    }
}

fn filled_here(r: &Reference) -> bool {
    matches!(r, Reference::StepId { .. } | Reference::ArtifactUrl { .. })
}

fn digest_text(digest: &Digest) -> String {
    format!("artifact {digest}")
}

/// The controller's download URL of an artifact.
fn url(base: &str, run_id: &RunId, step: &str, artifact: &str) -> String {
    format!(
        "{}/api/v1/runs/{run_id}/steps/{step}/artifacts/{artifact}",
        base.trim_end_matches('/')
    )
}
