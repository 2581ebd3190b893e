//! Agents on several hosts (network namespaces on this machine): a fan-out spread over six
//! agents, a host cut off mid-run, agents joining and draining mid-run; the active controller
//! cut off while a standby waits (`standby`).

mod net;
mod quorum;
mod standby;

use crate::faults::{attempts, ended, now_ms, step_status};
use crate::harness::Cluster;
use net::TestNet;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BROKER_PORT: u16 = 5672;

/// A controller with a stable address and a test network forwarding the broker and it.
fn cluster_with_hosts(hosts: usize) -> (Cluster, TestNet) {
    let mut c = Cluster::new().with_fixed_http();
    c.start_controller_with(&["controller".to_string()]);
    let http: u16 = c
        .http
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let net = TestNet::new(hosts, &[BROKER_PORT, http]);
    (c, net)
}

fn start_agent(c: &mut Cluster, net: &TestNet, host: usize, id: &str, extra: &[&str]) {
    let h = &net.hosts[host];
    c.start_agent_in(&h.netns, &h.gateway.to_string(), id, extra);
}

/// `n` independent steps running `cmd`, and one step after all of them.
fn fan_out(n: usize, cmd: &str) -> String {
    fan_out_with(n, cmd, "")
}

/// [`fan_out`] with extra settings on every step.
fn fan_out_with(n: usize, cmd: &str, settings: &str) -> String {
    let mut toml = "[pipeline]\nname = \"fan\"\n".to_string();
    for i in 0..n {
        toml.push_str(&format!(
            "[[step]]\nname = \"w{i}\"\ncommand = [\"sh\", \"-c\", {cmd:?}]\n{settings}"
        ));
    }
    let parents: Vec<String> = (0..n).map(|i| format!("\"w{i}\"")).collect();
    toml.push_str(&format!(
        "[[step]]\nname = \"join\"\ncommand = [\"true\"]\nparents = [{}]\n",
        parents.join(", ")
    ));
    toml
}

/// Agent of each step's single successful attempt; fails if any step ran other than once.
fn once_each(doc: &Value) -> BTreeMap<String, String> {
    let mut by_step = BTreeMap::new();
    for step in doc["steps"].as_array().expect("steps") {
        let name = step["name"].as_str().unwrap_or("").to_string();
        let tries = attempts(doc, &name);
        assert_eq!(
            tries.len(),
            1,
            "{name} ran {} times: {tries:?}",
            tries.len()
        );
        assert_eq!(tries[0].1, "succeeded", "{name}: {tries:?}");
        by_step.insert(name, tries[0].0.clone());
    }
    by_step
}

fn run_to_end(c: &Cluster, file: &std::path::Path, limit: Duration) -> (Value, Duration) {
    let started = Instant::now();
    let run = c.submit(file);
    let doc = c.wait_for(&run, "the run to end", limit, ended);
    (doc, started.elapsed())
}

