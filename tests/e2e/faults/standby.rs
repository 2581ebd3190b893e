//! Two controllers with the journal on one namespace: the second stands by (answering 503 over
//! HTTP); `kill -9` the active one mid-run and delete its data dir, and the standby takes over
//! from the journal, leading with a higher epoch, and finishes the run; the agent then refuses a
//! job and a cancel of the old epoch. The CLI given both controllers' URLs, the standby's
//! first, reaches the active one before and after the takeover, and `drover wait` rides
//! through it. The log of a step that ended before the kill, archived in the bucket, is read
//! whole from the new controller.

use super::{attempts, chain_log, chain_logging, ended, step_status};
use crate::harness::{AMQP_URL, Cluster, Store, text, wait_until};
use drover_amqp::{Broker, Target};
use drover_protocol::ids::{AttemptNo, QueueName, StepName};
use drover_protocol::message::{Cancel, JobKind, JobSpec, Message, StepJob};
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

/// A GET on `url` whose redirect is not followed: its status, `location` and
/// `x-drover-inactive`.
fn get_unfollowed(url: &str) -> (u16, Option<String>, Option<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = http.get(url).send().await.expect("GET");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (
            resp.status().as_u16(),
            header("location"),
            header(drover_api::INACTIVE_HEADER),
        )
    })
}

/// Starts a controller with the journal on `data` and `port`, and waits until it stands by.
pub(super) fn spawn_standby(c: &Cluster, data: &Path, port: u16, label: &str) -> ChildProcess {
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
        standby.alive_and(
            standby
                .output()
                .contains("standing by: this controller is a standby"),
        )
    });
    standby
}

