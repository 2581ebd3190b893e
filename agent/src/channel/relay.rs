//! The controller calls a channel relays, with the agent's own client (and token): adding a
//! step to the run, long-polling a step until it is terminal, reporting scalars, reading the
//! run's view and answering a step's callback (for a driver running step callbacks).
//! Connection failures and 502/503/504 answers are retried for a while (the controller may be
//! restarting; adding a step is idempotent per call); the controller's own errors are passed
//! on with their code.

use super::Context;
use drover_api::{
    AddStep, ApiError, CallbackAnswer, CallbackAnswered, CsrfToken, ErrorCode, RunView,
    ScalarBatch, ScalarsStored, StepAdded, StepView,
};
use drover_protocol::StepName;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// How long a step is long-polled per request (`?wait=`).
pub const WAIT_SECS: u64 = 30;

/// How long the controller may stay unreachable before the step is told.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How long scalars are retried while the controller is unreachable.
pub const SCALARS_PATIENCE: Duration = Duration::from_secs(10);

/// The least time between two polls of a step that is not terminal yet, should the controller
/// answer at once.
const MIN_POLL: Duration = Duration::from_secs(1);

/// A failed call: what to tell the step, and whether trying again may help.
struct Failed {
    error: ApiError,
    transient: bool,
}

/// `POST {base}/api/v1/runs/{run}/steps`.
pub async fn add_step(context: &Context, request: &AddStep) -> Result<StepAdded, ApiError> {
    let url = format!(
        "{}/api/v1/runs/{}/steps",
        context.base, context.attempt.run_id
    );
    post(context, &url, request, PATIENCE).await
}

/// `POST {base}/api/v1/runs/{run}/steps/{step}/scalars`. Scalars are worth less than the step's
/// time: a controller that stays unreachable for [`SCALARS_PATIENCE`] is reported to the step.
pub async fn scalars(context: &Context, batch: &ScalarBatch) -> Result<ScalarsStored, ApiError> {
    let url = format!(
        "{}/api/v1/runs/{}/steps/{}/scalars",
        context.base, context.attempt.run_id, context.attempt.step
    );
    post(context, &url, batch, SCALARS_PATIENCE).await
}

