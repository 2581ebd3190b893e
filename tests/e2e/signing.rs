//! Signed jobs: with `--job-signing-key` on the controller and `--job-verify-key` on the agent,
//! a job forged for a queued step (unsigned, or signed with another key) is dead-lettered with
//! its reason and never runs, while the controller's own job runs.

use crate::harness::{Cluster, text};
use drover_amqp::signing::JobSigner;
use drover_amqp::{Broker, Target};
use drover_protocol::message::{JobKind, Message};
use drover_protocol::{Names, QueueName};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn keygen(c: &Cluster, dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(format!("{name}.pem")).display().to_string();
    let public = dir.join(format!("{name}.pub")).display().to_string();
    let out = c.drover(&["keygen", "--private", &private, "--public", &public]);
    assert!(out.status.success(), "{}", text(&out));
    (private, public)
}

#[test]
fn a_forged_job_is_dead_lettered_and_never_runs() {
    let keys = tempfile::tempdir().unwrap();
    let mut c = Cluster::new();
    let (private, public) = keygen(&c, keys.path(), "controller");
    let (other_private, _) = keygen(&c, keys.path(), "mallory");
    // keygen never overwrites a key.
    let again = c.drover(&["keygen", "--private", &private, "--public", &public]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("never overwritten"),
        "{}",
        text(&again)
    );

    c.start_controller_with(&[
        "controller".into(),
        "--job-signing-key".into(),
        private.clone(),
    ]);
    let names = Names::new(&c.ns).unwrap();
    let held = QueueName::new("held").unwrap();
    c.queues.push("held".into());
    let marker = keys.path().join("forged-ran");
    let file = c.pipeline(
        "one.toml",
        "[pipeline]\nname = \"one\"\n[[step]]\nname = \"x\"\nqueue = \"held\"\ncommand = [\"true\"]\n",
    );
    let run = c.submit(&file);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(async {
        let broker = Broker::connect(&c.amqp, names.clone(), "test")
            .await
            .unwrap();
        // The controller's job for x, taken off the queue before any agent serves it.
        let mut jobs = broker.consume(&names.user_queue(&held), 1).await.unwrap();
        let genuine = tokio::time::timeout(Duration::from_secs(20), jobs.next())
            .await
            .expect("the job of x within 20 s")
            .unwrap()
            .unwrap();
        assert!(genuine.signature().is_some(), "the controller signs jobs");
        let Ok((_, Message::StepJob(job))) = &genuine.message else {
            panic!("a step job");
        };
        // The same run, step and attempt, running the forger's command instead.
        let mut forged = job.clone();
        forged.job.kind = JobKind::Command {
            argv: vec!["touch".into(), marker.display().to_string()],
        };
        let forged = Message::StepJob(forged);
        let target = Target::Job(names.user_queue(&held));
        let unsigned = broker.publisher().await.unwrap();
        unsigned.publish(&target, &forged).await.unwrap();
        let mut wrong_key = broker.publisher().await.unwrap();
        wrong_key.sign_jobs(Arc::new(
            JobSigner::from_file(Path::new(&other_private)).unwrap(),
        ));
        wrong_key.publish(&target, &forged).await.unwrap();
        // Then the genuine job, as the controller signed it.
        let mut controller_key = broker.publisher().await.unwrap();
        controller_key.sign_jobs(Arc::new(JobSigner::from_file(Path::new(&private)).unwrap()));
        controller_key
            .publish_raw(&target, genuine.payload())
            .await
            .unwrap();
        genuine.ack().await.unwrap();
        jobs.close().await;
        broker
    });

    c.start_agent_with("a1", &["held"], &["--job-verify-key", &public]);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), |d| {
        d["status"] == "succeeded" || d["status"] == "failed"
    });
    assert_eq!(doc["status"], "succeeded", "{doc}\n{}", c.process_log("a1"));
    let reasons = rt.block_on(async {
        let mut dead = broker.consume(&names.dead(), 16).await.unwrap();
        let mut found = BTreeMap::new();
        for _ in 0..2 {
            let incoming = tokio::time::timeout(Duration::from_secs(20), dead.next())
                .await
                .expect("two dead letters")
                .unwrap()
                .unwrap();
            *found
                .entry(incoming.reason().unwrap_or("none").to_string())
                .or_insert(0) += 1;
            incoming.ack().await.unwrap();
        }
        dead.close().await;
        broker.close().await;
        found
    });
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("bad_signature".to_string(), 1),
            ("unsigned_job".to_string(), 1)
        ])
    );
    // Give a forged job that slipped through time to have run.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the forged command ran");
    let log = c.process_log("a1");
    assert!(log.contains("only signed jobs are run"), "{log}");
    assert!(
        log.contains("no x-drover-signature header") && log.contains("does not match its body"),
        "{log}"
    );
}

/// `drover up` with a signing key: its agents check what its controller signs, and runs pass.
#[test]
fn up_with_a_signing_key_runs_signed_jobs_only() {
    let keys = tempfile::tempdir().unwrap();
    let mut c = Cluster::new();
    let (private, _) = keygen(&c, keys.path(), "controller");
    c.start_up(1, &["default"], &["--job-signing-key", &private]);
    let file = c.pipeline(
        "one.toml",
        "[pipeline]\nname = \"one\"\n[[step]]\nname = \"a\"\ncommand = [\"true\"]\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert_eq!(run["status"], "succeeded", "{}", text(&out));
    let log = c.process_log("up");
    assert!(
        log.contains("step jobs are signed") && log.contains("only signed jobs are run"),
        "{log}"
    );
}