/// Publishes what a deposed controller of epoch 1 would: to agent a1 a cancel of `run`'s s4,
/// and on the `default` queue a job that would create `marker`.
fn stale_messages(c: &Cluster, run: &str, marker: &Path) {
    let names = Names::new(&c.ns).unwrap();
    let job_queue = names.user_queue(&QueueName::new("default").unwrap());
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
        let job = Message::StepJob(StepJob {
            run_id: RunId::generate(),
            step: StepName::new("stale").unwrap(),
            attempt: AttemptNo::FIRST,
            job: JobSpec {
                kind: JobKind::Command {
                    argv: vec!["touch".into(), marker.display().to_string()],
                },
                env: Default::default(),
                inputs: vec![],
                outputs: Default::default(),
                timeout_ms: None,
                priority: 0,
            },
            controller_url: c.url.clone(),
            lease_ms: 3000,
            artifact_store: None,
            epoch: 1,
            inline_outputs: 0,
            event_batches: false,
        });
        let publisher = broker.publisher().await.unwrap();
        publisher
            .publish(&Target::Control("agent.a1".into()), &cancel)
            .await
            .unwrap();
        publisher
            .publish(&Target::Job(job_queue), &job)
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
    // Over one 64 KiB log chunk, so s1's log is complete only once its last chunk is stored.
    const LINES: usize = 8000;
    let file = c.pipeline("chain.toml", &chain_logging(4, 1.5, LINES));
    let run = c.submit(&file);
    let doc = c.wait_for(
        &run,
        "s2 to run, s1's log archived",
        Duration::from_secs(30),
        |d| {
            step_status(d, "s2") == "running"
                && !Cluster::step(d, "s1")["attempts"][0]["log_archive"].is_null()
        },
    );
    let s1_log = chain_log("s1", LINES);
    let archive = &Cluster::step(&doc, "s1")["attempts"][0]["log_archive"];
    assert_eq!(archive["size"], s1_log.len(), "{archive}");

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

    // s1's log went with the old data dir; the new controller reads it back from the bucket,
    // for `drover logs` and for `drover logs -f`.
    let out = c.drover(&["logs", &run, "s1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout) == s1_log,
        "{}",
        text(&out)
    );
    let out = standby.output();
    assert!(
        out.contains("read the log of attempt 1 of step s1") && out.contains("artifact store"),
        "{out}"
    );
    let out = c.drover(&["logs", "-f", &run, "s1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout) == s1_log,
        "{}",
        text(&out)
    );
    // s4 ran under the new controller: its log was archived too.
    let doc = c.wait_for(&run, "s4's log archived", Duration::from_secs(30), |d| {
        !Cluster::step(d, "s4")["attempts"][0]["log_archive"].is_null()
    });
    let archive = &Cluster::step(&doc, "s4")["attempts"][0]["log_archive"];
    assert_eq!(archive["size"], chain_log("s4", LINES).len(), "{archive}");

    // The agent has seen epoch 2 in the new controller's jobs: a cancel and a job of epoch 1
    // (what the deposed controller would send) are refused, and counted in /metrics.
    let marker = c.dir.path().join("stale-job-ran");
    stale_messages(&c, &run, &marker);
    wait_until("the refusals in /metrics", Duration::from_secs(30), || {
        c.http_get("/metrics")
            .contains("drover_agent_stale_refused_total{agent=\"a1\"} 2\n")
    });
    let agent_log = c.process_log("a1");
    assert!(
        agent_log.contains("ignoring a cancel") && agent_log.contains("refusing"),
        "{agent_log}"
    );
    assert!(!marker.exists(), "the stale job ran");

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

/// `drover <urls> status <run> --json`.
fn status(c: &Cluster, run: &str, urls: &[&str]) -> std::process::Output {
    let mut args = urls.to_vec();
    args.extend(["status", run, "--json"]);
    c.drover(&args)
}

/// The standby redirects a plain GET of a run's page or API to the active controller (307,
/// path and query kept, `x-drover-inactive: standby`). The CLI with `--url standby --url
/// active` reaches the active controller through that redirect; with the standby's URL alone
/// it does not follow it to the unlisted active one and fails naming the standby and its
/// answer. After `kill -9` of the active controller the same command reaches the standby, now
/// active, and a `drover wait` started before the kill ends with the run's success.
#[test]
fn the_cli_given_every_controller_reaches_the_active_one_across_a_takeover() {
    let mut c = Cluster::on(Store::S3);
    c.start_controller_with(&JOURNAL.map(String::from));
    let active = c.url.clone();
    let data = c.dir.path().join("standby");
    let port = ready::free_port().unwrap();
    let mut standby = spawn_standby(&c, &data, port, "standby");
    let standby_url = format!("http://127.0.0.1:{port}");
    let both = ["--url", &standby_url, "--url", &active];
    c.start_agent_with("a1", &["default"], &both);

    let file = c.pipeline(
        "two.toml",
        "[pipeline]\nname = \"two\"\n\
         [[step]]\nname = \"s1\"\ncommand = [\"sleep\", \"3\"]\n\
         [[step]]\nname = \"s2\"\nparents = [\"s1\"]\ncommand = [\"true\"]\n",
    );
    let run = c.submit(&file);
    for path in [
        format!("/runs/{run}"),
        format!("/api/v1/runs/{run}"),
        format!("/api/v1/runs/{run}/steps/s1/log?offset=0&attempt=1"),
    ] {
        let answer = wait_until(
            "the standby to redirect reads",
            Duration::from_secs(10),
            || {
                let answer = get_unfollowed(&format!("{standby_url}{path}"));
                (answer.0 == 307).then_some(answer)
            },
        );
        assert_eq!(
            answer,
            (
                307,
                Some(format!("{active}{path}")),
                Some("standby".to_string())
            ),
            "{path}"
        );
    }
    let (status_code, body) = get(&format!("{standby_url}/api/v1/runs/{run}"));
    assert_eq!(
        status_code, 200,
        "followed to the active controller: {body}"
    );
    assert!(body.contains(run.as_str()), "{body}");
    let (status_code, body) = get(&format!("{standby_url}/healthz"));
    assert_eq!(status_code, 503, "health stays the standby's own: {body}");

    let out = status(&c, &run, &both);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["run_id"], run.as_str());

    let alone = status(&c, &run, &["--url", &standby_url]);
    let said = text(&alone);
    assert!(!alone.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "{standby_url}: 307 (standby): redirects to {active}/api/v1/runs/"
        )) && said.contains("not one of the controller URLs"),
        "{said}"
    );

    let mut wait_cmd = c.command();
    wait_cmd.args(both).args(["wait", &run]);
    let log = c.dir.path().join("wait.log");
    let mut waiting = ChildProcess::spawn("wait", wait_cmd, &log).unwrap();
    c.wait_for(&run, "s1 to run", Duration::from_secs(30), |d| {
        step_status(d, "s1") == "running"
    });

    c.kill("controller");
    wait_until("the standby to take over", Duration::from_secs(30), || {
        standby.alive_and(ready::controller_url(&data))
    });
    let out = status(&c, &run, &both);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["run_id"], run.as_str());

    let ended = waiting.wait_exit(Duration::from_secs(60)).unwrap();
    let said = waiting.output();
    assert!(ended.success(), "drover wait: {ended}\n{said}");
    assert!(said.contains("succeeded"), "{said}");
}
