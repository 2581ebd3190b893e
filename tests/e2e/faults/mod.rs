//! Fault injection: killed agents and controllers, a restarted broker, an agent cut off from
//! it, a long broker outage under heavy output, aborts, drains, timeouts, poison messages and
//! invalid pipelines, against real processes and a real broker.

mod abort;
mod agent_kill;
mod broker_list;
mod broker_restart;
pub(crate) mod cluster;
mod control_queue;
mod controller_kill;
mod drain;
mod forward;
mod invalid_many;
mod journal;
mod log_spool;
mod long_step;
mod lost;
mod orphans;
mod poison;
pub(crate) mod rabbit;
mod silent_broker;
mod standby;
mod timeout;
mod unconfirmed;

use crate::harness::Cluster;
use serde_json::Value;

/// Whether a status document shows a finished run.
pub fn ended(doc: &Value) -> bool {
    matches!(
        doc["status"].as_str(),
        Some("succeeded" | "failed" | "aborted" | "rejected")
    )
}

/// The status of one step in a status document.
pub fn step_status<'a>(doc: &'a Value, step: &str) -> &'a str {
    Cluster::step(doc, step)["status"].as_str().unwrap_or("")
}

/// `(agent, outcome)` of every attempt of a step.
pub fn attempts(doc: &Value, step: &str) -> Vec<(String, String)> {
    Cluster::step(doc, step)["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    (
                        a["agent"].as_str().unwrap_or("").to_string(),
                        a["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A chain of `n` command steps `s1 -> s2 -> ...`, each sleeping `secs` (the workload: a fault
/// lands while a step runs) and passing a file on.
pub fn chain(n: usize, secs: f64) -> String {
    chain_logging(n, secs, 0)
}

/// [`chain`] whose steps first print `lines` lines to their logs ([`chain_log`]).
pub fn chain_logging(n: usize, secs: f64, lines: usize) -> String {
    let mut toml = "[pipeline]\nname = \"chain\"\n".to_string();
    for i in 1..=n {
        let input = if i == 1 {
            "echo start".to_string()
        } else {
            format!("cat ${{s{}.out}}", i - 1)
        };
        let print = if lines == 0 {
            String::new()
        } else {
            format!("seq -f 's{i} line %g' 1 {lines}; ")
        };
        toml.push_str(&format!(
            "[[step]]\nname = \"s{i}\"\ncommand = [\"sh\", \"-c\", \"{print}sleep {secs}; ({input}; echo s{i}) > out.txt\"]\noutputs = {{ out = \"out.txt\" }}\n"
        ));
    }
    toml
}

/// What step `step` of a [`chain_logging`] chain prints.
pub fn chain_log(step: &str, lines: usize) -> String {
    (1..=lines).map(|i| format!("{step} line {i}\n")).collect()
}

/// Milliseconds since the epoch, as the controller stamps attempts.
pub fn now_ms() -> u64 {
    drover_protocol::message::now_ms()
}
