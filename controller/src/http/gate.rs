//! What the HTTP listener answers before the controller is active: from the moment it listens
//! until it holds the namespace's lock, has replayed the journal and loaded its runs, every
//! route (`/healthz` and `/metrics` included) answers 503 `unavailable` with a message naming
//! what the controller waits for (starting, or standing by behind another controller); once it
//! is active, the full [`super::router`] answers.

use super::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use std::sync::{Arc, Mutex, OnceLock};

/// The router the listener serves, closed until [`Gate::open`].
pub(crate) struct Gate {
    active: OnceLock<Router>,
    waiting: Mutex<String>,
}

impl Gate {
    /// A closed gate whose answers say `waiting`.
    pub fn new(waiting: impl Into<String>) -> Arc<Gate> {
        Arc::new(Gate {
            active: OnceLock::new(),
            waiting: Mutex::new(waiting.into()),
        })
    }

    /// What the closed gate's answers say from now on.
    pub fn waiting_for(&self, waiting: impl Into<String>) {
        if let Ok(mut text) = self.waiting.lock() {
            *text = waiting.into();
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
                let text = self.waiting.lock().map(|t| t.clone()).unwrap_or_default();
                ApiError::unavailable(text).into_response()
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
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = TowerToHyperService::new(router.clone())
            .call(request)
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_closed_gate_says_what_it_waits_for_and_an_open_one_serves_the_router() {
        let gate = Gate::new("starting");
        let served = gate.router();
        let (status, body) = get_status(&served, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("unavailable") && body.contains("starting"),
            "{body}"
        );

        gate.waiting_for("standing by");
        let (_, body) = get_status(&served, "/metrics").await;
        assert!(body.contains("standing by"), "{body}");

        gate.open(Router::new().route("/healthz", get(|| async { "ok" })));
        assert_eq!(
            get_status(&served, "/healthz").await,
            (StatusCode::OK, "ok".to_string())
        );
        assert_eq!(get_status(&served, "/other").await.0, StatusCode::NOT_FOUND);
    }
}
