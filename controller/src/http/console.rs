//! The controller's console for one run: what it did with the run, one line per event, in time
//! order. Rebuilt from the run's durable record (submission, steps added by a dynamic run's
//! driver, every attempt's dispatch, claim and end, cache hits, skips, the run's end), so it
//! survives restarts and costs nothing to keep. What a dynamic run's pipeline function printed
//! is its driver step's log (the run page shows it as the pipeline's console), not this.

use crate::logs::delay_text;
use crate::scheduler::{AttemptRecord, RunRecord, StepRecord, StepStatus};
use std::fmt::Write as _;

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// The lines, oldest first, each starting with its RFC 3339 time.
pub fn lines(run: &RunRecord) -> Vec<String> {
    let mut events: Vec<(u64, usize, String)> = Vec::new();
    let mut push = |at: u64, text: String| {
        let order = events.len();
        events.push((at, order, text));
    };
    let mut submitted = format!("received run {} of pipeline {:?}", run.run_id, run.name);
    if let Some(by) = &run.submitted_by {
        let _ = write!(submitted, " from {by}");
    }
    if !run.params.is_empty() {
        let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(submitted, " with {}", params.join(" "));
    }
    push(run.created_at, submitted);
    if run.pipeline.is_none() {
        let error = run.error.as_deref().unwrap_or("invalid pipeline");
        push(run.created_at, format!("rejected: {error}"));
    } else if let Some(started) = run.started_at {
        let driver = run.pipeline.as_ref().and_then(|p| p.driver());
        let text = match driver {
            Some(d) => format!(
                "validated: a dynamic run; its driver {} adds steps while it runs, and its log \
                 is the pipeline's console",
                d.name
            ),
            None => format!("validated: {} step(s), starting", run.steps.len()),
        };
        push(started, text);
    }
    for step in &run.steps {
        step_lines(step, &mut push);
    }
    if let Some(ended) = run.ended_at {
        let mut end = format!("run {}", run.status.as_str());
        if let (Some(start), true) = (run.started_at, run.pipeline.is_some()) {
            let _ = write!(
                end,
                " after {:.1}s",
                ended.saturating_sub(start) as f64 / 1000.0
            );
        }
        if let Some(error) = &run.error {
            let _ = write!(end, ": {error}");
        }
        push(ended, end);
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    events
        .into_iter()
        .map(|(at, _, text)| format!("{} {text}", time(at)))
        .collect()
}

fn step_lines(step: &StepRecord, push: &mut impl FnMut(u64, String)) {
    let name = &step.name;
    if let Some(call) = &step.call {
        push(
            call.added_at,
            format!(
                "step {name}: added by {} (call {}, component {}, arguments {})",
                call.caller, call.seq, call.component, call.digest
            ),
        );
    }
    for attempt in &step.attempts {
        attempt_lines(name.as_str(), step, attempt, push);
    }
    let at = step.ended_at.or(step.started_at).unwrap_or_default();
    match step.status {
        StepStatus::Cached => {
            let key = step.cache_key.as_deref().unwrap_or("-");
            push(
                at,
                format!("step {name}: cache hit (key {key}), outputs reused, no job dispatched"),
            );
        }
        StepStatus::Skipped => {
            let why = step
                .message
                .as_deref()
                .unwrap_or("a parent did not succeed");
            push(at, format!("step {name}: skipped: {why}"));
        }
        StepStatus::Aborted if step.attempts.is_empty() => {
            push(at, format!("step {name}: aborted before it was dispatched"));
        }
        _ => {}
    }
    if let (Some(retry_at), StepStatus::Pending) = (step.retry_at, step.status) {
        push(
            retry_at,
            format!("step {name}: next attempt due (retry backoff)"),
        );
    }
}

fn attempt_lines(
    name: &str,
    step: &StepRecord,
    a: &AttemptRecord,
    push: &mut impl FnMut(u64, String),
) {
    let n = a.attempt;
    let mut queued = format!("step {name}: attempt {n} published on queue {}", step.queue);
    if let (Some(key), 1) = (&step.cache_key, n.0) {
        let _ = write!(queued, " (cache key {key}, no hit)");
    }
    push(a.queued_at, queued);
    if let Some(started) = a.started_at {
        let agent = a.agent.as_ref().map_or("-".to_string(), |a| a.to_string());
        push(
            started,
            format!("step {name}: attempt {n} claimed by agent {agent}"),
        );
    }
    if let Some(ended) = a.ended_at {
        let outcome = a.outcome.map_or("ended".to_string(), |o| {
            serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| format!("{o:?}"))
        });
        let mut end = format!("step {name}: attempt {n} {outcome}");
        if let Some(code) = a.exit_code {
            let _ = write!(end, " (exit code {code})");
        }
        if let Some(started) = a.started_at {
            let _ = write!(
                end,
                " after {:.1}s",
                ended.saturating_sub(started) as f64 / 1000.0
            );
        }
        if let Some(message) = &a.message {
            let _ = write!(end, ": {message}");
        }
        for delay in &a.log_delays {
            push(ended, format!("step {name}: {}", delay_text(n, delay)));
        }
        push(ended, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Event, SchedulerConfig, State, handle};
    use drover_protocol::RunId;
    use drover_protocol::message::Submit;
    use drover_protocol::spec::PipelineSpec;

    #[test]
    fn a_submitted_run_tells_its_story_in_time_order() {
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let spec = PipelineSpec::from_toml(
            "[pipeline]\nname = \"p\"\n[parameters]\nwho = { default = \"me\" }\n\
             [[step]]\nname = \"a\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec,
            params: Default::default(),
            submitted_by: Some("me@host".into()),
            external: false,
        };
        handle(&mut state, Event::Submit(submit), 1_000);
        let lines = lines(&state.runs[&run_id]);
        assert!(
            lines[0].ends_with(&format!(
                "received run {run_id} of pipeline \"p\" from me@host with who=me"
            )),
            "{lines:?}"
        );
        assert!(
            lines[0].starts_with("1970-01-01T00:00:01.000Z"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("step a: attempt 1 published on queue default")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_dynamic_run_tells_which_call_added_each_step() {
        let mut state = State::new(SchedulerConfig {
            controller_url: "http://x".into(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
        });
        let spec = PipelineSpec::from_toml(
            "[pipeline]\nname = \"p\"\n[[step]]\nname = \"pipe\"\ndriver = true\n\
             function = { source = \"def f():\\n    pass\\n\", entry = \"f\" }\n",
        )
        .unwrap();
        let run_id = RunId::generate();
        let submit = Submit {
            run_id: run_id.clone(),
            spec,
            params: Default::default(),
            submitted_by: None,
            external: false,
        };
        handle(&mut state, Event::Submit(submit), 1_000);
        let request = drover_api::AddStep {
            caller: drover_protocol::StepName::new("pipe").unwrap(),
            attempt: drover_protocol::AttemptNo(1),
            call: drover_api::CallKey {
                seq: 0,
                component: "square".into(),
                digest: "ab12".into(),
            },
            step: drover_protocol::spec::StepSpec {
                name: "square".into(),
                command: Some(vec!["true".into()]),
                ..Default::default()
            },
        };
        crate::scheduler::add_step(&mut state, request, &run_id, 2_000).unwrap();
        let lines = lines(&state.runs[&run_id]);
        assert!(
            lines[1].ends_with("validated: a dynamic run; its driver pipe adds steps while it runs, and its log is the pipeline's console"),
            "{lines:?}"
        );
        let added = "1970-01-01T00:00:02.000Z step square: added by pipe (call 0, component square, arguments ab12)";
        let at = lines.iter().position(|l| l == added);
        let published = lines
            .iter()
            .position(|l| l.contains("step square: attempt 1 published"));
        assert!(at.is_some() && at < published, "{lines:?}");
    }
}
