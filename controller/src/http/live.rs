//! Server-sent event streams: run changes (the runs list), one run's view as it changes (the run
//! page) and a step's log as it grows (the console and `drover logs -f`).
//!
//! Each stream is a task that reads durable state and waits on the store's and the log store's
//! change notifications, with a slow timer as a safety net; it ends when the client goes away.
//!
//! An attempt's `Finished` may arrive before its log's last chunks: a log stream ends (or moves
//! on to the next attempt) only once the bytes its agent reported are stored, or when the log
//! tail patience (`LogStore::tail_patience`, 30 s) has passed since the attempt ended; `end`
//! then says how many are `missing`.

use super::{ApiError, App};
use crate::logs::{LogAppended, delay_text};
use crate::scheduler::{RunRecord, StepStatus};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine as _;
use drover_api::SseEvent;
use drover_api::events::{
    AttemptStarted, Hello, LogData, LogEnded, LogNote, RunChanged, RunEnded, StreamError,
};
use drover_protocol::message::now_ms;
use drover_protocol::{AttemptNo, RunId, StepName};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Re-read state this often even without a notification.
const SAFETY_NET: Duration = Duration::from_secs(2);

/// The most log bytes one event carries.
const MAX_LOG_EVENT: u64 = 32 * 1024;
/// Log events waiting for a client. With [`MAX_LOG_EVENT`] this bounds what a slow reader
/// holds in memory (about 3 events in base64, the connection's buffer aside), however long the
/// log: the follower reads on only as the client takes events.
const LOG_EVENTS_QUEUED: usize = 2;

type EventStream =
    Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;
type Sender = mpsc::Sender<Result<Event, Infallible>>;

fn sse(receiver: mpsc::Receiver<Result<Event, Infallible>>) -> EventStream {
    Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default())
}

/// One event of the contract's kind `E`.
fn event<E: SseEvent>(data: &E) -> Result<Event, Infallible> {
    let json = serde_json::to_string(data).unwrap_or_default();
    Ok(Event::default().event(E::NAME).data(json))
}

/// Whether something arrived that may concern `wanted` (a lagging receiver may have missed it).
fn concerns<T: Clone>(
    received: Result<T, broadcast::error::RecvError>,
    wanted: impl Fn(&T) -> bool,
) -> bool {
    match received {
        Ok(item) => wanted(&item),
        Err(broadcast::error::RecvError::Lagged(_)) => true,
        // Cannot happen: every stream task holds `App`, which holds a sender.
        Err(broadcast::error::RecvError::Closed) => true,
    }
}

/// `GET /api/v1/events`: `run` with `{"run_id"}` whenever a run changes.
pub async fn all_runs(State(app): State<App>) -> impl axum::response::IntoResponse {
    let (tx, rx) = mpsc::channel(64);
    let mut changes = app.store.watch_runs();
    tokio::spawn(async move {
        if tx.send(event(&Hello {})).await.is_err() {
            return;
        }
        loop {
            let data = tokio::select! {
                _ = tx.closed() => return,
                _ = app.shutdown.cancelled() => return,
                received = changes.recv() => RunChanged { run_id: received.ok() },
            };
            if tx.send(event(&data)).await.is_err() {
                return;
            }
        }
    });
    sse(rx)
}

