//! A controller that cannot reach its broker stops acting: while the connection that holds the
//! namespace's lock is lost, and until a new one holds the lock again, every write (any method
//! but GET, HEAD and OPTIONS; blob uploads excepted, see [`is_write`]) answers 503 `unavailable` with [`INACTIVE_HEADER`] `disconnected`,
//! saying since when and what happens next, so a client with several controller URLs sends it
//! to the next one: what such a write changes would reach neither the broker nor an agent before
//! the lock is back, and would be lost (journaled under a deposed epoch) if another controller
//! takes over meanwhile, which this one cannot know in advance. Reads go on answering from what
//! this controller last knew, marked with [`STALE_HEADER`].

use super::{ApiError, App};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_amqp::LinkState;
use drover_api::{INACTIVE_HEADER, STALE_HEADER};
use drover_protocol::Names;
use tokio::time::Instant;

/// The [`INACTIVE_HEADER`] value of a write refused while the broker connection is lost.
pub(crate) const DISCONNECTED: &str = "disconnected";

/// Refuses writes while the broker connection is lost and marks reads as maybe stale.
pub(crate) async fn refuse_writes_while_cut_off(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let state = app.broker.state();
    if state == LinkState::Up {
        return next.run(request).await;
    }
    let now = Instant::now();
    if is_write(request.method(), request.uri().path()) {
        let mut response = ApiError::unavailable(refusal(&app.names, state, now)).into_response();
        response
            .headers_mut()
            .insert(INACTIVE_HEADER, HeaderValue::from_static(DISCONNECTED));
        return response;
    }
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&stale(state, now)) {
        response.headers_mut().insert(STALE_HEADER, value);
    }
    response
}

/// Whether a request changes what this controller acts on. A blob upload does not: it stores
/// content-addressed bytes in the artifact store, which only a step's result, sent through the
/// broker, makes part of a run; refusing it would fail an agent's upload over a broker blip.
fn is_write(method: &Method, path: &str) -> bool {
    let upload = *method == Method::PUT && path.starts_with("/api/v1/blobs/");
    !upload && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The [`STALE_HEADER`] value: how long the connection has been lost.
fn stale(state: LinkState, now: Instant) -> String {
    match state {
        LinkState::Down { since, .. } => format!(
            "{DISCONNECTED} for {:.1}s",
            now.saturating_duration_since(since).as_secs_f64()
        ),
        LinkState::Up | LinkState::Closed => DISCONNECTED.to_string(),
    }
}

/// What the 503 of a write refused in `state` (not [`LinkState::Up`]) says.
fn refusal(names: &Names, state: LinkState, now: Instant) -> String {
    let lock = names.controller_lock();
    let why = match state {
        LinkState::Down {
            lock_refused_since: Some(refused),
            since,
        } => format!(
            "this controller lost its broker connection {:.1}s ago; the broker answers again, \
             but another connection has held the lock {lock} of namespace {names} for {:.1}s: \
             another controller has probably taken over, and this one stops unless it gets the \
             lock back soon",
            now.saturating_duration_since(since).as_secs_f64(),
            now.saturating_duration_since(refused).as_secs_f64(),
        ),
        LinkState::Down { since, .. } => format!(
            "this controller lost its broker connection {:.1}s ago and is reconnecting; another \
             controller may take over namespace {names} meanwhile (a standby takes the lock \
             {lock} once the broker drops the lost connection)",
            now.saturating_duration_since(since).as_secs_f64(),
        ),
        LinkState::Up | LinkState::Closed => format!(
            "this controller has given up the lock {lock} of namespace {names} and is stopping"
        ),
    };
    format!(
        "{why}. It accepts no change until it holds the lock again; nothing was done: send the \
         request again, to the active controller (clients given several --url or DROVER_URL \
         try the next one). Reads still answer, from what this controller last knew."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_reads_pass_and_the_header_value_is_one_of_the_contracts() {
        for read in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_write(&read, "/api/v1/runs"), "{read}");
        }
        for write in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_write(&write, "/api/v1/runs/r/rerun"), "{write}");
        }
        assert!(!is_write(&Method::PUT, "/api/v1/blobs/sha256:00"));
        assert!(is_write(&Method::POST, "/api/v1/blobs/sha256:00"));
        assert!(drover_api::INACTIVE_STATES.contains(&DISCONNECTED));
    }

    #[test]
    fn the_refusal_says_since_when_what_happens_next_and_whether_the_lock_is_taken() {
        let names = Names::new("team1").unwrap();
        let now = Instant::now();
        let since = now.checked_sub(Duration::from_millis(2500)).unwrap_or(now);
        let down = LinkState::Down {
            since,
            lock_refused_since: None,
        };
        let text = refusal(&names, down, now);
        for part in [
            "lost its broker connection 2.5s ago and is reconnecting",
            "another controller may take over namespace team1",
            "team1.controller",
            "nothing was done",
            "Reads still answer",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert_eq!(stale(down, now), "disconnected for 2.5s");
        let taken = LinkState::Down {
            since,
            lock_refused_since: Some(now),
        };
        let text = refusal(&names, taken, now);
        assert!(
            text.contains("held the lock team1.controller of namespace team1 for 0.0s")
                && text.contains("another controller has probably taken over"),
            "{text}"
        );
    }
}
