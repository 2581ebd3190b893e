//! The HTTP API (`/api/v1`), its event streams, `/healthz`, `/metrics` and the web UI.
//!
//! Handlers read durable state from the store and never change run state themselves: an abort
//! is an event sent to the owning task, and an added step a request the owning task answers. With a token configured, [`auth`] guards every route
//! but `/healthz`; [`guard`] adds security headers to every answer and, without a token, keeps
//! other sites out; [`serve`] accepts connections within limits.

mod api;
pub(crate) mod auth;
mod automation;
mod console;
pub(crate) mod csrf;
mod external;
mod fence;
pub(crate) mod files;
pub(crate) mod gate;
mod guard;
mod live;
mod pages;
mod rerun;
mod scalars;
mod scrape;
pub(crate) mod serve;
mod steps;
mod tasks;
mod views;

use crate::logs::LogStore;
use crate::logs::archive::LogArchive;
use crate::metrics::Metrics;
use crate::scheduler::RunRecord;
use crate::service::Command;
use crate::store::{Store, StoreError};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_amqp::Broker;
use drover_api::ErrorCode;
use drover_protocol::{AttemptNo, Names, RunId, StepName};
use drover_storage::BlobStore;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What every handler can reach.
pub(crate) struct AppState {
    pub store: Store,
    /// The configured artifact store; the byte routes stream from and to it.
    pub blobs: Arc<dyn BlobStore>,
    pub logs: LogStore,
    /// Reads archived logs back when their files are gone.
    pub log_archive: LogArchive,
    pub broker: Arc<Broker>,
    pub names: Names,
    pub metrics: Arc<Metrics>,
    pub commands: mpsc::Sender<Command>,
    /// Base URL for links, without a trailing slash.
    pub public_url: String,
    /// The token every route but `/healthz` requires, when one is configured.
    pub auth: Option<auth::Auth>,
    /// Without a token, what every POST must carry.
    pub csrf: csrf::Csrf,
    /// Ends the event streams, which would otherwise hold graceful shutdown open forever.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// What an upload may take.
    pub uploads: files::UploadLimits,
}

pub(crate) type App = Arc<AppState>;

impl AppState {
    pub fn run_url(&self, run: &RunId) -> String {
        format!("{}/runs/{run}", self.public_url)
    }

    /// Writes the archived log of `attempt` of `step` back to its file when the file is gone
    /// or short (the data dir was lost in a takeover), so every reader finds it there.
    pub async fn restore_log(
        &self,
        run: &RunRecord,
        step: &StepName,
        attempt: AttemptNo,
    ) -> Result<(), String> {
        let Some(archived) = run
            .step(step)
            .and_then(|s| s.attempts.iter().find(|a| a.attempt == attempt))
            .and_then(|a| a.log_archive.as_ref())
        else {
            return Ok(());
        };
        let restored = self
            .log_archive
            .restore(&run.run_id, step, attempt, archived)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the archived log of attempt {attempt} of step {step} of run {} \
                     (blob {}): {e}",
                    run.run_id, archived.digest
                )
            })?;
        if restored {
            tracing::info!(
                "read the log of attempt {attempt} of step {step} of run {} back from the \
                 artifact store (blob {})",
                run.run_id,
                archived.digest
            );
        }
        Ok(())
    }

    /// The run, or a 404 naming it.
    pub fn run(&self, run: &str) -> Result<RunRecord, ApiError> {
        let not_found = || ApiError::not_found(format!("no run {run}"));
        let id = RunId::new(run).map_err(|_| not_found())?;
        self.store.run(&id)?.ok_or_else(not_found)
    }

    /// The run's view, with the run it was submitted again from and what fired it.
    pub fn run_view(&self, run: &RunRecord) -> drover_api::RunView {
        let mut view = views::run_view(run, self.run_url(&run.run_id));
        match self.store.submitted(&run.run_id) {
            Ok(Some(submitted)) => {
                view.rerun_of = submitted.rerun_of;
                view.fired_by = submitted.fired_by;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read the submission of run {}: {e}", run.run_id),
        }
        view
    }
}

