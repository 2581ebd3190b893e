//! Queues and agents: step priority, per-queue limits on an agent, the order in which an agent
//! serves its queues (first with work, or in turn), services mode, and the jobs of aborted
//! steps that are still queued.
//!
//! Steps append their name (and times) to one file in the test's directory, so the file holds
//! the order the agent ran them in.

use crate::harness::{Cluster, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A step that appends `name` to `log` after an optional pause.
fn step(name: &str, queue: &str, log: &Path, extra: &str) -> String {
    format!(
        "[[step]]\nname = \"{name}\"\nqueue = \"{queue}\"\ncommand = [\"sh\", \"-c\", \"echo {name} >> {}\"]\n{extra}\n",
        log.display()
    )
}

/// A step that logs `start NAME <ns>`, sleeps (the workload: steps overlap or not, as the limits
/// allow), then logs `end NAME <ns>`.
fn timed_step(name: &str, queue: &str, log: &Path, seconds: &str) -> String {
    format!(
        "[[step]]\nname = \"{name}\"\nqueue = \"{queue}\"\ncommand = [\"sh\", \"-c\", \"echo start {name} $(date +%s%N) >> {log}; sleep {seconds}; echo end {name} $(date +%s%N) >> {log}\"]\n",
        log = log.display()
    )
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `queue`'s entry in the controller's queue list, asked for by name so that it is listed
/// before any step uses it.
fn queue_view(c: &Cluster, queue: &str) -> Option<Value> {
    let doc: Value =
        serde_json::from_str(&c.http_get(&format!("/api/v1/queues?queue={queue}"))).ok()?;
    doc["queues"]
        .as_array()?
        .iter()
        .find(|q| q["name"] == queue)
        .cloned()
}

/// Waits until `queue` holds `n` ready jobs (published, no agent yet).
fn wait_for_depth(c: &Cluster, queue: &str, n: u64) {
    wait_until(
        &format!("{n} jobs on {queue}"),
        Duration::from_secs(20),
        || (queue_view(c, queue)?["messages"].as_u64() == Some(n)).then_some(()),
    );
}

/// A pipeline `name` of `n` short steps on `default` (`d000`, `d001`, ...), each logging its
/// name to `log`; with the names.
fn short_steps(name: &str, n: usize, log: &Path) -> (String, Vec<String>) {
    let mut toml = format!("[pipeline]\nname = \"{name}\"\n");
    let names: Vec<String> = (0..n).map(|i| format!("d{i:03}")).collect();
    for step_name in &names {
        toml += &step(step_name, "default", log, "");
    }
    (toml, names)
}

fn controller_only() -> (Cluster, PathBuf) {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    let log = c.dir.path().join("order.log");
    (c, log)
}

fn succeeded(c: &Cluster, run: &str) -> Value {
    let doc = c.wait_for(run, "the run to end", Duration::from_secs(60), |d| {
        d["status"] != "running"
    });
    assert_eq!(doc["status"], "succeeded", "{doc}");
    doc
}

#[test]
fn higher_priority_steps_run_first() {
    let (mut c, log) = controller_only();
    let mut toml = "[pipeline]\nname = \"prio\"\n".to_string();
    for (name, priority) in [
        ("p0a", 0),
        ("p9a", 9),
        ("p5a", 5),
        ("p0b", 0),
        ("p9b", 9),
        ("p5b", 5),
    ] {
        toml += &step(name, "default", &log, &format!("priority = {priority}"));
    }
    let run = c.submit(&c.pipeline("prio.toml", &toml));
    wait_for_depth(&c, "default", 6);
    c.start_agent_with("a1", &["default"], &["--concurrency", "1"]);
    succeeded(&c, &run);
    // Same priority: first published, first run.
    assert_eq!(lines(&log), ["p9a", "p9b", "p5a", "p5b", "p0a", "p0b"]);
}

/// A step that logs its name, then waits until `open` exists.
fn gated_step(name: &str, log: &Path, open: &Path, extra: &str) -> String {
    format!(
        "[[step]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo {name} >> {}; until [ -e {} ]; do sleep 0.02; done\"]\n{extra}\n",
        log.display(),
        open.display()
    )
}

/// Submits a gate step (priority 5) and the `others` (priority 0), starts agent `a1` with one
/// slot once all are queued, and waits until it runs the gate with the others still queued:
/// a busy agent holds none of them.
fn busy_agent(c: &mut Cluster, log: &Path, open: &Path, others: &[&str]) -> String {
    let mut toml = "[pipeline]\nname = \"busy\"\n".to_string();
    toml += &gated_step("gate", log, open, "priority = 5");
    for name in others {
        toml += &step(name, "default", log, "priority = 0");
    }
    let run = c.submit(&c.pipeline("busy.toml", &toml));
    wait_for_depth(c, "default", 1 + others.len() as u64);
    c.start_agent_with("a1", &["default"], &["--concurrency", "1"]);
    wait_until("the gate step to start", Duration::from_secs(30), || {
        lines(log).contains(&"gate".to_string()).then_some(())
    });
    wait_for_depth(c, "default", others.len() as u64);
    run
}

#[test]
fn a_job_with_a_higher_priority_overtakes_those_waiting_for_a_busy_agent() {
    let (mut c, log) = controller_only();
    let open = c.dir.path().join("open");
    let busy = busy_agent(&mut c, &log, &open, &["p0a", "p0b", "p0c"]);
    let toml = format!(
        "[pipeline]\nname = \"late\"\n{}",
        step("p9", "default", &log, "priority = 9")
    );
    let late = c.submit(&c.pipeline("late.toml", &toml));
    wait_for_depth(&c, "default", 4);
    std::fs::write(&open, "").unwrap();
    succeeded(&c, &busy);
    succeeded(&c, &late);
    assert_eq!(lines(&log), ["gate", "p9", "p0a", "p0b", "p0c"]);
}

#[test]
fn an_idle_agent_gets_the_jobs_a_full_one_cannot_start() {
    let (mut c, log) = controller_only();
    let open = c.dir.path().join("open");
    let run = busy_agent(&mut c, &log, &open, &["w1", "w2"]);
    c.start_agent_with("a2", &["default"], &["--concurrency", "1"]);
    // The gate still holds a1's only slot, so these ran on a2.
    wait_until(
        "the queued steps to run on a2",
        Duration::from_secs(30),
        || {
            let done = lines(&log);
            (done.contains(&"w1".to_string()) && done.contains(&"w2".to_string())).then_some(())
        },
    );
    assert_eq!(lines(&log)[0], "gate");
    std::fs::write(&open, "").unwrap();
    succeeded(&c, &run);
}

/// Runs `n` short steps (`d000`, `d001`, ...) queued before agent `a1` with `slots` slots
/// starts, to success; returns the log of their names in the order they ran, the run's view,
/// and the names.
fn deep_queue_run(n: usize, slots: &str) -> (Vec<String>, Value, Vec<String>) {
    let (mut c, log) = controller_only();
    let (toml, names) = short_steps("deep", n, &log);
    let run = c.submit(&c.pipeline("deep.toml", &toml));
    wait_for_depth(&c, "default", n as u64);
    c.start_agent_with("a1", &["default"], &["--concurrency", slots]);
    let doc = succeeded(&c, &run);
    let agent = c.process_log("a1");
    assert!(agent.contains("claiming jobs of default ahead"), "{agent}");
    (lines(&log), doc, names)
}

/// A deep queue of short steps: once a step has ended quickly, the full agent claims the next
/// job ahead of a free slot; every step still runs exactly once, in the queue's order.
#[test]
fn short_steps_on_a_deep_queue_are_claimed_ahead_and_each_runs_once() {
    let (ran, _, names) = deep_queue_run(30, "1");
    // One slot: the steps ran one after another, first published first.
    assert_eq!(ran, names);
}

/// Two slots on a deep queue of short steps: jobs are claimed ahead two `basic.get`s at a time,
/// each on a channel of its own; every step still runs exactly once, and every attempt is the
/// first.
#[test]
fn short_steps_claimed_ahead_by_two_slots_each_run_once() {
    let (mut ran, doc, names) = deep_queue_run(120, "2");
    ran.sort();
    assert_eq!(ran, names);
    for name in &names {
        let attempts = Cluster::step(&doc, name)["attempts"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(attempts, 1, "{name}: {doc}");
    }
}

/// An agent idle on an empty queue waits on a consumer. When a deep run arrives, the consumer's
/// first job sends the agent back to `basic.get`, whose claims run side by side: the agent
/// fills its slots and claims ahead, as if the queue had been deep before it started, instead
/// of claiming one consumer delivery at a time without ever filling up. Every step runs once.
#[test]
fn an_idle_agent_takes_a_deep_queue_that_arrives_as_if_it_had_been_there() {
    let (mut c, log) = controller_only();
    c.start_agent_with("a1", &["default"], &["--concurrency", "8"]);
    wait_until("the agent's consumer", Duration::from_secs(20), || {
        (queue_view(&c, "default")?["consumers"].as_u64() == Some(1)).then_some(())
    });
    let (toml, names) = short_steps("arriving", 400, &log);
    let run = c.submit(&c.pipeline("arriving.toml", &toml));
    succeeded(&c, &run);
    let agent = c.process_log("a1");
    assert!(agent.contains("claiming jobs of default ahead"), "{agent}");
    let mut ran = lines(&log);
    ran.sort();
    assert_eq!(ran, names);
}

/// A job claimed ahead holds no slot yet; aborted while it waits for one, its program never
/// starts, and it ends at once, not when the step holding the slot does.
#[test]
fn a_job_claimed_ahead_and_aborted_while_waiting_for_a_slot_never_starts() {
    let (mut c, log) = controller_only();
    let mut toml = "[pipeline]\nname = \"deep\"\n".to_string();
    for i in 0..30 {
        let name = format!("d{i:02}");
        toml += &match i {
            // Holds the only slot while the job after it waits.
            10 => format!(
                "[[step]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo {name} >> {}; sleep 60\"]\n",
                log.display()
            ),
            _ => step(&name, "default", &log, ""),
        };
    }
    let run = c.submit(&c.pipeline("deep.toml", &toml));
    wait_for_depth(&c, "default", 30);
    c.start_agent_with("a1", &["default"], &["--concurrency", "1"]);
    c.wait_for(&run, "d11 claimed ahead", Duration::from_secs(30), |d| {
        Cluster::step(d, "d11")["status"] == "running"
    });
    let out = c.drover(&["abort", &run, "d11"]);
    assert!(out.status.success(), "{out:?}");
    let doc = c.wait_for(&run, "d11 to end", Duration::from_secs(20), |d| {
        Cluster::step(d, "d11")["status"] != "running"
    });
    let d11 = Cluster::step(&doc, "d11");
    assert_eq!(d11["status"], "aborted", "{d11}");
    assert_eq!(
        d11["attempts"][0]["message"], "aborted before it started",
        "{d11}"
    );
    assert_eq!(Cluster::step(&doc, "d10")["status"], "running", "{doc}");
    let ran = lines(&log);
    assert_eq!(ran.last().map(String::as_str), Some("d10"), "{ran:?}");
    let out = c.drover(&["abort", &run]);
    assert!(out.status.success(), "{out:?}");
    c.wait_for(&run, "the run to end", Duration::from_secs(30), |d| {
        d["status"] == "aborted"
    });
    assert!(!lines(&log).iter().any(|n| n == "d11"), "{:?}", lines(&log));
}

/// A run whose step waits for the file `go`, and the log its steps write their names to.
struct Held {
    c: Cluster,
    log: PathBuf,
    go: PathBuf,
    run: String,
}

/// Submits `n` steps `d00`, `d01`, ... on `default`, each appending its name to the log, then
/// sleeping `pause` seconds; step `hold` instead waits for `go`. Returns once they are all
/// queued and an agent (`a1`, one slot) started and runs `hold`.
fn held_run(n: usize, hold: usize, pause: &str) -> Held {
    let (mut c, log) = controller_only();
    let go = c.dir.path().join("go");
    let mut toml = "[pipeline]\nname = \"held\"\n".to_string();
    for i in 0..n {
        let name = format!("d{i:02}");
        let then = if i == hold {
            format!("while [ ! -e {} ]; do sleep 0.05; done", go.display())
        } else {
            format!("sleep {pause}")
        };
        toml += &format!(
            "[[step]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo {name} >> {}; {then}\"]\n",
            log.display()
        );
    }
    let run = c.submit(&c.pipeline("held.toml", &toml));
    wait_for_depth(&c, "default", n as u64);
    c.start_agent_with("a1", &["default"], &["--concurrency", "1"]);
    let held = format!("d{hold:02}");
    wait_until(&format!("{held} to run"), Duration::from_secs(30), || {
        lines(&log).contains(&held).then_some(())
    });
    Held { c, log, go, run }
}

/// A whole run aborted while jobs of it wait on their queue: every agent is told (`Revoke`),
/// so the agent that takes those jobs later drops them and none of their programs runs.
#[test]
fn the_queued_jobs_of_an_aborted_run_never_start() {
    let Held { c, log, run, .. } = held_run(30, 5, "0");
    let out = c.drover(&["abort", &run]);
    assert!(out.status.success(), "{out:?}");
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(30), |d| {
        d["status"] != "running"
    });
    assert_eq!(doc["status"], "aborted", "{doc}");
    // The agent takes what is left on the queue, one job at a time.
    wait_for_depth(&c, "default", 0);
    let ran: Vec<String> = (0..=5).map(|i| format!("d{i:02}")).collect();
    assert_eq!(lines(&log), ran, "{}", c.process_log("a1"));
    assert!(c.process_log("a1").contains("the controller revoked it"));
    // Counted, and carried by the agent's heartbeat to the controller's `/metrics`: every job
    // left but those that may have been claimed ahead of the one slot, at most eight (stopped
    // before they started instead).
    let at_least = 30 - ran.len() - 8;
    wait_until("the drops in /metrics", Duration::from_secs(15), || {
        let metrics = c.http_get("/metrics");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("drover_agent_revoked_dropped_total{agent=\"a1\"}"))?;
        (line.rsplit(' ').next()?.parse::<usize>().ok()? >= at_least).then_some(())
    });
}

/// One queued step aborted: its job is dropped when an agent takes it, and the rest of the run
/// goes on. Its steps take longer than a claim's round trip, so no job is claimed ahead (a job
/// claimed ahead waits at its gate long enough for the controller's refusal anyway).
#[test]
fn the_queued_job_of_an_aborted_step_never_starts() {
    let Held { c, log, go, run } = held_run(12, 3, "0.2");
    let out = c.drover(&["abort", &run, "d08"]);
    assert!(out.status.success(), "{out:?}");
    c.wait_for(&run, "d08 to end", Duration::from_secs(10), |d| {
        Cluster::step(d, "d08")["status"] == "aborted"
    });
    std::fs::write(&go, "").unwrap();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), |d| {
        d["status"] != "running"
    });
    let ran: Vec<String> = (0..12)
        .filter(|i| *i != 8)
        .map(|i| format!("d{i:02}"))
        .collect();
    let agent = c.process_log("a1");
    assert_eq!(lines(&log), ran, "{doc}\n{agent}");
    // Dropped when taken, not started and then stopped by the refusal of its claim (which
    // may kill its program before it writes a line).
    assert!(
        agent.contains("/d08 attempt 1: the controller revoked it"),
        "{agent}"
    );
    for name in &ran {
        assert_eq!(Cluster::step(&doc, name)["status"], "succeeded", "{doc}");
    }
}

