//! The `/metrics` families computed at scrape time from durable state: step durations and
//! dispatch latency (histograms over every stored attempt, so they survive restarts), warm and
//! cold starts of Python steps, agents and their slots, and the depth of the dead-letter queue.

use crate::metrics::family;
use crate::scheduler::{AgentRecord, RunRecord};
use drover_protocol::message::StartKind;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Upper bounds (seconds) of the step duration buckets.
const DURATION_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];
/// Upper bounds (seconds) of the dispatch latency buckets: publish to claim.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0];

/// Observations of one histogram, by label value.
#[derive(Default)]
struct Histogram {
    series: BTreeMap<String, Vec<f64>>,
}

impl Histogram {
    fn observe(&mut self, label: &str, seconds: f64) {
        self.series
            .entry(label.to_string())
            .or_default()
            .push(seconds);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label: &str, buckets: &[f64]) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (value, samples) in &self.series {
            for le in buckets {
                let n = samples.iter().filter(|s| **s <= *le).count();
                let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
                samples.len()
            );
            let sum: f64 = samples.iter().sum();
            let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", samples.len());
        }
    }
}

/// A counter with one series per agent, `count` of its record.
fn per_agent(
    out: &mut String,
    agents: &[&AgentRecord],
    name: &str,
    help: &str,
    count: impl Fn(&AgentRecord) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for a in agents {
        let _ = writeln!(out, "{name}{{agent=\"{}\"}} {}", a.info.id, count(a));
    }
}

/// The starts and stops (by reason) of the warm parents each agent reports.
fn warm_parents(out: &mut String, agents: &[&AgentRecord]) {
    per_agent(
        out,
        agents,
        "drover_warm_parent_starts_total",
        "Warm parents an agent started (the agents of one `drover up` share a pool and report the same counts).",
        |a| a.info.warm_parents.started,
    );
    let _ = writeln!(
        out,
        "# HELP drover_warm_parent_stops_total Warm parents an agent stopped or replaced, by reason: died, thread (an import started one), preload_failed, fork_failed, memory, idle, shutdown.\n# TYPE drover_warm_parent_stops_total counter"
    );
    for a in agents {
        for (reason, n) in &a.info.warm_parents.stopped {
            let _ = writeln!(
                out,
                "drover_warm_parent_stops_total{{agent=\"{}\",reason=\"{reason}\"}} {n}",
                a.info.id
            );
        }
    }
}

/// What each agent refused or dropped: jobs and cancels of a deposed controller (a lower
/// epoch), and jobs the controller had revoked.
fn refused(out: &mut String, agents: &[&AgentRecord]) {
    per_agent(
        out,
        agents,
        "drover_agent_stale_refused_total",
        "Jobs and cancels an agent refused because they carried an epoch below one it had seen (sent by a deposed controller).",
        |a| a.info.refused_stale,
    );
    per_agent(
        out,
        agents,
        "drover_agent_revoked_dropped_total",
        "Jobs an agent dropped when it took them because the controller had revoked them (their steps were aborted while they waited on their queues).",
        |a| a.info.revoked_dropped,
    );
}

fn seconds(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1000.0
}

