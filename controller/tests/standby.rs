//! Two controllers with the journal on one namespace of the shared broker: the standby learns
//! the active controller's URL from the leader queue and redirects reads there (writes, health
//! and metrics stay its own 503s); once the active one stops, the standby takes over and its
//! own URL, with a higher epoch, replaces the first one's in the queue. A controller with the
//! journal but the local artifact store does not stand by: it is refused like one without it.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

mod support;

use drover_controller::Controller;
use drover_controller::config::StateJournal;
use drover_storage::testing::Moto;
use drover_test_support::{eventually_async, ready};
use serde_json::Value;
use std::time::Duration;
use support::{Running, connect, patience, with_bucket};
use tokio_util::sync::CancellationToken;

/// The status, `x-drover-inactive` and `location` of a `method` request to `url`, not followed.
async fn ask(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> (u16, Option<String>, Option<String>) {
    let resp = http.request(method, url).send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    (
        resp.status().as_u16(),
        header(drover_api::INACTIVE_HEADER),
        header("location"),
    )
}

#[tokio::test]
async fn a_standby_redirects_reads_to_the_url_the_active_controller_published() {
    let broker = connect("standby").await;
    let names = broker.names().clone();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let moto = Moto::start();
    moto.create_bucket("standby");
    let journaled = |dir| {
        let mut config = with_bucket(support::config(&names, dir), &moto, "standby");
        config.state_journal = StateJournal::Stream;
        config
    };
    let first = journaled(dirs.0.path());
    let active = Running::start(first).await;
    let active_url = active.url();

    let port = ready::free_port().unwrap();
    let standby_url = format!("http://127.0.0.1:{port}");
    let mut second = journaled(dirs.1.path());
    second.http_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn(Controller::start(second, shutdown.clone()));

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let read = "/api/v1/runs?limit=3";
    let redirected = eventually_async(patience("the standby to redirect reads"), || async {
        let resp = http
            .get(format!("{standby_url}{read}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match resp.headers().get("location") {
            Some(to) if resp.status() == 307 => Ok(to.to_str().unwrap().to_string()),
            _ => Err(format!("{}", resp.status())),
        }
    })
    .await
    .unwrap();
    assert_eq!(redirected, format!("{active_url}{read}"));
    assert_eq!(
        ask(
            &http,
            reqwest::Method::GET,
            &format!("{standby_url}/runs/x")
        )
        .await,
        (
            307,
            Some("standby".to_string()),
            Some(format!("{active_url}/runs/x"))
        )
    );
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/runs/x/abort"),
        (reqwest::Method::GET, "/healthz"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        assert_eq!(
            ask(&http, method.clone(), &format!("{standby_url}{path}")).await,
            (503, Some("standby".to_string()), None),
            "{method} {path}"
        );
    }
    // Followed, the redirect reaches the active controller's answer.
    let followed = reqwest::get(format!("{standby_url}{read}")).await.unwrap();
    assert_eq!(followed.status(), 200);
    let runs: Value = followed.json().await.unwrap();
    assert!(runs["runs"].is_array(), "{runs}");

    let record = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    let first_record = record(broker.peek_leader().await.unwrap().expect("a record"));
    assert_eq!(first_record["url"], active_url.as_str());
    active.stop().await;
    let standby = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("the standby takes over within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(standby.url(), standby_url);
    let newer = eventually_async(patience("the new leader's record"), || async {
        let got = broker.peek_leader().await.map_err(|e| e.to_string())?;
        match got.map(record) {
            Some(got) if got["url"] == standby_url.as_str() => Ok(got),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(
        newer["epoch"].as_u64().unwrap() > first_record["epoch"].as_u64().unwrap(),
        "{newer} after {first_record}"
    );
    // Read back once a second by standbys, the record stays in the queue.
    assert!(broker.peek_leader().await.unwrap().is_some());
    shutdown.cancel();
    standby.wait().await.unwrap();
    broker.delete_namespace(&[]).await.unwrap();
}

/// A second controller with the journal and the local artifact store is refused at once, saying
/// that the artifacts in its data dir are why, rather than standing by to take over runs whose
/// artifacts it could not read.
#[tokio::test]
async fn a_controller_with_local_artifacts_does_not_stand_by() {
    let broker = connect("standbylocal").await;
    let names = broker.names().clone();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = support::config(&names, dirs.0.path());
    first.state_journal = StateJournal::Stream;
    let active = Running::start(first).await;

    let mut second = support::config(&names, dirs.1.path());
    second.state_journal = StateJournal::Stream;
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        Controller::start(second, CancellationToken::new()),
    )
    .await
    .expect("refused at once, not standing by");
    let error = format!(
        "{:#}",
        refused.err().expect("the second controller is refused")
    );
    for part in [
        "another controller is active on namespace",
        "artifact store is local",
        "--artifact-store s3://",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    active.stop().await;
    broker.delete_namespace(&[]).await.unwrap();
}
