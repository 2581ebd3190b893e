//! What the HTTP listener answers before the controller is active: from the moment it listens
//! until it holds the namespace's lock, has replayed the journal and loaded its runs, every
//! route (`/healthz` and `/metrics` included) answers 503 `unavailable` with a message naming
//! what the controller waits for (starting, or standing by behind another controller) and the
//! header [`INACTIVE_HEADER`] saying which, so a client with several controller URLs tells it
//! from the active controller's own 503s and moves on; once it is active, the full
//! [`super::router`] answers.
//!
//! A standby that knows the active controller's URL ([`Gate::redirect_reads_to`]) answers a
//! read (GET, HEAD) with 307 to that URL, path and query kept (less a `token`, which goes only
//! where its user sent it), still with the header, except `/healthz` and `/metrics`, which stay
//! this process's own for monitoring. Writes keep the 503:
//! a client follows a 307 with the same method and body, and one given several controller URLs
//! follows redirects only to those; refusing the write lets each client send it to the
//! controller it chooses, with the token it gives only to the URLs it lists.

use super::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
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
    /// The active controller's public URL, which a standby redirects reads to.
    leader: Mutex<Option<String>>,
}

impl Gate {
    /// A closed gate of a starting controller whose answers say `waiting`.
    pub fn new(waiting: impl Into<String>) -> Arc<Gate> {
        Arc::new(Gate {
            active: OnceLock::new(),
            waiting: Mutex::new((Inactive::Starting, waiting.into())),
            leader: Mutex::new(None),
        })
    }

    /// Why the closed gate is closed, and what its answers say, from now on.
    pub fn waiting_for(&self, state: Inactive, waiting: impl Into<String>) {
        if let Ok(mut now) = self.waiting.lock() {
            *now = (state, waiting.into());
        }
    }

    /// From now on, while standing by, reads are redirected to the active controller at `url`
    /// (its public URL, without a trailing slash); a URL that is not an absolute http(s) URL
    /// without query is ignored, and reads keep the 503.
    pub fn redirect_reads_to(&self, url: &str) {
        let url = url.trim_end_matches('/');
        let usable = url.parse::<Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri.query().is_none()
        });
        if let Ok(mut leader) = self.leader.lock() {
            *leader = usable.then(|| url.to_string());
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
                let leader = self.leader.lock().ok().and_then(|l| l.clone());
                let mut response = match leader {
                    Some(leader) if state == Inactive::Standby && redirects(&request) => {
                        redirect(&leader, request.uri())
                    }
                    _ => ApiError::unavailable(text).into_response(),
                };
                response
                    .headers_mut()
                    .insert(INACTIVE_HEADER, state.header());
                response
            }
        }
    }
}

/// Whether a standby that knows the active controller redirects `request`: reads only, and not
/// the process's own health and metrics.
fn redirects(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && !matches!(request.uri().path(), "/healthz" | "/metrics")
}

/// 307 to `leader` with the path and query of `uri`, less a `token` parameter: the target came
/// from the broker, and a login token in a URL goes only where the user sent it.
fn redirect(leader: &str, uri: &Uri) -> Response {
    let (_, query) = super::auth::split_token(uri.query().unwrap_or(""));
    let target = match query.as_str() {
        "" => format!("{leader}{}", uri.path()),
        query => format!("{leader}{}?{query}", uri.path()),
    };
    match HeaderValue::from_str(&target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => ApiError::unavailable("the active controller's URL is not a URL").into_response(),
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

    /// The status, the [`INACTIVE_HEADER`] and the `location` of a `method` request of `path`.
    async fn send(
        router: &Router,
        method: Method,
        path: &str,
    ) -> (StatusCode, Option<String>, Option<String>) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = TowerToHyperService::new(router.clone())
            .call(request)
            .await
            .unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_string())
        };
        (
            response.status(),
            header(INACTIVE_HEADER),
            header(header::LOCATION.as_str()),
        )
    }

    #[tokio::test]
    async fn a_standby_redirects_reads_to_the_active_controller_but_not_writes_health_or_metrics() {
        let gate = Gate::new("starting");
        let served = gate.router();
        gate.redirect_reads_to("http://10.0.0.7:8470/");
        let starting = send(&served, Method::GET, "/runs/r1").await;
        assert_eq!(
            starting,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("starting".into()),
                None
            ),
            "only a standby redirects"
        );

        gate.waiting_for(Inactive::Standby, "standing by");
        let read = "/api/v1/runs/r1/steps/s1/log?offset=10&attempt=2";
        assert_eq!(
            send(&served, Method::GET, read).await,
            (
                StatusCode::TEMPORARY_REDIRECT,
                Some("standby".into()),
                Some(format!("http://10.0.0.7:8470{read}"))
            )
        );
        assert_eq!(
            send(&served, Method::HEAD, "/runs/r1").await.2.as_deref(),
            Some("http://10.0.0.7:8470/runs/r1")
        );
        for (sent, kept) in [
            ("/runs/r1?token=s3cret", "/runs/r1"),
            ("/runs/r1?a=1&token=s3cret&b=2", "/runs/r1?a=1&b=2"),
        ] {
            assert_eq!(
                send(&served, Method::GET, sent).await.2,
                Some(format!("http://10.0.0.7:8470{kept}")),
                "a login token is not passed on to a URL read from the broker"
            );
        }
        for (method, path) in [
            (Method::POST, "/api/v1/runs/r1/abort"),
            (Method::PUT, "/api/v1/blobs/ab"),
            (Method::DELETE, "/api/v1/schedules/nightly"),
            (Method::GET, "/healthz"),
            (Method::GET, "/metrics"),
            (Method::HEAD, "/healthz"),
        ] {
            assert_eq!(
                send(&served, method.clone(), path).await,
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("standby".into()),
                    None
                ),
                "{method} {path}"
            );
        }

        gate.redirect_reads_to("10.0.0.7:8470?x=1");
        assert_eq!(
            send(&served, Method::GET, "/runs/r1").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "not a usable URL"
        );
        gate.redirect_reads_to("https://ctl.example/drover");
        assert_eq!(
            send(&served, Method::GET, "/").await.2.as_deref(),
            Some("https://ctl.example/drover/")
        );

        gate.open(Router::new().route("/runs/r1", get(|| async { "run" })));
        assert_eq!(
            send(&served, Method::GET, "/runs/r1").await,
            (StatusCode::OK, None, None),
            "an open gate serves whatever it knew"
        );
    }
}
