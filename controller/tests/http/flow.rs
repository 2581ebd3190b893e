//! A run followed through every event stream while the test plays the agent, then every JSON
//! view, page, asset and 404.

use crate::server::{Server, agent_info};
use crate::support::{finished, finished_late, next_job, patience};
use base64::Engine as _;
use drover_protocol::message::{AttemptRef, Claimed, Heartbeat, LogChunk, LogDelay, Message};
use drover_protocol::{AgentId, Digest, OutputName, RunId};
use drover_test_support::eventually_async;
use std::collections::BTreeMap;

#[tokio::test]
async fn a_run_is_followed_live_and_every_endpoint_answers_or_404s() {
    let s = Server::start().await;
    let mut jobs = s.jobs().await;
    let mut changes = s.stream("/api/v1/events").await;
    assert_eq!(changes.next().await.0, "hello");
    let run_id = s.submit().await;
    changes
        .until("run", |d| d["run_id"] == run_id.as_str())
        .await;

    let make = next_job(&mut jobs).await;
    let mut run_stream = s.stream(&format!("/api/v1/runs/{run_id}/stream")).await;
    let first = run_stream.until("run", |_| true).await;
    assert_eq!(first["steps"][0]["status"], "queued", "{first}");
    let mut log = s
        .stream(&format!("/api/v1/runs/{run_id}/steps/make/log/stream"))
        .await;
    let agent = AgentId::new("http-agent").unwrap();
    s.event(Message::Claimed(Claimed {
        run_id: run_id.clone(),
        step: make.step.clone(),
        attempt: make.attempt,
        agent: agent.clone(),
    }))
    .await;
    let running = run_stream
        .until("run", |d| d["steps"][0]["status"] == "running")
        .await;
    assert_eq!(running["steps"][0]["attempts"][0]["agent"], "http-agent");
    s.event(Message::Heartbeat(Heartbeat {
        agent: agent_info(1),
        running: vec![AttemptRef {
            run_id: run_id.clone(),
            step: make.step.clone(),
            attempt: make.attempt,
        }],
    }))
    .await;

    // Raw bytes, a progress bar and invalid UTF-8 included, arrive as they are appended.
    let mut received = Vec::new();
    for (offset, data) in [(0u64, &b"10%\r50%\r"[..]), (8, &b"100%\n\xff end\n"[..])] {
        s.event(Message::Log(LogChunk {
            run_id: run_id.clone(),
            step: make.step.clone(),
            attempt: make.attempt,
            offset,
            data: data.to_vec(),
        }))
        .await;
        let chunk = log.until("log", |_| true).await;
        assert_eq!(chunk["attempt"], 1);
        assert_eq!(chunk["offset"], offset);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(chunk["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, data);
        received.extend(bytes);
    }
    let agents = eventually_async(patience("the agent to list its step"), || async {
        let (_, doc) = s.json("/api/v1/agents").await;
        if doc["agents"][0]["current_steps"][0]["step"] == "make" {
            Ok(doc)
        } else {
            Err(doc)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        agents["agents"][0]["current_steps"][0]["run_id"],
        run_id.as_str()
    );

    let content = b"world\n";
    let digest = Digest::of_bytes(content);
    let put = s
        .request(reqwest::Method::PUT, &format!("/api/v1/blobs/{digest}"))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let head = s
        .request(reqwest::Method::HEAD, &format!("/api/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let artifact = drover_protocol::message::ArtifactRef {
        digest: digest.clone(),
        size: content.len() as u64,
        file_name: drover_protocol::FileName::new("out.txt").unwrap(),
    };
    let out = OutputName::new("out").unwrap();
    // The agent held the second chunk back through an outage: told as a note, before the end.
    let delayed = LogDelay {
        offset: 8,
        delayed_ms: 47_200,
    };
    s.event(finished_late(
        &make,
        &agent,
        BTreeMap::from([(out, artifact)]),
        vec![delayed],
    ))
    .await;
    let note = log.until("note", |_| true).await;
    assert_eq!(
        (&note["attempt"], &note["offset"], &note["delayed_ms"]),
        (&1.into(), &8.into(), &47_200.into()),
        "{note}"
    );
    assert_eq!(
        note["text"],
        "log of attempt 1 delayed 47 s from byte 8 (broker unreachable)"
    );
    let end = log.until("end", |_| true).await;
    assert_eq!(
        (end["status"].as_str(), end["size"].as_u64()),
        (Some("succeeded"), Some(19))
    );
    assert_eq!(received, b"10%\r50%\r100%\n\xff end\n");

    let usejob = next_job(&mut jobs).await;
    s.event(Message::Claimed(Claimed {
        run_id: run_id.clone(),
        step: usejob.step.clone(),
        attempt: usejob.attempt,
        agent: agent.clone(),
    }))
    .await;
    s.event(finished(&usejob, &agent, BTreeMap::new())).await;
    let last = run_stream
        .until("run", |d| d["status"] == "succeeded")
        .await;
    assert_eq!(last["steps"][1]["status"], "succeeded", "{last}");
    assert_eq!(run_stream.next().await.0, "end");
    // A finished step's log stream replays everything, then ends.
    let mut replay = s
        .stream(&format!(
            "/api/v1/runs/{run_id}/steps/make/log/stream?attempt=1&offset=8"
        ))
        .await;
    let chunk = replay.until("log", |_| true).await;
    assert_eq!(chunk["offset"], 8);
    assert_eq!(
        replay.next().await.0,
        "note",
        "a replay tells the delay too"
    );
    assert_eq!(replay.next().await.0, "end");

    // JSON views.
    let (status, step) = s.json(&format!("/api/v1/runs/{run_id}/steps/make")).await;
    assert_eq!(status, 200);
    assert_eq!(step["command"][2], "echo world > out.txt", "{step}");
    assert_eq!(step["cache_hit"], false);
    assert!(step["cache_key"].is_string(), "{step}");
    assert_eq!(step["outputs"]["out"]["digest"], digest.as_str());
    let (_, runs) = s
        .json("/api/v1/runs?status=succeeded&project=http-tests")
        .await;
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str(), "{runs}");
    assert_eq!(runs["runs"][0]["url"], format!("{}/runs/{run_id}", s.url));
    let (_, none) = s.json("/api/v1/runs?status=failed").await;
    assert_eq!(none["runs"].as_array().unwrap().len(), 0, "{none}");
    let console = s.get(&format!("/api/v1/runs/{run_id}/console")).await;
    let console = console.text().await.unwrap();
    for line in [
        "step make: attempt 1 claimed by agent http-agent",
        "step make: attempt 1 succeeded (exit code 0)",
        "step make: log of attempt 1 delayed 47 s from byte 8 (broker unreachable)",
        "run succeeded",
    ] {
        assert!(console.contains(line), "{line:?} in:\n{console}");
    }
    let (status, queues) = s.json("/api/v1/queues").await;
    assert_eq!(status, 200);
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "default"),
        "{queues}"
    );
    let artifact = s
        .get(&format!("/api/v1/runs/{run_id}/steps/make/artifacts/out"))
        .await;
    assert_eq!(artifact.bytes().await.unwrap().as_ref(), content);
    let log_bytes = s
        .get(&format!("/api/v1/runs/{run_id}/steps/make/log"))
        .await;
    assert_eq!(
        log_bytes.bytes().await.unwrap().as_ref(),
        received.as_slice()
    );
    // A part of the log (the console loading earlier bytes of a long one), and its HEAD.
    let part = s
        .get(&format!(
            "/api/v1/runs/{run_id}/steps/make/log?offset=1&limit=3"
        ))
        .await;
    assert_eq!(part.bytes().await.unwrap().as_ref(), &received[1..4]);
    let head = s
        .request(
            reqwest::Method::HEAD,
            &format!("/api/v1/runs/{run_id}/steps/make/log"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["x-drover-log-size"].to_str().unwrap(),
        received.len().to_string()
    );
    let abort = s
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{run_id}/abort"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(abort.status().as_u16(), 202);

    let metrics = s.get("/metrics").await.text().await.unwrap();
    for family in [
        "drover_runs{status=\"succeeded\"} 1",
        "drover_steps{status=\"succeeded\"} 2",
        "drover_step_duration_seconds_count{outcome=\"succeeded\"} 2",
        "drover_dispatch_latency_seconds_count{queue=\"default\"} 2",
        "drover_agents{state=\"alive\"} 1",
        "drover_agent_slots 2",
        "drover_agent_busy_slots",
        "drover_dead_letter_queue_messages 0",
        "drover_amqp_reconnects_total 0",
    ] {
        assert!(metrics.contains(family), "{family} in:\n{metrics}");
    }

    // Pages and assets.
    for (path, needle) in [
        (
            "/".to_string(),
            "<script type=\"module\" src=\"/assets/runs.js\">",
        ),
        (
            format!("/runs/{run_id}"),
            "<script type=\"module\" src=\"/assets/run.js\">",
        ),
        (
            "/agents".to_string(),
            "<script type=\"module\" src=\"/assets/fleet.js\">",
        ),
        (
            "/queues".to_string(),
            "<script type=\"module\" src=\"/assets/fleet.js\">",
        ),
        ("/assets/run.js".to_string(), "from './dag.js'"),
        ("/assets/app.css".to_string(), "--succeeded"),
    ] {
        let resp = s.get(&path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }
    let module = s.get("/assets/common.js").await;
    assert_eq!(module.headers()["content-type"], "text/javascript");

    // 404s name what is missing.
    let missing = RunId::generate();
    for path in [
        format!("/api/v1/runs/{missing}"),
        format!("/api/v1/runs/{missing}/stream"),
        format!("/api/v1/runs/{missing}/console"),
        format!("/api/v1/runs/{missing}/steps/make"),
        format!("/api/v1/runs/{missing}/steps/make/log"),
        format!("/api/v1/runs/{missing}/steps/make/log/stream"),
        format!("/api/v1/runs/{missing}/steps/make/artifacts/out"),
        format!("/api/v1/runs/{run_id}/steps/nope"),
        format!("/api/v1/runs/{run_id}/steps/nope/log"),
        format!("/api/v1/runs/{run_id}/steps/nope/log/stream"),
        format!("/api/v1/runs/{run_id}/steps/nope/artifacts/out"),
        format!("/api/v1/runs/{run_id}/steps/make/artifacts/nope"),
        format!("/api/v1/runs/{run_id}/steps/use/artifacts/out"),
        format!("/api/v1/blobs/{}", Digest::of_bytes(b"never stored")),
        "/api/v1/nothing".to_string(),
    ] {
        let (status, doc) = s.json(&path).await;
        assert_eq!(status, 404, "{path}: {doc}");
        assert_eq!(doc["code"], "not_found", "{path}: {doc}");
        assert!(doc["message"].is_string(), "{path}: {doc}");
    }
    for path in [format!("/runs/{missing}"), "/assets/nope.js".to_string()] {
        assert_eq!(s.get(&path).await.status().as_u16(), 404, "{path}");
    }
    for query in [
        format!("/api/v1/runs/{missing}/abort"),
        format!("/api/v1/runs/{run_id}/abort?step=nope"),
    ] {
        let resp = s
            .request(reqwest::Method::POST, &query)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{query}");
    }
    s.stop().await;
}