#[test]
fn a_fan_out_spreads_over_six_agents_on_three_hosts() {
    let (mut c, net) = cluster_with_hosts(3);
    // CPU-bound steps, ~20 ms of arithmetic each.
    let work = "awk 'BEGIN { for (i = 0; i < 200000; i++) s += i; print s }' > out.txt";
    let file = c.pipeline("fan.toml", &fan_out(1000, work));

    let one_slot = ["--concurrency", "1"];
    start_agent(&mut c, &net, 0, "h0-a0", &one_slot);
    let (doc, one) = run_to_end(&c, &file, Duration::from_secs(300));
    assert_eq!(
        doc["status"],
        "succeeded",
        "{}",
        c.process_log("controller")
    );
    once_each(&doc);

    for (host, id) in [
        (0, "h0-a1"),
        (1, "h1-a0"),
        (1, "h1-a1"),
        (2, "h2-a0"),
        (2, "h2-a1"),
    ] {
        start_agent(&mut c, &net, host, id, &one_slot);
    }
    // Every agent identifies itself: host, queues, slots and machine size.
    let agents = crate::harness::wait_until("six agents listed", Duration::from_secs(20), || {
        let doc = c.json(&["agents", "--json"]);
        let list = doc["agents"].as_array()?.clone();
        (list.iter().filter(|a| a["alive"] == true).count() == 6).then_some(list)
    });
    for a in &agents {
        assert_eq!(a["queues"], serde_json::json!(["default"]), "{a}");
        assert!(
            a["slots"].as_u64() == Some(1) && a["cpus"].as_u64() > Some(0),
            "{a}"
        );
        assert!(
            a["memory_mib"].as_u64() > Some(0) && a["host"].as_str().is_some(),
            "{a}"
        );
    }
    let table = c.drover(&["agents"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("h2-a1"));
    let file = c.pipeline("fan2.toml", &fan_out(1000, &format!("{work}; echo again")));
    let (doc, six) = run_to_end(&c, &file, Duration::from_secs(300));
    assert_eq!(
        doc["status"],
        "succeeded",
        "{}",
        c.process_log("controller")
    );
    let by_step = once_each(&doc);
    let mut per_agent: BTreeMap<&str, usize> = BTreeMap::new();
    for agent in by_step.values() {
        *per_agent.entry(agent.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_agent.len(),
        6,
        "not every agent ran a step: {per_agent:?}"
    );
    eprintln!(
        "1000 CPU-bound steps on 3 hosts: 1 agent {:.1}s, 6 agents {:.1}s, speed-up {:.2}x on {} cores; steps per agent {per_agent:?}",
        one.as_secs_f64(),
        six.as_secs_f64(),
        one.as_secs_f64() / six.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

#[test]
fn a_cut_off_hosts_steps_run_elsewhere_and_its_late_results_are_fenced() {
    let (mut c, net) = cluster_with_hosts(2);
    start_agent(&mut c, &net, 0, "cut", &["--concurrency", "2"]);
    // The steps' 8 s are the workload: they outlast the cut and the 3 s lease.
    let file = c.pipeline(
        "long.toml",
        &fan_out_with(
            2,
            "sleep 8; echo done > out.txt",
            "retries = 1\nretry_backoff = \"0s\"\n",
        ),
    );
    let run = c.submit(&file);
    c.wait_for(
        &run,
        "both steps to run on the first host",
        Duration::from_secs(30),
        |d| step_status(d, "w0") == "running" && step_status(d, "w1") == "running",
    );
    start_agent(&mut c, &net, 1, "spare", &["--concurrency", "2"]);

    let cut_at = now_ms();
    net.set_link(0, false);
    let doc = c.wait_for(
        &run,
        "both steps to run again elsewhere",
        Duration::from_secs(30),
        |d| {
            ["w0", "w1"].iter().all(|s| {
                let tries = attempts(d, s);
                tries.len() == 2 && tries[1].0 == "spare" && step_status(d, s) == "running"
            })
        },
    );
    let moved_after = ["w0", "w1"]
        .iter()
        .filter_map(|s| Cluster::step(&doc, s)["attempts"][1]["started_at"].as_u64())
        .max()
        .unwrap_or(0)
        .saturating_sub(cut_at);

    net.set_link(0, true);
    // The cut agent stops its stale attempts itself once their lease has run out (fencing);
    // one still running when it is back online is reported and it is told to stop it.
    crate::harness::wait_until(
        "the cut agent to stop its stale attempts",
        Duration::from_secs(20),
        || {
            let log = c.process_log("cut");
            let stopped = log.matches("cancelling").count() + log.matches("fencing").count();
            (stopped >= 2).then_some(())
        },
    );
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    for s in ["w0", "w1"] {
        let tries = attempts(&doc, s);
        assert_eq!(
            tries[0],
            ("cut".to_string(), "lost".to_string()),
            "{s}: {tries:?}"
        );
        assert_eq!(
            tries[1],
            ("spare".to_string(), "succeeded".to_string()),
            "{s}: {tries:?}"
        );
        assert_eq!(tries.len(), 2, "{s}: {tries:?}");
    }
    eprintln!(
        "host cut off (lease 3s): its steps started elsewhere {moved_after} ms after the cut"
    );
}

#[test]
fn agents_join_and_drain_mid_run_without_losing_steps() {
    let (mut c, net) = cluster_with_hosts(3);
    start_agent(&mut c, &net, 0, "first", &["--concurrency", "2"]);
    // Each step's 0.1 s is the workload: the run is still going when agents join and drain.
    let file = c.pipeline("fan.toml", &fan_out(150, "sleep 0.1; echo x > out.txt"));
    let run = c.submit(&file);
    let done = |d: &Value| {
        d["steps"].as_array().map_or(0, |s| {
            s.iter().filter(|s| s["status"] == "succeeded").count()
        })
    };
    c.wait_for(&run, "30 steps done", Duration::from_secs(60), |d| {
        done(d) >= 30
    });
    start_agent(&mut c, &net, 1, "joined-1", &["--concurrency", "2"]);
    start_agent(&mut c, &net, 2, "joined-2", &["--concurrency", "2"]);
    c.wait_for(&run, "80 steps done", Duration::from_secs(60), |d| {
        done(d) >= 80
    });
    c.signal("first", nix::sys::signal::Signal::SIGTERM);
    let status = c.wait_exit("first", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", c.process_log("first"));
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(120), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let by_step = once_each(&doc);
    for agent in ["first", "joined-1", "joined-2"] {
        assert!(by_step.values().any(|a| a == agent), "{agent} ran nothing");
    }
}