/// `GET {base}/api/v1/runs/{run}`, retrying an unreachable controller for [`PATIENCE`].
pub async fn run(context: &Context) -> Result<RunView, ApiError> {
    let url = format!("{}/api/v1/runs/{}", context.base, context.attempt.run_id);
    let mut delay = Duration::from_millis(200);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match decode(&url, context.http.get(&url).send().await).await {
            Ok(view) => return Ok(view),
            Err(f) if f.transient && Instant::now() + delay < deadline => {
                tracing::warn!("{}; retrying in {delay:?}", f.error.message);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// `POST {base}/api/v1/runs/{run}/steps/{step}/callback`: only steps of the attempt's own run.
pub async fn callback(
    context: &Context,
    step: &StepName,
    proceed: bool,
) -> Result<CallbackAnswered, ApiError> {
    let url = format!(
        "{}/api/v1/runs/{}/steps/{step}/callback",
        context.base, context.attempt.run_id
    );
    post(context, &url, &CallbackAnswer { proceed }, PATIENCE).await
}

/// POSTs `body` as JSON, retrying transient failures for `patience`, with the CSRF token a
/// controller without an access token asks for.
async fn post<B: serde::Serialize, T: DeserializeOwned>(
    context: &Context,
    url: &str,
    body: &B,
    patience: Duration,
) -> Result<T, ApiError> {
    let mut delay = Duration::from_millis(200);
    let deadline = Instant::now() + patience;
    let mut csrf_fetched = false;
    loop {
        let mut post = context.http.post(url).json(body);
        if let Some(csrf) = context.csrf.lock().await.as_ref() {
            post = post
                .header(CsrfToken::HEADER, &csrf.token)
                .header(reqwest::header::COOKIE, &csrf.cookie);
        }
        match decode(url, post.send().await).await {
            Ok(answer) => return Ok(answer),
            // A controller without a token wants a CSRF token on every POST: fetch one (again,
            // after a controller restart) and ask once more.
            Err(f) if is_csrf_refusal(&f.error) && !csrf_fetched => {
                csrf_fetched = true;
                let csrf = csrf_token(context).await?;
                *context.csrf.lock().await = Some(csrf);
            }
            Err(f) if f.transient && Instant::now() + delay < deadline => {
                tracing::warn!("{}; retrying in {delay:?}", f.error.message);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(f) => return Err(f.error),
        }
    }
}

fn is_csrf_refusal(error: &ApiError) -> bool {
    error.code == ErrorCode::Forbidden && error.message.contains("CSRF")
}

/// `GET {base}/api/v1/csrf`.
async fn csrf_token(context: &Context) -> Result<CsrfToken, ApiError> {
    let url = format!("{}/api/v1/csrf", context.base);
    let sent = context.http.get(&url).send().await;
    decode(&url, sent).await.map_err(|f| f.error)
}

/// Long-polls `GET {base}/api/v1/runs/{run}/steps/{step}?wait=30` until the step is terminal.
pub async fn wait(context: &Context, step: &StepName) -> Result<StepView, ApiError> {
    let url = format!(
        "{}/api/v1/runs/{}/steps/{step}",
        context.base, context.attempt.run_id
    );
    let mut delay = Duration::from_millis(200);
    let mut deadline = Instant::now() + PATIENCE;
    loop {
        let asked = Instant::now();
        let sent = context
            .http
            .get(format!("{url}?wait={WAIT_SECS}"))
            .timeout(Duration::from_secs(WAIT_SECS * 2))
            .send()
            .await;
        match decode::<StepView>(&url, sent).await {
            Ok(view) if view.status.is_terminal() => return Ok(view),
            Ok(_) => {
                delay = Duration::from_millis(200);
                deadline = Instant::now() + PATIENCE;
                tokio::time::sleep_until(asked + MIN_POLL).await;
            }
            Err(f) if f.transient && Instant::now() + delay < deadline => {
                tracing::warn!("{}; retrying in {delay:?}", f.error.message);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// The answer's JSON body, or the controller's `ApiError` (or one made from the status).
async fn decode<T: DeserializeOwned>(
    url: &str,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, Failed> {
    let response = sent.map_err(|e| Failed {
        error: ApiError::new(
            ErrorCode::Unavailable,
            format!("cannot reach the controller at {url}: {e}"),
        ),
        transient: true,
    })?;
    let status = response.status().as_u16();
    // A controller that is not active (standing by, starting) may become so, or be skipped:
    // its 503, or its redirect to a controller this agent does not list.
    let inactive = response
        .headers()
        .get(drover_api::INACTIVE_HEADER)
        .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned());
    let body = response.bytes().await.map_err(|e| Failed {
        error: ApiError::new(
            ErrorCode::Unavailable,
            format!("cannot read the answer of {url}: {e}"),
        ),
        transient: true,
    })?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body).map_err(|e| Failed {
            error: ApiError::new(
                ErrorCode::Internal,
                format!("cannot read the answer of {url}: {e}"),
            ),
            transient: false,
        });
    }
    let transient = matches!(status, 502..=504) || inactive.is_some();
    if let (Some(state), 300..=399) = (&inactive, status) {
        let error = ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "{url} answered {status} ({state}): it redirects to a controller that is not \
                 one of --url"
            ),
        );
        return Err(Failed { error, transient });
    }
    let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| {
        let code = match status {
            400 => ErrorCode::BadRequest,
            401 | 403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            502..=504 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        let text = String::from_utf8_lossy(&body);
        ApiError::new(code, format!("{url} answered {status}: {}", text.trim()))
    });
    Err(Failed { error, transient })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Response;

    fn answer(status: u16, inactive: Option<&str>) -> reqwest::Result<reqwest::Response> {
        let mut response = Response::builder()
            .status(status)
            .header("location", "http://elsewhere.example/api/v1/runs/r1");
        if let Some(state) = inactive {
            response = response.header(drover_api::INACTIVE_HEADER, state);
        }
        Ok(reqwest::Response::from(response.body("").unwrap()))
    }

    #[tokio::test]
    async fn a_standbys_redirect_left_unfollowed_is_retried_like_its_503() {
        let url = "http://standby:1/api/v1/runs/r1";
        let failed = decode::<RunView>(url, answer(307, Some("standby")))
            .await
            .err()
            .unwrap();
        assert!(failed.transient);
        assert_eq!(failed.error.code, ErrorCode::Unavailable);
        assert!(
            failed.error.message.contains("answered 307 (standby)"),
            "{}",
            failed.error.message
        );
        let plain = decode::<RunView>(url, answer(307, None))
            .await
            .err()
            .unwrap();
        assert!(!plain.transient, "{}", plain.error.message);
        let standby = decode::<RunView>(url, answer(503, Some("standby")))
            .await
            .err()
            .unwrap();
        assert!(standby.transient);
    }
}