#[test]
fn a_priority_out_of_range_is_rejected_at_submit() {
    let c = Cluster::new();
    let file = c.pipeline(
        "bad.toml",
        "[pipeline]\nname = \"bad\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\npriority = 12\n",
    );
    let out = c.drover(&["run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("priority 12 is out of range"), "{stderr}");
}

/// `(name, start, end)` of every step in a timed log.
fn intervals(log: &Path) -> Vec<(String, u128, u128)> {
    let mut starts = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for line in lines(log) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, name, at] = parts[..] else {
            panic!("bad line {line:?}")
        };
        let at: u128 = at.parse().unwrap();
        match what {
            "start" => {
                starts.insert(name.to_string(), at);
            }
            _ => out.push((name.to_string(), starts[name], at)),
        }
    }
    out.sort_by_key(|(_, start, _)| *start);
    out
}

fn overlap(a: &(String, u128, u128), b: &(String, u128, u128)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

#[test]
fn a_queue_limit_caps_that_queue_while_other_queues_use_the_free_slots() {
    let (mut c, log) = controller_only();
    c.start_agent_with("a1", &["gpu:1", "cpu"], &["--concurrency", "4"]);
    let mut toml = "[pipeline]\nname = \"limits\"\n".to_string();
    for i in 1..=3 {
        toml += &timed_step(&format!("gpu{i}"), "gpu", &log, "0.6");
        toml += &timed_step(&format!("cpu{i}"), "cpu", &log, "0.6");
    }
    let run = c.submit(&c.pipeline("limits.toml", &toml));
    succeeded(&c, &run);
    let all = intervals(&log);
    assert_eq!(all.len(), 6, "{all:?}");
    let (gpu, cpu): (Vec<_>, Vec<_>) = all.iter().partition(|(n, _, _)| n.starts_with("gpu"));
    for (i, a) in gpu.iter().enumerate() {
        for b in &gpu[i + 1..] {
            assert!(!overlap(a, b), "gpu steps ran together: {a:?} {b:?}");
        }
    }
    // The limit is the queue's, not the agent's: cpu steps ran beside a gpu step.
    assert!(
        cpu.iter().any(|c| gpu.iter().any(|g| overlap(c, g))),
        "{all:?}"
    );
    let agents = c.json(&["agents", "--json"]);
    assert_eq!(agents["agents"][0]["slots"], 4, "{agents}");
}

/// Publishes three steps on each of `first` and `second` (interleaved), then starts one agent
/// with one slot serving `first`, then `second`, and returns the order they ran in.
fn run_two_queues(extra: &[&str]) -> Vec<String> {
    let (mut c, log) = controller_only();
    let mut toml = "[pipeline]\nname = \"order\"\n".to_string();
    for i in 1..=3 {
        toml += &step(&format!("s{i}"), "second", &log, "");
        toml += &step(&format!("f{i}"), "first", &log, "");
    }
    let run = c.submit(&c.pipeline("order.toml", &toml));
    c.queues.extend(["first".to_string(), "second".to_string()]);
    wait_for_depth(&c, "first", 3);
    wait_for_depth(&c, "second", 3);
    let mut args = vec!["--concurrency", "1"];
    args.extend_from_slice(extra);
    c.start_agent_with("a1", &["first", "second"], &args);
    succeeded(&c, &run);
    lines(&log)
}

#[test]
fn an_agent_takes_work_from_its_first_queue_with_work() {
    assert_eq!(run_two_queues(&[]), ["f1", "f2", "f3", "s1", "s2", "s3"]);
}

#[test]
fn with_order_fairness_the_queues_take_turns() {
    assert_eq!(
        run_two_queues(&["--order-fairness"]),
        ["f1", "s1", "f2", "s2", "f3", "s3"]
    );
}

#[test]
fn services_mode_runs_every_job_at_once_whatever_the_concurrency() {
    let (mut c, log) = controller_only();
    c.start_agent_with(
        "svc",
        &["default"],
        &["--services-mode", "--concurrency", "1"],
    );
    let stop = c.dir.path().join("stop");
    let mut toml = "[pipeline]\nname = \"services\"\n".to_string();
    for i in 1..=3 {
        toml += &format!(
            "[[step]]\nname = \"svc{i}\"\ncommand = [\"sh\", \"-c\", \"echo svc{i} >> {log}; while [ ! -f {stop} ]; do sleep 0.1; done\"]\n",
            log = log.display(),
            stop = stop.display()
        );
    }
    let run = c.submit(&c.pipeline("services.toml", &toml));
    c.wait_for(
        &run,
        "all three long-lived steps to run",
        Duration::from_secs(30),
        |d| {
            ["svc1", "svc2", "svc3"]
                .iter()
                .all(|s| Cluster::step(d, s)["status"] == "running")
        },
    );
    wait_until("all three to have started", Duration::from_secs(10), || {
        (lines(&log).len() == 3).then_some(())
    });
    // Heartbeats (every 2 s) carry the counts: 0 slots (no limit), 3 busy.
    wait_until("a heartbeat with 3 busy", Duration::from_secs(10), || {
        let agents = c.json(&["agents", "--json"]);
        let agent = &agents["agents"][0];
        let counts = (agent["slots"].as_u64(), agent["busy"].as_u64());
        (counts == (Some(0), Some(3))).then_some(())
    });
    let table = c.drover(&["agents"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("3/unlimited"),
        "{}",
        crate::harness::text(&table)
    );
    // What KEDA scales on: running steps count, though they have left the broker's queue.
    let queues = c.json(&["queues", "--json"]);
    let default = queues["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "default"))
        .unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(
        (
            &default["messages"],
            &default["running_steps"],
            &default["active_steps"]
        ),
        (&0.into(), &3.into(), &3.into()),
        "{queues}"
    );
    // A queue no step used yet is listed when asked for, with zeros (KEDA's query for a
    // Deployment at zero must find a number).
    let unused: Value = serde_json::from_str(&c.http_get("/api/v1/queues?queue=unused")).unwrap();
    let entry = unused["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "unused"))
        .unwrap_or_else(|| panic!("{unused}"));
    assert_eq!(entry["active_steps"], 0, "{unused}");
    std::fs::write(&stop, b"").unwrap();
    succeeded(&c, &run);
}

#[test]
fn python_steps_take_their_priority_from_the_sdk() {
    let (mut c, log) = controller_only();
    let code = format!(
        r#"
from drover import PipelineController

def mark(name, log):
    with open(log, "a") as f:
        f.write(name + "\n")

pipe = PipelineController(name="prio", project="e2e", version="1")
pipe.set_default_execution_queue("default")
for name, priority in [("p0", None), ("p9", 9), ("p5", 5)]:
    pipe.add_function_step(name=name, function=mark, priority=priority,
                           function_kwargs=dict(name=name, log={log:?}))
pipe.start(wait=False)
"#,
        log = log.display().to_string()
    );
    // A file, not -c: the SDK ships each function's source, which it reads from the file.
    let script = c.dir.path().join("prio.py");
    std::fs::write(&script, code).unwrap();
    let out = c.python(&[script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::harness::text(&out));
    wait_for_depth(&c, "default", 3);
    c.start_agent_with("a1", &["default"], &["--concurrency", "1"]);
    let out = c.drover(&["wait", "latest"]);
    assert!(out.status.success(), "{}", crate::harness::text(&out));
    assert_eq!(lines(&log), ["p9", "p5", "p0"]);
}

#[test]
fn a_controller_queue_limit_holds_across_agents_and_runs() {
    let mut c = Cluster::new();
    c.start_controller_with(&[
        "controller".to_string(),
        "--queue-limit".into(),
        "gpu=1".into(),
    ]);
    c.start_agent_with("a1", &["gpu"], &["--concurrency", "2"]);
    c.start_agent_with("a2", &["gpu"], &["--concurrency", "2"]);
    let log = c.dir.path().join("timed.log");
    let mut runs = Vec::new();
    for r in 0..2 {
        let mut toml = format!("[pipeline]\nname = \"limited{r}\"\n");
        for i in 1..=2 {
            toml += &timed_step(&format!("r{r}s{i}"), "gpu", &log, "0.5");
        }
        runs.push(c.submit(&c.pipeline(&format!("limited{r}.toml"), &toml)));
    }
    for run in &runs {
        succeeded(&c, run);
    }
    let all = intervals(&log);
    assert_eq!(all.len(), 4, "{all:?}");
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(
                !overlap(a, b),
                "two gpu steps ran at once on 4 free slots: {a:?} {b:?}"
            );
        }
    }
}
