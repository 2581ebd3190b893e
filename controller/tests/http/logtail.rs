//! A step's log when its `Finished` overtakes its last chunks: the log stream ends only once the
//! bytes the agent reported are stored, or after the tail patience with the bytes still missing;
//! a `Finished` without a log size ends the stream at once, as before.

use crate::server::{Events, Server, agent_info};
use crate::support::{next_job, patience};
use drover_protocol::message::{
    AttemptRef, Claimed, Finished, Heartbeat, LogChunk, Message, Outcome, StepJob, now_ms,
};
use drover_protocol::{AgentId, RunId};
use drover_test_support::eventually_async;
use std::collections::BTreeMap;
use std::time::Duration;

/// Longer than a follower takes to see a step's end (it is told at once; its timer is 2 s).
const SETTLE: Duration = Duration::from_millis(2500);

fn agent() -> AgentId {
    AgentId::new("http-agent").unwrap()
}

fn chunk(job: &StepJob, offset: u64, data: &[u8]) -> Message {
    Message::Log(LogChunk {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        offset,
        data: data.to_vec(),
    })
}

/// The attempt failed with exit code 1 and a log of `log_size` bytes (`None`: an agent that
/// reported only once its whole log was confirmed).
fn failed(job: &StepJob, log_size: Option<u64>) -> Message {
    Message::Finished(Finished {
        run_id: job.run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent(),
        outcome: Outcome::Failed,
        exit_code: Some(1),
        outputs: BTreeMap::new(),
        message: None,
        started_at: now_ms(),
        ended_at: now_ms(),
        log_delays: Vec::new(),
        start: None,
        log_size,
        inline: Default::default(),
    })
}

/// Claims the run's first step, which ends up running on the test's agent.
async fn claimed_first_step(s: &Server) -> (RunId, StepJob) {
    let mut jobs = s.jobs().await;
    let run_id = s.submit().await;
    let job = next_job(&mut jobs).await;
    s.event(Message::Claimed(Claimed {
        run_id: run_id.clone(),
        step: job.step.clone(),
        attempt: job.attempt,
        agent: agent(),
    }))
    .await;
    s.event(Message::Heartbeat(Heartbeat {
        agent: agent_info(1),
        running: vec![AttemptRef {
            run_id: run_id.clone(),
            step: job.step.clone(),
            attempt: job.attempt,
        }],
    }))
    .await;
    (run_id, job)
}

/// The step's log stream, once it has passed on the step's first chunk, `first`.
async fn following(s: &Server, run_id: &RunId, make: &StepJob, first: &[u8]) -> Events {
    let mut log = s
        .stream(&format!("/api/v1/runs/{run_id}/steps/make/log/stream"))
        .await;
    s.event(chunk(make, 0, first)).await;
    assert_eq!(log.until("log", |_| true).await["offset"], 0);
    log
}

/// Waits until the controller has taken the step's end.
async fn step_failed(s: &Server, run_id: &RunId) {
    eventually_async(patience("the step to fail"), || async {
        let (_, step) = s.json(&format!("/api/v1/runs/{run_id}/steps/make")).await;
        if step["status"] == "failed" {
            Ok(())
        } else {
            Err(step)
        }
    })
    .await
    .unwrap();
}

/// The stored log's bytes and its `x-drover-log-expected` header.
async fn stored_log(s: &Server, run_id: &RunId) -> (Vec<u8>, Option<u64>) {
    let resp = s
        .get(&format!("/api/v1/runs/{run_id}/steps/make/log"))
        .await;
    let expected = resp
        .headers()
        .get("x-drover-log-expected")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.bytes().await.unwrap().to_vec(), expected)
}

#[tokio::test]
async fn a_finished_that_overtakes_its_last_chunk_ends_the_log_stream_only_once_it_is_stored() {
    let s = Server::start().await;
    let (run_id, make) = claimed_first_step(&s).await;
    let mut log = following(&s, &run_id, &make, b"first\n").await;
    // The agent's Finished says 11 bytes; the last 5 are still on their way.
    s.event(failed(&make, Some(11))).await;
    step_failed(&s, &run_id).await;
    assert_eq!(
        stored_log(&s, &run_id).await,
        (b"first\n".to_vec(), Some(11))
    );
    let early = log.next_within(SETTLE).await;
    assert!(
        early.is_none(),
        "the stream went on before the log was whole: {early:?}"
    );

    s.event(chunk(&make, 6, b"last\n")).await;
    let tail = log.until("log", |_| true).await;
    assert_eq!(tail["offset"], 6);
    let (event, end) = log.next().await;
    assert_eq!(event, "end", "{end}");
    assert_eq!(
        (end["status"].as_str(), end["size"].as_u64()),
        (Some("failed"), Some(11))
    );
    assert!(end.get("missing").is_none(), "{end}");
    assert_eq!(
        stored_log(&s, &run_id).await,
        (b"first\nlast\n".to_vec(), Some(11))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_finished_without_a_log_size_ends_the_log_stream_at_once() {
    let s = Server::start().await;
    let (run_id, make) = claimed_first_step(&s).await;
    let mut log = following(&s, &run_id, &make, b"whole\n").await;
    s.event(failed(&make, None)).await;
    let (event, end) = log.next().await;
    assert_eq!(event, "end", "{end}");
    assert_eq!(end["size"], 6);
    assert!(end.get("missing").is_none(), "{end}");
    assert_eq!(stored_log(&s, &run_id).await, (b"whole\n".to_vec(), None));
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_that_never_comes_ends_the_stream_after_the_patience_and_is_stored_if_it_does() {
    let s = Server::start_with(|c| c.log_tail_patience = Duration::from_secs(1)).await;
    let (run_id, make) = claimed_first_step(&s).await;
    s.event(chunk(&make, 0, b"first\n")).await;
    s.event(failed(&make, Some(11))).await;
    step_failed(&s, &run_id).await;
    let mut log = s
        .stream(&format!("/api/v1/runs/{run_id}/steps/make/log/stream"))
        .await;
    assert_eq!(log.until("log", |_| true).await["offset"], 0);
    let (event, end) = log.next().await;
    assert_eq!(event, "end", "{end}");
    assert_eq!(
        (end["size"].as_u64(), end["missing"].as_u64()),
        (Some(6), Some(5)),
        "{end}"
    );
    // Late, but not lost: a chunk after the stream gave up is stored all the same.
    s.event(chunk(&make, 6, b"last\n")).await;
    eventually_async(patience("the late chunk to be stored"), || async {
        let (stored, _) = stored_log(&s, &run_id).await;
        if stored == b"first\nlast\n" {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&stored).into_owned())
        }
    })
    .await
    .unwrap();
    s.stop().await;
}