/// What `/metrics` adds to the controller's counters.
pub fn render(
    runs: &[RunRecord],
    agents: &[AgentRecord],
    dead_letter_depth: Option<u32>,
    now: u64,
) -> String {
    let mut durations = Histogram::default();
    let mut latency = Histogram::default();
    let (mut warm, mut cold) = (0, 0);
    for run in runs {
        for step in &run.steps {
            for a in &step.attempts {
                match a.start {
                    Some(StartKind::Warm) => warm += 1,
                    Some(StartKind::Cold) => cold += 1,
                    None => {}
                }
                if let Some(started) = a.started_at {
                    latency.observe(step.queue.as_str(), seconds(a.queued_at, started));
                    if let (Some(ended), Some(outcome)) = (a.ended_at, a.outcome) {
                        let outcome = serde_json::to_value(outcome)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default();
                        durations.observe(&outcome, seconds(started, ended));
                    }
                }
            }
        }
    }
    let mut out = String::new();
    durations.render(
        &mut out,
        "drover_step_duration_seconds",
        "Run time of finished attempts (claim to end), by outcome.",
        "outcome",
        &DURATION_BUCKETS,
    );
    latency.render(
        &mut out,
        "drover_dispatch_latency_seconds",
        "Time from publishing an attempt to an agent claiming it, by queue.",
        "queue",
        &LATENCY_BUCKETS,
    );
    family(
        &mut out,
        "drover_python_starts_total",
        "counter",
        "Python function step attempts by how their process started: forked by a warm parent, or a new interpreter.",
        "start",
        [("warm", warm), ("cold", cold)].into_iter(),
    );
    let alive: Vec<&AgentRecord> = agents.iter().filter(|a| a.alive(now)).collect();
    let listed: Vec<&AgentRecord> = agents
        .iter()
        .filter(|a| !super::views::forgotten(a, now))
        .collect();
    let draining = alive.iter().filter(|a| a.info.draining).count() as u64;
    let states = [
        ("alive", alive.len() as u64 - draining),
        ("draining", draining),
        ("gone", listed.len().saturating_sub(alive.len()) as u64),
    ];
    family(
        &mut out,
        "drover_agents",
        "gauge",
        "Agents by state (gone: no heartbeat for 15 s; after an hour they are no longer counted).",
        "state",
        states.into_iter(),
    );
    warm_parents(&mut out, &listed);
    refused(&mut out, &listed);
    let slots: u64 = alive.iter().map(|a| u64::from(a.info.slots)).sum();
    let busy: u64 = alive.iter().map(|a| u64::from(a.info.busy)).sum();
    let _ = writeln!(
        out,
        "# HELP drover_agent_slots Step slots of live agents.\n# TYPE drover_agent_slots gauge\ndrover_agent_slots {slots}"
    );
    let _ = writeln!(
        out,
        "# HELP drover_agent_busy_slots Slots of live agents running a step.\n# TYPE drover_agent_busy_slots gauge\ndrover_agent_busy_slots {busy}"
    );
    if let Some(depth) = dead_letter_depth {
        let _ = writeln!(
            out,
            "# HELP drover_dead_letter_queue_messages Messages waiting in the dead-letter queue.\n# TYPE drover_dead_letter_queue_messages gauge\ndrover_dead_letter_queue_messages {depth}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::message::{AgentInfo, WarmParents};
    use drover_protocol::{AgentId, QueueName};

    #[test]
    fn histograms_are_cumulative_and_agents_counted() {
        let mut h = Histogram::default();
        for s in [0.05, 0.3, 2.0, 7200.0] {
            h.observe("succeeded", s);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help", "outcome", &DURATION_BUCKETS);
        assert!(
            out.contains("x_bucket{outcome=\"succeeded\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{outcome=\"succeeded\",le=\"5\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{outcome=\"succeeded\",le=\"3600\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{outcome=\"succeeded\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_count{outcome=\"succeeded\"} 4\n"), "{out}");

        let agent = |id: &str, last_seen: u64, busy: u32| AgentRecord {
            info: AgentInfo {
                id: AgentId::new(id).unwrap(),
                host: "h".into(),
                pid: 1,
                version: "v".into(),
                queues: vec![QueueName::new("default").unwrap()],
                slots: 2,
                busy,
                draining: false,
                cpus: 2,
                memory_mib: 4096,
                installer: None,
                warm_parents: WarmParents {
                    started: 3,
                    stopped: [("died".to_string(), 2)].into_iter().collect(),
                },
                refused_stale: busy.into(),
                revoked_dropped: 7,
            },
            last_seen,
        };
        let now = 100_000_000;
        let long_gone = now - super::super::views::AGENT_FORGOTTEN_MS;
        let text = render(
            &[],
            &[
                agent("a", now, 1),
                agent("b", now - 99_999, 2),
                agent("c", long_gone, 0),
            ],
            Some(3),
            now,
        );
        assert!(text.contains("drover_agents{state=\"alive\"} 1"), "{text}");
        assert!(text.contains("drover_agents{state=\"gone\"} 1"), "{text}");
        assert!(text.contains("drover_agent_slots 2\n"), "{text}");
        assert!(text.contains("drover_agent_busy_slots 1\n"), "{text}");
        assert!(
            text.contains("drover_dead_letter_queue_messages 3\n"),
            "{text}"
        );
        for start in ["warm", "cold"] {
            let line = format!("drover_python_starts_total{{start=\"{start}\"}} 0\n");
            assert!(text.contains(&line), "{text}");
        }
        assert!(
            text.contains("drover_warm_parent_starts_total{agent=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_agent_stale_refused_total{agent=\"b\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_agent_revoked_dropped_total{agent=\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_warm_parent_stops_total{agent=\"b\",reason=\"died\"} 2\n"),
            "{text}"
        );
        assert!(
            !text.contains("agent=\"c\""),
            "a forgotten agent is listed: {text}"
        );
    }
}