/// `GET /api/v1/runs/{run}/stream`: `run` with the run's view at once and on every change,
/// then `end` once the run has ended.
pub async fn run(
    State(app): State<App>,
    Path(run): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let (tx, rx) = mpsc::channel(16);
    let mut changes = app.store.watch_runs();
    tokio::spawn(async move {
        let id = record.run_id.clone();
        let mut last = None;
        let mut record = Some(record);
        loop {
            if let Some(run) = record.take() {
                let view = app.run_view(&run);
                if last.as_ref() != Some(&view) {
                    if tx.send(event(&view)).await.is_err() {
                        return;
                    }
                    last = Some(view);
                }
                if run.status.is_terminal() {
                    let ended = RunEnded { status: run.status };
                    let _ = tx.send(event(&ended)).await;
                    return;
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = app.shutdown.cancelled() => return,
                received = changes.recv() => if !concerns(received, |r| r == &id) { continue },
                _ = tokio::time::sleep(SAFETY_NET) => {}
            }
            match app.store.run(&id) {
                Ok(found) => record = found,
                Err(e) => tracing::warn!("live view of run {id}: {e}"),
            }
        }
    });
    Ok(sse(rx))
}

#[derive(Debug, Deserialize)]
pub struct LogStreamQuery {
    attempt: Option<u32>,
    offset: Option<u64>,
}

/// `GET /api/v1/runs/{run}/steps/{step}/log/stream?attempt=&offset=`:
/// `log` events `{"attempt", "offset", "data": base64}` (raw bytes, id `attempt:end`),
/// `note` when the attempt's log reached the controller late (metadata, never log bytes),
/// `attempt` `{"attempt", "previous"}` when the step moves to a new attempt (only without
/// `?attempt=`; `previous` is 0 before the first), `end` with the step's status once it is over
/// and its log complete (or its tail patience passed: `missing` bytes).
/// A reconnecting `EventSource` resumes from its `Last-Event-ID`.
pub async fn log(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    Query(q): Query<LogStreamQuery>,
    headers: HeaderMap,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let missing = || ApiError::not_found(format!("run {run} has no step {step:?}"));
    let step = StepName::new(step.as_str()).map_err(|_| missing())?;
    let current = record.step(&step).ok_or_else(missing)?.attempt;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
        .and_then(|(a, o)| Some((a.parse().ok()?, o.parse().ok()?)));
    let (attempt, offset) = match (resume, q.attempt) {
        (Some((a, o)), _) => (AttemptNo(a), o),
        (None, Some(a)) => (AttemptNo(a), q.offset.unwrap_or(0)),
        (None, None) => (current, q.offset.unwrap_or(0)),
    };
    let follower = LogFollower {
        app,
        run: record.run_id.clone(),
        step,
        attempt,
        offset,
        latest: q.attempt.is_none(),
        notes_sent: 0,
    };
    let (tx, rx) = mpsc::channel(LOG_EVENTS_QUEUED);
    tokio::spawn(follower.follow(tx));
    Ok(sse(rx))
}

/// One client following one step's log.
struct LogFollower {
    app: App,
    run: RunId,
    step: StepName,
    attempt: AttemptNo,
    offset: u64,
    /// Move on to each new attempt (no `?attempt=` was given).
    latest: bool,
    /// Delays of the followed attempt's log already told as `note` events.
    notes_sent: usize,
}

impl LogFollower {
    async fn follow(mut self, tx: Sender) {
        // Subscribe before the first read, so an append between the two is not missed.
        let mut appends = self.app.logs.watch();
        let mut runs = self.app.store.watch_runs();
        loop {
            // Send whatever is there.
            if !self.send_new_bytes(&tx).await {
                return;
            }
            // Nothing new: is there more to come?
            let record = match self.app.store.run(&self.run) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("following a log of run {}: {e}", self.run);
                    return;
                }
            };
            if !self.send_notes(&record, &tx).await {
                return;
            }
            // An ended attempt whose file went with an earlier data dir is read from its
            // archive (the moves below send what is new first).
            if let Err(e) = self
                .app
                .restore_log(&record, &self.step, self.attempt)
                .await
            {
                let _ = tx.send(event(&StreamError { error: e })).await;
                return;
            }
            match self.next_move(&record) {
                Move::Wait => {}
                Move::Switch(attempt) => {
                    // Bytes that landed since the last read belong to the old attempt.
                    if !self.send_new_bytes(&tx).await {
                        return;
                    }
                    let data = AttemptStarted {
                        attempt,
                        previous: self.attempt,
                    };
                    self.attempt = attempt;
                    self.offset = 0;
                    self.notes_sent = 0;
                    if tx.send(event(&data)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Move::End(status, expected) => {
                    // The last chunks are usually stored before the step's end is, but maybe
                    // after our read.
                    if !self.send_new_bytes(&tx).await {
                        return;
                    }
                    let missing = expected.map_or(0, |size| {
                        self.app.logs.complete_at(size).saturating_sub(self.offset)
                    });
                    if missing > 0 {
                        tracing::warn!(
                            "the log of attempt {} of step {} of run {} lacks {missing} bytes {} s after the attempt ended; its stream ends without them",
                            self.attempt,
                            self.step,
                            self.run,
                            self.app.logs.tail_patience().as_secs()
                        );
                    }
                    let data = LogEnded {
                        status,
                        attempt: self.attempt,
                        size: self.offset,
                        missing,
                    };
                    let _ = tx.send(event(&data)).await;
                    return;
                }
            }
            let key = (&self.run, &self.step, self.attempt);
            let deadline = tokio::time::Instant::now() + SAFETY_NET;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = self.app.shutdown.cancelled() => return,
                    received = appends.recv() => {
                        if concerns(received, |a: &LogAppended| (&a.run_id, &a.step, a.attempt) == key) {
                            break;
                        }
                    }
                    received = runs.recv() => if concerns(received, |r| r == &self.run) { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    /// Sends every byte past `offset` as `log` events; false once the client is gone or the
    /// log cannot be read.
    async fn send_new_bytes(&mut self, tx: &Sender) -> bool {
        loop {
            let data = match self.read_more().await {
                Ok(Some(data)) => data,
                Ok(None) => return true,
                Err(e) => {
                    let _ = tx.send(event(&StreamError { error: e })).await;
                    return false;
                }
            };
            let start = self.offset;
            self.offset += data.len() as u64;
            let payload = LogData {
                attempt: self.attempt,
                offset: start,
                data: base64::engine::general_purpose::STANDARD.encode(&data),
            };
            let sent = Event::default()
                .event(LogData::NAME)
                .id(format!("{}:{}", self.attempt.0, self.offset))
                .data(serde_json::to_string(&payload).unwrap_or_default());
            if tx.send(Ok(sent)).await.is_err() {
                return false;
            }
        }
    }

    /// Sends a `note` for each delay of the followed attempt's log not told yet; false once
    /// the client is gone.
    async fn send_notes(&mut self, run: &RunRecord, tx: &Sender) -> bool {
        let Some(attempt) = run
            .step(&self.step)
            .and_then(|s| s.attempts.iter().find(|a| a.attempt == self.attempt))
        else {
            return true;
        };
        for delay in attempt.log_delays.iter().skip(self.notes_sent) {
            let note = LogNote {
                attempt: self.attempt,
                offset: delay.offset,
                delayed_ms: delay.delayed_ms,
                text: delay_text(self.attempt, delay),
            };
            if tx.send(event(&note)).await.is_err() {
                return false;
            }
            self.notes_sent += 1;
        }
        true
    }

    /// Up to [`MAX_LOG_EVENT`] bytes past `offset`, or `None` when there are none yet.
    async fn read_more(&self) -> Result<Option<Vec<u8>>, String> {
        if self.attempt.0 == 0 {
            return Ok(None);
        }
        let (_, reader) = self
            .app
            .logs
            .open_from(&self.run, &self.step, self.attempt, self.offset)
            .await
            .map_err(|e| format!("cannot read the log: {e}"))?;
        let Some(reader) = reader else {
            return Ok(None);
        };
        let mut data = Vec::new();
        reader
            .take(MAX_LOG_EVENT)
            .read_to_end(&mut data)
            .await
            .map_err(|e| format!("cannot read the log: {e}"))?;
        Ok((!data.is_empty()).then_some(data))
    }

    fn next_move(&self, run: &RunRecord) -> Move {
        let Some(step) = run.step(&self.step) else {
            return Move::End(None, None);
        };
        let followed = step.attempts.iter().find(|a| a.attempt == self.attempt);
        let switching = self.latest && step.attempt > self.attempt;
        let attempt_over = followed.is_some_and(|a| a.outcome.is_some());
        let ending = step.status.is_terminal() || attempt_over && !self.latest;
        if !switching && !ending {
            return Move::Wait;
        }
        let expected = followed.and_then(|a| a.log_size);
        if let (Some(a), Some(size)) = (followed, expected) {
            let waited = now_ms().saturating_sub(a.ended_at.unwrap_or(0));
            let incomplete = self.offset < self.app.logs.complete_at(size);
            if incomplete && u128::from(waited) < self.app.logs.tail_patience().as_millis() {
                return Move::Wait;
            }
        }
        if switching {
            Move::Switch(step.attempt)
        } else {
            Move::End(Some(step.status), expected)
        }
    }
}

enum Move {
    Wait,
    Switch(AttemptNo),
    /// The step's status and the size the followed attempt's agent reported for its log.
    End(Option<StepStatus>, Option<u64>),
}
