//! Two controllers with the journal on one namespace: the second stands by (answering 503 over
//! HTTP); `kill -9` the active one mid-run and delete its data dir, and the standby takes over
//! from the journal, leading with a higher epoch, and finishes the run; the agent then refuses a
//! cancel of the old epoch.

use super::{attempts, chain, ended, step_status};
use crate::harness::{AMQP_URL, Cluster, Store, wait_until};
use drover_amqp::{Broker, Target};
use drover_protocol::ids::{AttemptNo, StepName};
use drover_protocol::message::{Cancel, Message};
use drover_protocol::{Names, RunId};
use drover_test_support::process::ChildProcess;
use drover_test_support::ready;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};

const JOURNAL: [&str; 3] = ["controller", "--state-journal", "stream"];

/// A GET on `url`: its status and body.
fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let resp = reqwest::get(url).await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    })
}

/// Starts a controller with the journal on `data` and `port`, and waits until it stands by.
fn spawn_standby(c: &Cluster, data: &Path, port: u16, label: &str) -> ChildProcess {
    let mut cmd = c.command();
    cmd.args(JOURNAL).arg("--data-dir").arg(data).args([
        "--http",
        &format!("127.0.0.1:{port}"),
        "--lease",
        "3s",
    ]);
    let log = c.dir.path().join(format!("{label}.log"));
    let mut standby = ChildProcess::spawn(label, cmd, &log).unwrap();
    wait_until("the standby to stand by", Duration::from_secs(30), || {
        standby.alive_and(standby.output().contains("standing by: another controller"))
    });
    standby
}

/// Publishes to agent a1 a cancel of `run`'s s4 with epoch 1.
fn stale_cancel(c: &Cluster, run: &str) {
    let names = Names::new(&c.ns).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::connect(AMQP_URL, names, "test").await.unwrap();
        let cancel = Message::Cancel(Cancel {
            run_id: RunId::new(run).unwrap(),
            step: StepName::new("s4").unwrap(),
            attempt: AttemptNo::FIRST,
            reason: "from a deposed controller".to_string(),
            epoch: 1,
        });
        let publisher = broker.publisher().await.unwrap();
        publisher
            .publish(&Target::Control("agent.a1".into()), &cancel)
            .await
            .unwrap();
        broker.close().await;
    });
}

#[test]
fn a_standby_controller_takes_over_a_run_from_a_killed_one() {
    // Artifacts in a bucket: the local store would go with the data dir.
    let mut c = Cluster::on(Store::S3);
    c.start_controller_with(&JOURNAL.map(String::from));

    let data = c.dir.path().join("standby");
    let port = ready::free_port().unwrap();
    let mut standby = spawn_standby(&c, &data, port, "standby");
    let (status, body) = get(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("unavailable") && body.contains("standing by"),
        "{body}"
    );
    assert!(!data.join(ready::CONTROLLER_URL_FILE).exists());

    c.start_agent("a1", &["default"]);
    let file = c.pipeline("chain.toml", &chain(4, 1.5));
    let run = c.submit(&file);
    c.wait_for(&run, "s2 to run", Duration::from_secs(30), |d| {
        step_status(d, "s2") == "running"
    });

    let killed = Instant::now();
    c.kill("controller");
    std::fs::remove_dir_all(c.data_dir()).unwrap();
    wait_until("the standby to take over", Duration::from_secs(30), || {
        standby.alive_and(standby.output().contains("this one takes over"))
    });
    let took_lock = killed.elapsed();
    c.url = wait_until("the standby's URL", Duration::from_secs(30), || {
        standby.alive_and(ready::controller_url(&data))
    });
    let active = killed.elapsed();
    eprintln!(
        "kill -9 of the active controller to the standby's takeover log line: {:.2}s; to its \
         URL file (journal replayed, runs loaded, serving): {:.2}s",
        took_lock.as_secs_f64(),
        active.as_secs_f64()
    );

    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    let out = standby.output();
    assert_eq!(doc["status"], "succeeded", "{doc}\n{out}");
    for step in ["s1", "s2", "s3", "s4"] {
        let tries = attempts(&doc, step);
        assert_eq!(tries.len(), 1, "{step} ran more than once: {tries:?}");
        assert_eq!(tries[0].1, "succeeded", "{step}: {tries:?}");
    }
    assert!(
        out.contains("state journal") && !out.contains("applied 0 batch"),
        "the standby took its state from the journal:\n{out}"
    );
    assert!(out.contains("leading as epoch 2"), "{out}");
    let (status, _) = get(&format!("{}/healthz", c.url));
    assert_eq!(status, 200);
    let out = c.drover(&["artifacts", "get", &run, "s4", "out", "-o", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "start\ns1\ns2\ns3\ns4\n"
    );

    // The agent has seen epoch 2 in the new controller's jobs: a cancel of epoch 1 (what the
    // deposed controller would send) is refused, and counted in the controller's /metrics.
    stale_cancel(&c, &run);
    wait_until("the refusal in /metrics", Duration::from_secs(30), || {
        c.http_get("/metrics")
            .contains("drover_agent_stale_refused_total{agent=\"a1\"} 1\n")
    });
    assert!(
        c.process_log("a1").contains("sent by a deposed controller"),
        "{}",
        c.process_log("a1")
    );

    // The new active controller holds the lock: a third one stands by, and SIGTERM stops it
    // cleanly without its having acted.
    let third = c.dir.path().join("third");
    let mut next = spawn_standby(&c, &third, ready::free_port().unwrap(), "third");
    next.signal(Signal::SIGTERM).unwrap();
    let status = next.wait_exit(Duration::from_secs(10)).unwrap();
    let out = next.output();
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("stopped while standing by"), "{out}");
    assert!(!third.join(ready::CONTROLLER_URL_FILE).exists());
}
