//! Scalars over HTTP: the test plays the agent relaying a step's scalars; only the step's
//! current, running attempt is heard; what is stored reads back and is announced on the stream.

use crate::server::Server;
use crate::support::{finished, next_job, patience};
use drover_protocol::AgentId;
use drover_protocol::message::{Claimed, Message};
use drover_test_support::eventually_async;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Allows reading only: it may see scalars but not report them.
const READ_TOKEN: &str = "read-only-t0ken";

fn batch(attempt: u32, points: &[(&str, &str, i64, f64)]) -> Value {
    let points: Vec<Value> = points
        .iter()
        .map(|(title, series, iteration, value)| {
            json!({"title": title, "series": series, "iteration": iteration, "value": value})
        })
        .collect();
    json!({"attempt": attempt, "points": points})
}

async fn step_status(s: &Server, run: &str, want: fn(&str) -> bool) {
    eventually_async(patience("the step's status"), || async {
        let (_, view) = s.json(&format!("/api/v1/runs/{run}/steps/make")).await;
        let status = view["status"].as_str().unwrap_or_default().to_string();
        if want(&status) { Ok(()) } else { Err(status) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn only_the_running_attempt_reports_and_what_it_reports_reads_back_live() {
    let s = Server::start_with(|c| c.read_token = Some(READ_TOKEN.into())).await;
    let mut jobs = s.jobs().await;
    let run = s.submit().await.to_string();
    let make = next_job(&mut jobs).await;
    let agent = AgentId::new("scalars-agent").unwrap();
    s.event(Message::Claimed(Claimed {
        run_id: make.run_id.clone(),
        step: make.step.clone(),
        attempt: make.attempt,
        agent: agent.clone(),
    }))
    .await;
    step_status(&s, &run, |st| st == "running").await;
    let post = format!("/api/v1/runs/{run}/steps/make/scalars");
    let mut stream = s
        .stream(&format!("/api/v1/runs/{run}/scalars/stream"))
        .await;

    let (status, refused) = s
        .post_json(&post, &batch(2, &[("loss", "x", 0, 1.0)]))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of step make cannot report scalars"),
        "{refused}"
    );
    let (status, refused) = s.post_json(&post, &batch(1, &[("", "x", 0, 1.0)])).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("bad scalar title"),
        "{refused}"
    );
    let (status, refused) = s
        .post_json(
            &format!("/api/v1/runs/{run}/steps/nope/scalars"),
            &batch(1, &[]),
        )
        .await;
    assert_eq!(status, 404, "{refused}");

    let reader = s
        .http
        .post(format!("{}{post}", s.url))
        .bearer_auth(READ_TOKEN)
        .json(&batch(1, &[("loss", "train", 0, 0.5)]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reader.status().as_u16(),
        403,
        "the read token cannot report"
    );

    let (status, stored) = s
        .post_json(
            &post,
            &batch(1, &[("loss", "train", 0, 0.5), ("loss", "test", 0, 0.75)]),
        )
        .await;
    assert_eq!(
        (status, stored["stored"].as_u64()),
        (200, Some(2)),
        "{stored}"
    );
    let (status, stored) = s
        .post_json(&post, &batch(1, &[("loss", "train", 1, 0.25)]))
        .await;
    assert_eq!(status, 200, "{stored}");
    let changed = stream.until("scalars", |_| true).await;
    assert_eq!(changed, json!({"step": "make"}));

    let (status, list) = s
        .json(&format!("/api/v1/runs/{run}/scalars?step=make"))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["run_id"], run.as_str());
    let series: Vec<(String, Value, Value)> = list["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["series"].as_str().unwrap().to_string(),
                s["points"].clone(),
                s["last"].clone(),
            )
        })
        .collect();
    assert_eq!(
        series,
        vec![
            ("test".to_string(), json!([[0, 0.75]]), json!([0, 0.75])),
            (
                "train".to_string(),
                json!([[0, 0.5], [1, 0.25]]),
                json!([1, 0.25])
            ),
        ],
        "{list}"
    );
    let read = s
        .http
        .get(format!("{}/api/v1/runs/{run}/scalars", s.url))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200, "the read token reads scalars");
    let (status, _) = s
        .json(&format!("/api/v1/runs/{run}/scalars?step=nope"))
        .await;
    assert_eq!(status, 404);

    // A series longer than the limit is kept evenly thinned, with its count and latest point.
    for chunk in 0..3i64 {
        let points: Vec<(&str, &str, i64, f64)> = (chunk * 5_000..(chunk + 1) * 5_000)
            .map(|i| ("long", "x", i, i as f64))
            .collect();
        let (status, stored) = s.post_json(&post, &batch(1, &points)).await;
        assert_eq!(status, 200, "{stored}");
    }
    let (_, list) = s
        .json(&format!("/api/v1/runs/{run}/scalars?step=make"))
        .await;
    let long = list["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == "long")
        .unwrap();
    assert_eq!(
        (long["count"].as_u64(), long["stride"].as_u64()),
        (Some(15_000), Some(2))
    );
    assert_eq!(long["last"], json!([14_999, 14_999.0]));
    let points = long["points"].as_array().unwrap();
    assert_eq!(points.len(), 7_500);
    assert!(points.iter().enumerate().all(|(k, p)| p[0] == 2 * k as i64));
    let (status, refused) = s
        .post_json(&post, &batch(1, &vec![("loss", "x", 0, 0.0); 5_001]))
        .await;
    assert_eq!(status, 413, "{refused}");

    // Once the attempt has ended, nothing more is taken, and the stream ends with the run.
    s.event(finished(&make, &agent, BTreeMap::new())).await;
    step_status(&s, &run, |st| st != "running").await;
    let (status, refused) = s
        .post_json(&post, &batch(1, &[("loss", "train", 2, 0.0)]))
        .await;
    assert_eq!(status, 400, "{refused}");
    s.stop().await;
}
