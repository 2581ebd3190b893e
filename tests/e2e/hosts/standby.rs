//! The active controller cut off from the broker (its host's link down) while a standby waits
//! on this machine's own network: the broker drops the silent connection after its heartbeats,
//! the standby takes over and finishes the run. The cut-off controller, asked meanwhile from its
//! own host, answers reads saying they may be stale and refuses to run the run again (503,
//! `x-drover-inactive: disconnected`); once the link returns every reconnect is refused the
//! lock, and it stops. The jobs it had queued before the cut are removed by the new controller, which
//! publishes those steps again with its epoch; every step's command ran exactly once.

use super::net::TestNet;
use crate::faults::{attempts, ended, step_status};
use crate::harness::{AMQP_URL, Cluster, Store, wait_until};
use drover_amqp::Broker;
use drover_protocol::{Names, QueueName};
use drover_test_support::process::ChildProcess;
use drover_test_support::ready;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The AMQP heartbeat every process of the test asks for (10 s unless a URL says otherwise):
/// the broker drops a connection it has not heard from within about two of them, which bounds
/// how soon the standby can take the lock. 2 s keeps the test short; `DROVER_TEST_HEARTBEAT=10`
/// measures the takeover at drover's default, the waits below growing with it.
fn heartbeat_secs() -> u16 {
    std::env::var("DROVER_TEST_HEARTBEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&secs| secs > 0)
        .unwrap_or(2)
}

/// How long to wait for what takes `beats` heartbeats, and at least 30 s.
fn beats(beats: u64) -> Duration {
    Duration::from_secs((beats * u64::from(heartbeat_secs())).max(30))
}
const BROKER_PORT: u16 = 5672;
const JOURNAL: [&str; 3] = ["controller", "--state-journal", "stream"];

/// `first` (highest priority, running until `go` exists), `k` and `j` queued behind it on a
/// one-slot agent, and `last` after all three; each step appends its name to `ran`.
fn pipeline(ran: &Path, go: &Path) -> String {
    let ran = ran.display();
    let step = |name: &str, extra: &str, script: String| {
        format!("[[step]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", {script:?}]\n{extra}")
    };
    let mut toml = "[pipeline]\nname = \"partition\"\n".to_string();
    toml += &step(
        "first",
        "priority = 9\n",
        format!(
            "echo first >> {ran}; while [ ! -e {} ]; do sleep 0.1; done",
            go.display()
        ),
    );
    toml += &step("k", "priority = 5\n", format!("echo k >> {ran}; sleep 1"));
    toml += &step("j", "", format!("echo j >> {ran}"));
    toml += &step(
        "last",
        "parents = [\"first\", \"k\", \"j\"]\n",
        format!("echo last >> {ran}"),
    );
    toml
}

/// Messages waiting in the namespace's `default` job queue.
fn queued_jobs(c: &Cluster) -> u32 {
    let names = Names::new(&c.ns).expect("namespace");
    let queue = names.user_queue(&QueueName::new("default").expect("queue"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = Broker::connect(AMQP_URL, names, "test")
            .await
            .expect("broker");
        let stats = broker.queue_stats(&queue).await.expect("queue stats");
        broker.close().await;
        stats.map_or(0, |s| s.messages)
    })
}

/// How many times each step's command ran, from the lines of `ran`.
fn runs_per_step(ran: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(ran).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn a_cut_off_controller_is_replaced_by_the_standby_and_stops_without_publishing() {
    let mut c = Cluster::on(Store::S3);
    c.amqp = format!("{AMQP_URL}?heartbeat={}", heartbeat_secs());
    let moto_port: u16 = c
        .moto
        .as_ref()
        .and_then(|m| m.endpoint().rsplit(':').next()?.parse().ok())
        .expect("moto's port");
    let net = TestNet::new(1, &[BROKER_PORT, moto_port]);
    let host = &net.hosts[0];

    // The agent first, so that its jobs name no controller address of their own.
    c.start_agent_with("x", &["default"], &["--concurrency", "1"]);
    let data = c.dir.path().join("active");
    let mut cmd = c.command_in(&host.netns, &host.gateway.to_string());
    cmd.args(JOURNAL).arg("--data-dir").arg(&data).args([
        "--http",
        &format!("{}:8080", host.address),
        "--allow-unauthenticated",
        "--lease",
        "3s",
    ]);
    let mut active = ChildProcess::spawn("active", cmd, &c.dir.path().join("active.log"))
        .expect("spawn the active controller");
    c.url = wait_until(
        "the active controller's URL",
        Duration::from_secs(30),
        || active.alive_and(ready::controller_url(&data)),
    );
    let active_url = c.url.clone();

    let standby_data = c.dir.path().join("standby");
    let port = ready::free_port().expect("a free port");
    let mut cmd = c.command();
    cmd.args(JOURNAL)
        .arg("--data-dir")
        .arg(&standby_data)
        .args(["--http", &format!("127.0.0.1:{port}"), "--lease", "3s"]);
    let mut standby = ChildProcess::spawn("standby", cmd, &c.dir.path().join("standby.log"))
        .expect("spawn the standby");
    wait_until("the standby to stand by", Duration::from_secs(30), || {
        standby.alive_and(
            standby
                .output()
                .contains("standing by: this controller is a standby"),
        )
    });

    let ran = c.dir.path().join("ran");
    let go = c.dir.path().join("go");
    let file = c.pipeline("partition.toml", &pipeline(&ran, &go));
    let run = c.submit(&file);
    c.wait_for(&run, "first to run", Duration::from_secs(30), |d| {
        step_status(d, "first") == "running"
    });
    wait_until(
        "k and j queued behind first",
        Duration::from_secs(10),
        || (queued_jobs(&c) == 2).then_some(()),
    );

    let cut = Instant::now();
    net.set_link(0, false);
    // From its own host, the cut-off controller answers reads, saying they may be stale, once
    // it has noticed its broker connection gone (two missed heartbeats) ...
    let on_its_host = || {
        let mut cmd = c.command_in(&host.netns, &host.gateway.to_string());
        cmd.env("DROVER_URL", &active_url);
        cmd
    };
    wait_until("the cut-off controller to notice", beats(6), || {
        let out = on_its_host()
            .args(["status", &run, "--json"])
            .output()
            .expect("drover status");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        said.contains("has lost its broker connection")
            .then_some(())
    });
    let noticed = cut.elapsed();
    // ... and refuses to run the run again, with the header that sends clients to the next
    // controller: nothing is accepted that it could not act on.
    let out = on_its_host()
        .args(["rerun", &run, "--json"])
        .output()
        .expect("drover rerun");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("503 (disconnected)")
            && said.contains("lost its broker connection")
            && said.contains("nothing was done"),
        "{said}"
    );

    wait_until("the standby to take over", beats(6), || {
        standby.alive_and(standby.output().contains("this one takes over"))
    });
    let took_over = cut.elapsed();
    c.url = wait_until("the standby's URL", Duration::from_secs(30), || {
        standby.alive_and(ready::controller_url(&standby_data))
    });
    let serving = cut.elapsed();
    assert!(
        standby.output().contains("leading as epoch 2"),
        "{}",
        standby.output()
    );

    net.set_link(0, true);
    let back = Instant::now();
    // A second agent, new to the namespace, takes the head of the queue while `first` still
    // holds the first one's slot.
    c.start_agent_with("y", &["default"], &["--concurrency", "1"]);
    c.wait_for(&run, "k to run", Duration::from_secs(30), |d| {
        step_status(d, "k") == "running"
    });
    std::fs::write(&go, "").expect("go");
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", standby.output());
    for step in ["first", "k", "j", "last"] {
        let tries = attempts(&doc, step);
        assert_eq!(tries.len(), 1, "{step} ran more than once: {tries:?}");
        assert_eq!(tries[0].1, "succeeded", "{step}: {tries:?}");
    }

    // Refused the lock on every reconnect, the deposed controller stops on its own.
    let status = active
        .wait_exit(beats(12))
        .unwrap_or_else(|e| panic!("{e}\n{}", active.output()));
    let stopped = back.elapsed();
    let log = active.output();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("still held by another connection") && log.contains("lost the lock"),
        "{log}"
    );
    // No run but the first one exists anywhere.
    let out = c.drover(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).expect("runs --json");
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["run_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [run.as_str()], "{runs}");
    // What it had queued before the cut was taken off the queue by the new controller, which
    // published those steps again: each ran once.
    let out = standby.output();
    assert!(out.contains("removed 2 job(s) left in"), "{out}");
    let metrics = c.http_get("/metrics");
    let counts = runs_per_step(&ran);
    eprintln!(
        "link cut: the cut-off controller noticed after {:.2}s, standby took the lock after {:.2}s, served after {:.2}s (heartbeat {}s); \
         deposed controller stopped {:.2}s after its link returned; commands run: {counts:?}; {}",
        noticed.as_secs_f64(),
        took_over.as_secs_f64(),
        serving.as_secs_f64(),
        heartbeat_secs(),
        stopped.as_secs_f64(),
        metrics
            .lines()
            .find(|l| l.starts_with("drover_agent_stale_refused_total"))
            .unwrap_or("no stale refusals line")
    );
    // Without the purge, `y` took the old copy of `k` and `x` the new one, which it started
    // until the controller cancelled it: the same attempt already ran on `y`.
    for agent in ["x", "y"] {
        let log = c.process_log(agent);
        assert!(!log.contains("already runs on agent"), "{log}");
    }
    assert_eq!(
        counts,
        ["first", "j", "k", "last"]
            .map(|s| (s.to_string(), 1))
            .into_iter()
            .collect(),
        "{}",
        c.process_log("x")
    );
}
