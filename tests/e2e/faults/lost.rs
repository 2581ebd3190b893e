//! Agents `kill -9`ed mid-step: their lost attempts do not count against `retries`, and past
//! `--max-lost-attempts` the step fails naming the agents that were lost.
//!
//! Checked: the step runs to success on a surviving agent although `retries = 0`, `drover
//! status` counts the lost attempt apart from failures, and a step lost once more than the
//! bound allows fails (retries left or not) with every lost agent named.

use super::{attempts, ended, step_status};
use crate::harness::{Cluster, text};
use std::time::Duration;

/// The agent the current attempt of `step` runs on, once it runs.
fn running_on(doc: &serde_json::Value, step: &str) -> Option<String> {
    if step_status(doc, step) != "running" {
        return None;
    }
    let tries = attempts(doc, step);
    tries.last().map(|(agent, _)| agent.clone())
}

/// Waits until step `work` of `run` runs on `victim`, starts the agent `spare` (if any) so the
/// step has somewhere to go, then `kill -9`s `victim`.
fn kill_while_running(c: &mut Cluster, run: &str, victim: &str, spare: Option<&str>) {
    c.wait_for(
        run,
        &format!("the step to run on {victim}"),
        Duration::from_secs(30),
        |d| running_on(d, "work").as_deref() == Some(victim),
    );
    if let Some(spare) = spare {
        c.start_agent(spare, &["default"]);
    }
    c.kill(victim);
}

#[test]
fn a_step_without_retries_outlives_its_killed_agent() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let file = c.pipeline(
        "once.toml",
        "[pipeline]\nname = \"once\"\n[[step]]\nname = \"work\"\ncommand = [\"sh\", \"-c\", \"sleep 2; echo attempt $DROVER_ATTEMPT > out.txt\"]\noutputs = { out = \"out.txt\" }\nretries = 0\n",
    );
    let run = c.submit(&file);
    kill_while_running(&mut c, &run, "a1", Some("a2"));
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);

    assert_eq!(
        doc["status"],
        "succeeded",
        "{doc}\n{}",
        c.process_log("controller")
    );
    assert_eq!(
        attempts(&doc, "work"),
        vec![
            ("a1".to_string(), "lost".to_string()),
            ("a2".to_string(), "succeeded".to_string())
        ],
        "{doc}"
    );
    let out = c.drover(&["artifacts", "get", &run, "work", "out", "-o", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attempt 2\n",
        "{}",
        text(&out)
    );

    let status = c.drover(&["status", &run]);
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(table.contains("ATTEMPTS"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("work "))
        .unwrap_or_else(|| panic!("no row for step work:\n{table}"));
    assert!(row.contains("2 (1 lost)"), "{row}");
}

#[test]
fn a_step_lost_more_often_than_the_bound_fails_naming_the_agents() {
    let mut c = Cluster::new();
    c.start_controller_with(&[
        "controller".to_string(),
        "--max-lost-attempts".to_string(),
        "1".to_string(),
    ]);
    c.start_agent("a1", &["default"]);
    // Retries to spare: only the lost bound can end it.
    let file = c.pipeline(
        "doomed.toml",
        "[pipeline]\nname = \"doomed\"\n[[step]]\nname = \"work\"\ncommand = [\"sleep\", \"20\"]\nretries = 3\nretry_backoff = \"0s\"\n",
    );
    let run = c.submit(&file);
    kill_while_running(&mut c, &run, "a1", Some("a2"));
    kill_while_running(&mut c, &run, "a2", None);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(30), ended);

    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(
        attempts(&doc, "work"),
        vec![
            ("a1".to_string(), "lost".to_string()),
            ("a2".to_string(), "lost".to_string())
        ],
        "{doc}"
    );
    let why = Cluster::step(&doc, "work")["message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("--max-lost-attempts 1"), "{why}");
    assert!(why.contains("a1, a2"), "{why}");

    let status = c.drover(&["status", &run]);
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(table.contains("2 (2 lost)"), "{table}");
}
