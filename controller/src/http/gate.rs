//! What the HTTP listener answers before the controller is active: from the moment it listens
//! until it holds the namespace's lock, has replayed the journal and loaded its runs, every
//! route (`/healthz` and `/metrics` included) answers 503 `unavailable` with a message naming
//! what the controller waits for (starting, or standing by behind another controller) and the
//! header [`INACTIVE_HEADER`] saying which, so a client with several controller URLs tells it
//! from the active controller's own 503s and moves on; once it is active, the full
//! [`super::router`] answers.

use super::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use drover_api::INACTIVE_HEADER;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a closed gate is closed: the value of its answers' [`INACTIVE_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inactive {
    /// Taking the lock, replaying the journal, loading runs.
    Starting,
    /// Another controller is active on the namespace.
    Standby,
}

impl Inactive {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Inactive::Starting => "starting",
            Inactive::Standby => "standby",
        })
    }
}

/// The router the listener serves, closed until [`Gate::open`].
pub(crate) struct Gate {
    active: OnceLock<Router>,
    waiting: Mutex<(Inactive, String)>,
}

impl Gate {
    /// A closed gate of a starting controller whose answers say `waiting`.
    pub fn new(waiting: impl Into<String>) -> Arc<Gate> {
        Arc::new(Gate {
            active: OnceLock::new(),
            waiting: Mutex::new((Inactive::Starting, waiting.into())),
        })
    }

    /// Why the closed gate is closed, and what its answers say, from now on.
    pub fn waiting_for(&self, state: Inactive, waiting: impl Into<String>) {
        if let Ok(mut now) = self.waiting.lock() {
            *now = (state, waiting.into());
        }
    }

    /// From now on every request goes to `router`.
    pub fn open(&self, router: Router) {
        let _ = self.active.set(router);
    }

    /// The router to serve: the gate's answer while closed, `router` once open.
    pub fn router(self: &Arc<Self>) -> Router {
        let gate = self.clone();
        Router::new().fallback(move |request: Request| {
            let gate = gate.clone();
            async move { gate.answer(request).await }
        })
    }

    async fn answer(&self, request: Request) -> Response {
        match self.active.get() {
            Some(router) => match TowerToHyperService::new(router.clone()).call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None => {
                let (state, text) = self
                    .waiting
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or((Inactive::Starting, String::new()));
                let mut response = ApiError::unavailable(text).into_response();
                response
                    .headers_mut()
                    .insert(INACTIVE_HEADER, state.header());
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;

    async fn get_status(router: &Router, path: &str) -> (StatusCode, String) {
        let (status, _, body) = get_full(router, path).await;
        (status, body)
    }

    /// The status, the [`INACTIVE_HEADER`] and the body of a GET of `path`.
    async fn get_full(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = TowerToHyperService::new(router.clone())
            .call(request)
            .await
            .unwrap();
        let status = response.status();
        let inactive = response
            .headers()
            .get(INACTIVE_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            inactive,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_closed_gate_says_what_it_waits_for_and_an_open_one_serves_the_router() {
        let gate = Gate::new("starting");
        let served = gate.router();
        let (status, inactive, body) = get_full(&served, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(inactive.as_deref(), Some("starting"));
        assert!(
            body.contains("unavailable") && body.contains("starting"),
            "{body}"
        );

        gate.waiting_for(Inactive::Standby, "standing by");
        let (_, inactive, body) = get_full(&served, "/metrics").await;
        assert_eq!(inactive.as_deref(), Some("standby"));
        assert!(body.contains("standing by"), "{body}");

        gate.open(Router::new().route("/healthz", get(|| async { "ok" })));
        assert_eq!(
            get_full(&served, "/healthz").await,
            (StatusCode::OK, None, "ok".to_string())
        );
        assert_eq!(get_status(&served, "/other").await.0, StatusCode::NOT_FOUND);
    }
}
