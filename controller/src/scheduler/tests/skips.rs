//! Failure and skip semantics from the shared cases in
//! `protocol/tests/golden/cases/skips.json`, which the SDK's local runs follow too: each case is
//! driven to its end, jobs finishing in the order they were dispatched.

use super::*;
use serde_json::Value;
use std::collections::VecDeque;

const CASES: &str = include_str!("../../../../protocol/tests/golden/cases/skips.json");

/// The `[[step]]` tables of a case: every step a command, failing or not by the agent's report.
fn steps_toml(steps: &[Value]) -> String {
    let mut toml = String::new();
    for step in steps {
        let parents: Vec<String> = step["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{p}"))
            .collect();
        toml.push_str(&format!(
            "[[step]]\nname = {}\ncommand = [\"true\"]\nparents = [{}]\ncontinue_on_fail = {}\n",
            step["name"],
            parents.join(", "),
            step["continue_on_fail"].as_bool().unwrap_or(false)
        ));
    }
    toml
}

#[test]
fn shared_skip_cases() {
    let file: Value = serde_json::from_str(CASES).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_array().unwrap();
        let fails = |step: &str| {
            steps
                .iter()
                .any(|s| s["name"] == step && s["fails"].as_bool().unwrap_or(false))
        };
        let mut st = new_state();
        let (run, fx) = submit_toml(&mut st, &steps_toml(steps), 0);
        let mut queue: VecDeque<StepJob> = jobs(&fx).into();
        let mut now = 0;
        while let Some(job) = queue.pop_front() {
            now += 10;
            let outcome = if fails(job.step.as_str()) {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            queue.extend(jobs(&run_job(&mut st, &job, "w", outcome, now)));
        }
        for (step_name, expected) in case["statuses"].as_object().unwrap() {
            assert_eq!(
                status(&st, &run, step_name).as_str(),
                expected.as_str().unwrap(),
                "{name}: step {step_name}"
            );
        }
        let record = &st.runs[&run];
        assert_eq!(record.steps.len(), steps.len(), "{name}");
        let run_status = serde_json::to_value(record.status).unwrap();
        assert_eq!(run_status, case["run"], "{name}: run");
    }
}