/// The routes of the API and the UI.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/events", get(live::all_runs))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/{run}", get(api::get_run))
        .route("/api/v1/runs/{run}/stream", get(live::run))
        .route("/api/v1/runs/{run}/console", get(api::console))
        .route("/api/v1/runs/{run}/abort", post(api::abort_run))
        .route("/api/v1/runs/{run}/rerun", post(rerun::rerun))
        .route("/api/v1/runs/{run}/artifacts", get(rerun::artifacts))
        .route("/api/v1/csrf", get(csrf::token))
        .route(
            "/api/v1/schedules",
            get(automation::list_schedules).post(automation::add_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/remove",
            post(automation::remove_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/pause",
            post(automation::pause_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/resume",
            post(automation::resume_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/run-now",
            post(automation::run_now),
        )
        .route(
            "/api/v1/triggers",
            get(automation::list_triggers).post(automation::add_trigger),
        )
        .route(
            "/api/v1/triggers/{name}/remove",
            post(automation::remove_trigger),
        )
        .route("/api/v1/runs/{run}/steps", post(steps::add_step))
        .route("/api/v1/runs/{run}/steps/{step}", get(steps::get_step))
        .route(
            "/api/v1/runs/{run}/steps/{step}/scalars",
            post(scalars::post),
        )
        .route("/api/v1/runs/{run}/scalars", get(scalars::list))
        .route("/api/v1/runs/{run}/scalars/stream", get(scalars::stream))
        .route(
            "/api/v1/runs/{run}/steps/{step}/log",
            get(files::get_log).post(external::append_log),
        )
        .route(
            "/api/v1/runs/{run}/steps/{step}/report",
            post(external::report),
        )
        .route(
            "/api/v1/runs/{run}/steps/{step}/callback",
            post(external::answer_callback),
        )
        .route("/api/v1/runs/{run}/steps/{step}/log/stream", get(live::log))
        .route(
            "/api/v1/runs/{run}/steps/{step}/artifacts/{name}",
            get(files::get_artifact),
        )
        .route(
            "/api/v1/blobs/{digest}",
            get(files::get_blob)
                .head(files::head_blob)
                .put(files::put_blob),
        )
        .route("/api/v1/tasks", get(tasks::list).post(tasks::register))
        .route("/api/v1/tasks/{id}", get(tasks::get))
        .route("/api/v1/agents", get(api::agents))
        .route("/api/v1/queues", get(api::queues))
        .route("/", get(pages::runs_page))
        .route("/runs/{run}", get(pages::run_page))
        .route("/tasks", get(pages::tasks_page))
        .route("/agents", get(pages::agents_page))
        .route("/queues", get(pages::queues_page))
        .route("/schedules", get(pages::schedules_page))
        .route("/assets/{name}", get(pages::asset))
        .fallback(|| async {
            ApiError::not_found("no such route; see ARCHITECTURE.md \"HTTP API\"")
        })
        // Innermost: a request the token or CSRF checks refuse is refused for that first.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            fence::refuse_writes_while_cut_off,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            csrf::require,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::same_site,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
        // Blob uploads are streamed to the store, so their size is not bounded by memory.
        .layer(DefaultBodyLimit::disable())
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::extract::Request| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        uri = %guard::redacted(request.uri()),
                        version = ?request.version(),
                    )
                },
            ),
        )
        .with_state(app)
}

/// An error answer: the contract's [`drover_api::ApiError`] body with its code's status.
#[derive(Debug)]
pub(crate) struct ApiError(drover_api::ApiError);

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(drover_api::ApiError::new(code, message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("http: {message}");
        Self::new(ErrorCode::Internal, message.to_string())
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.0)).into_response()
    }
}
