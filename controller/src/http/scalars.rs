//! Scalars: a running step's agent posts the points the step reported (over its channel), the
//! UI and `drover scalars` read them back, and a stream tells live views when a step's series
//! changed. Storage and downsampling are the store's (`store::scalars`).

use super::{ApiError, App};
use crate::scheduler::{RunRecord, StepStatus};
use crate::store::ScalarsError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use drover_api::events::RunEnded;
use drover_api::scalars::{MAX_NAME_BYTES, MAX_POINTS_PER_BATCH};
use drover_api::{ScalarBatch, ScalarList, ScalarPoint, ScalarsChanged, ScalarsStored, SseEvent};
use drover_protocol::{RunId, StepName};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// The largest batch read.
pub const MAX_BATCH_BYTES: usize = 2 << 20;
/// The least time between two events about the same stream.
const EVENT_GAP: Duration = Duration::from_millis(500);
/// Look at the run again this often even without a notification.
const SAFETY_NET: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
pub struct ScalarQuery {
    step: Option<String>,
}

/// The step `name` of `run`, or a 404 naming it.
fn find_step(run: &RunRecord, name: &str) -> Result<StepName, ApiError> {
    let missing = || ApiError::not_found(format!("run {} has no step {name:?}", run.run_id));
    let step = StepName::new(name).map_err(|_| missing())?;
    run.step(&step).ok_or_else(missing)?;
    Ok(step)
}

/// `POST /api/v1/runs/{run}/steps/{step}/scalars`: appends the points of the step's current,
/// running attempt.
pub async fn post(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    body: Body,
) -> Result<Json<ScalarsStored>, ApiError> {
    let record = app.run(&run)?;
    let step = find_step(&record, &step)?;
    let body = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|e| {
            ApiError::too_large(format!(
                "cannot read the scalars of step {step} (at most {} MiB a batch): {e}",
                MAX_BATCH_BYTES >> 20
            ))
        })?;
    let batch: ScalarBatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad scalars of step {step}: {e}; send JSON {{attempt, points: [{{title, series, iteration, value}}]}} with finite values"
        ))
    })?;
    check_points(&step, &batch.points)?;
    // Checked on durable state: only the step's current attempt, while it runs (or is queued,
    // when its claim has not reached the controller yet), may report.
    let current = record
        .step(&step)
        .ok_or_else(|| ApiError::not_found("gone"))?;
    let active = matches!(current.status, StepStatus::Running | StepStatus::Queued);
    if record.status.is_terminal() || !active || current.attempt != batch.attempt {
        return Err(ApiError::bad_request(format!(
            "attempt {} of step {step} cannot report scalars: the step is {} and its current \
             attempt is {}; only the current attempt of a running step can",
            batch.attempt,
            current.status.as_str(),
            current.attempt
        )));
    }
    let stored = batch.points.len() as u64;
    let (store, run_id, points) = (app.store.clone(), record.run_id.clone(), batch.points);
    let appended =
        tokio::task::spawn_blocking(move || store.append_scalars(&run_id, &step, &points))
            .await
            .map_err(ApiError::internal)?;
    appended.map_err(|e| match e {
        ScalarsError::TooManySeries { .. } => ApiError::too_large(e.to_string()),
        other => ApiError::internal(other),
    })?;
    Ok(Json(ScalarsStored { stored }))
}

/// Titles and series are non-empty, short and NUL-free; a batch is bounded.
fn check_points(step: &StepName, points: &[ScalarPoint]) -> Result<(), ApiError> {
    if points.len() > MAX_POINTS_PER_BATCH {
        return Err(ApiError::too_large(format!(
            "a batch of step {step} has {} points; send at most {MAX_POINTS_PER_BATCH} a batch",
            points.len()
        )));
    }
    for point in points {
        for (what, name) in [("title", &point.title), ("series", &point.series)] {
            if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
                return Err(ApiError::bad_request(format!(
                    "step {step}: bad scalar {what} {name:?} (title {:?}, series {:?}): give 1 to {MAX_NAME_BYTES} bytes without NUL",
                    point.title, point.series
                )));
            }
        }
        if !point.value.is_finite() {
            return Err(ApiError::bad_request(format!(
                "step {step}: scalar {}/{} at iteration {} is not a finite number",
                point.title, point.series, point.iteration
            )));
        }
    }
    Ok(())
}

/// `GET /api/v1/runs/{run}/scalars[?step=S]`: every series of the run or of one step, in the
/// run's step order.
pub async fn list(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<ScalarQuery>,
) -> Result<Json<ScalarList>, ApiError> {
    let record = app.run(&run)?;
    let step = q.step.map(|s| find_step(&record, &s)).transpose()?;
    let mut series = app.store.scalars(&record.run_id, step.as_ref())?;
    let position = |name: &StepName| record.steps.iter().position(|s| &s.name == name);
    // Stable: within a step the store's order (title, then series) stays.
    series.sort_by_key(|s| position(&s.step));
    Ok(Json(ScalarList {
        run_id: record.run_id,
        series,
    }))
}

fn event<E: SseEvent>(data: &E) -> Result<Event, Infallible> {
    let json = serde_json::to_string(data).unwrap_or_default();
    Ok(Event::default().event(E::NAME).data(json))
}

/// `GET /api/v1/runs/{run}/scalars/stream[?step=S]`: `scalars` `{"step"}` for each step that
/// has scalars at once, then whenever a step's scalars change (at most every half second), and
/// `end` once the run has ended.
pub async fn stream(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<ScalarQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let record = app.run(&run)?;
    let only = q.step.map(|s| find_step(&record, &s)).transpose()?;
    let (tx, rx) = mpsc::channel(16);
    // Subscribed before the first read, so nothing between the two is missed.
    let changes = app.store.watch_scalars();
    let runs = app.store.watch_runs();
    let follower = Follower {
        app,
        run: record.run_id,
        only,
    };
    tokio::spawn(follower.follow(tx, changes, runs));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// One client following one run's scalars.
struct Follower {
    app: App,
    run: RunId,
    only: Option<StepName>,
}

type Sender = mpsc::Sender<Result<Event, Infallible>>;

impl Follower {
    /// Every step of the run (or the followed one) that has scalars.
    fn steps_with_scalars(&self) -> BTreeSet<StepName> {
        match self.app.store.scalars(&self.run, self.only.as_ref()) {
            Ok(series) => series.into_iter().map(|s| s.step).collect(),
            Err(e) => {
                tracing::warn!("scalars of run {}: {e}", self.run);
                BTreeSet::new()
            }
        }
    }

    fn ended(&self) -> bool {
        match self.app.store.run(&self.run) {
            Ok(Some(run)) => run.status.is_terminal(),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("scalars of run {}: {e}", self.run);
                false
            }
        }
    }

    async fn follow(
        self,
        tx: Sender,
        mut changes: broadcast::Receiver<(RunId, StepName)>,
        mut runs: broadcast::Receiver<RunId>,
    ) {
        let mut pending = self.steps_with_scalars();
        let mut next_send = Instant::now();
        let mut ended = self.ended();
        loop {
            if !pending.is_empty() && Instant::now() >= next_send {
                for step in std::mem::take(&mut pending) {
                    if tx.send(event(&ScalarsChanged { step })).await.is_err() {
                        return;
                    }
                }
                next_send = Instant::now() + EVENT_GAP;
            }
            if ended && pending.is_empty() {
                // Points are only taken from running steps, so nothing more can come.
                let status = match self.app.store.run(&self.run) {
                    Ok(Some(run)) => run.status,
                    _ => return,
                };
                let _ = tx.send(event(&RunEnded { status })).await;
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = self.app.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_send), if !pending.is_empty() => {}
                received = changes.recv() => match received {
                    Ok((run, step)) => {
                        if run == self.run && self.only.as_ref().is_none_or(|o| o == &step) {
                            pending.insert(step);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        pending.extend(self.steps_with_scalars());
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                received = runs.recv() => {
                    if matches!(&received, Ok(r) if r != &self.run) {
                        continue;
                    }
                    ended = self.ended();
                }
                _ = tokio::time::sleep(SAFETY_NET) => ended = self.ended(),
            }
        }
    }
}
