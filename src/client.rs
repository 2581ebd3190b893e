//! HTTP client for the controller's JSON API (`/api/v1`).

use crate::cli::Global;
use crate::controllers::{Controllers, NoActiveController, Skipped};
use anyhow::{Context, Result, bail};
use drover_api::{ApiError, CsrfToken, INACTIVE_HEADER, RunList, RunView, STALE_HEADER};
use drover_protocol::RunId;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Part of a step's log as the controller has it.
pub struct LogPart {
    pub bytes: Vec<u8>,
    /// The bytes stored.
    pub size: u64,
    /// The bytes stored once the log is whole, when the attempt has ended and said so.
    pub expected: Option<u64>,
}

impl LogPart {
    /// How many bytes the attempt reported that are not stored yet.
    pub fn missing(&self) -> u64 {
        self.expected.map_or(0, |e| e.saturating_sub(self.size))
    }
}

/// Talks to the active controller among the listed ones (`--url`): the first that answers as
/// active, kept for later requests until it fails to answer or answers as inactive, when the
/// list is tried again. The token goes to listed URLs only, and redirects are followed only to
/// listed URLs, by this client itself (reqwest drops the token on a redirect to another host).
pub struct Client {
    controllers: Controllers,
    http: reqwest::Client,
    /// Whether a token is sent; without one, writes carry a CSRF token instead.
    has_token: bool,
    /// The index of the controller that answered last.
    active: Mutex<Option<usize>>,
    /// Whether the user was told that a controller answered from stale state.
    told_stale: AtomicBool,
}

/// One request, kept whole so it can be sent again to another controller.
struct Req {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// What sending a request to one controller came to.
enum Outcome {
    /// The answer, and the index of the listed controller that gave it (another than the one
    /// asked when that one redirected there).
    Answered(usize, reqwest::Response),
    /// Not the active controller (cannot connect, or it answered as inactive): try another.
    Skip(Skipped),
}

/// Redirects followed for one request at most.
const MAX_REDIRECTS: usize = 10;

/// What stands for the newest run wherever a run id is taken.
pub const LATEST: &str = "latest";

impl Client {
    /// A client for `--url`, sending `--token` (if any) with every request.
    pub fn new(g: &Global) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &g.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token cannot be sent in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            controllers: Controllers::new(g.urls())?,
            http,
            has_token: g.token.is_some(),
            active: Mutex::new(None),
            told_stale: AtomicBool::new(false),
        })
    }

    /// The run id `run` names: `latest` is the newest run; anything else must be a run id.
    pub async fn resolve_run(&self, run: &str) -> Result<RunId> {
        if run != LATEST {
            return RunId::new(run)
                .with_context(|| format!("{run:?} is not a run id (or `latest`)"));
        }
        let list = self
            .get_json::<RunList>("/api/v1/runs?limit=1")
            .await?
            .context("the controller has no run list")?;
        list.runs
            .into_iter()
            .next()
            .map(|r| r.run_id)
            .with_context(|| format!("`latest`: there are no runs at {}", self.base()))
    }

    /// POST a JSON body and read a JSON answer; `None` on 404. Without a token, first gets a
    /// CSRF token, which the controller requires of every POST then, and posts to the
    /// controller that gave it.
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>> {
        let body = serde_json::to_vec(body).context("cannot encode the request body")?;
        let mut skipped = Vec::new();
        for _ in 0..=self.controllers.len() {
            let mut req = Req {
                method: Method::POST,
                path: path.to_string(),
                headers: vec![("content-type", "application/json".to_string())],
                body: Some(body.clone()),
            };
            let resp = if self.has_token {
                self.request(&req).await?
            } else {
                let (at, csrf) = self.csrf().await?;
                req.headers.push((CsrfToken::HEADER, csrf.token));
                req.headers.push(("cookie", csrf.cookie));
                match self.send_at(at, &req).await? {
                    Outcome::Answered(_, resp) => resp,
                    Outcome::Skip(s) => {
                        self.set_active(None);
                        skipped.push(s);
                        continue;
                    }
                }
            };
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let resp = check(resp, path).await?;
            return Ok(Some(
                resp.json()
                    .await
                    .with_context(|| format!("bad JSON from {path}"))?,
            ));
        }
        Err(NoActiveController { skipped }.into())
    }

    /// A CSRF token and the controller that gave it.
    async fn csrf(&self) -> Result<(usize, CsrfToken)> {
        let path = "/api/v1/csrf";
        let (at, resp) = self.request_at(&Req::get(path)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            bail!("the controller gives no CSRF token (GET {path}); is it older than this drover?");
        }
        let csrf = check(resp, path)
            .await?
            .json()
            .await
            .with_context(|| format!("bad JSON from {path}"))?;
        Ok((at, csrf))
    }

    /// The URL of the controller that answered last, else the first listed.
    pub fn base(&self) -> String {
        let at = self.active().unwrap_or(0);
        self.controllers.base(at).to_string()
    }

    /// The run page users open in a browser.
    pub fn run_page(&self, run: &str) -> String {
        format!("{}/runs/{run}", self.base())
    }

    fn active(&self) -> Option<usize> {
        self.active.lock().map(|a| *a).unwrap_or(None)
    }

    fn set_active(&self, at: Option<usize>) {
        if let Ok(mut active) = self.active.lock() {
            *active = at;
        }
    }

    async fn send(&self, path: &str) -> Result<reqwest::Response> {
        self.send_with(path, None).await
    }

    /// GET with an optional `Last-Event-ID` (to resume an event stream).
    async fn send_with(&self, path: &str, last_event: Option<&str>) -> Result<reqwest::Response> {
        let mut req = Req::get(path);
        if let Some(id) = last_event {
            req.headers.push(("last-event-id", id.to_string()));
        }
        self.request(&req).await
    }

    /// Sends `req` to the active controller: the one that answered last, else (or when it
    /// does not answer as active) the first listed that does.
    async fn request(&self, req: &Req) -> Result<reqwest::Response> {
        Ok(self.request_at(req).await?.1)
    }

    async fn request_at(&self, req: &Req) -> Result<(usize, reqwest::Response)> {
        let mut skipped = Vec::new();
        for at in self.controllers.order(self.active()) {
            match self.send_at(at, req).await? {
                Outcome::Answered(answered, resp) => {
                    self.set_active(Some(answered));
                    return Ok((answered, resp));
                }
                Outcome::Skip(s) => {
                    tracing::debug!("controller {}: {}; trying the next", s.url, s.answer);
                    skipped.push(s);
                }
            }
        }
        self.set_active(None);
        Err(NoActiveController { skipped }.into())
    }

    /// Sends `req` to the controller at index `at`, following redirects to listed URLs only. A
    /// redirect from a controller that is not active (a standby pointing at the active one,
    /// `x-drover-inactive`) that cannot be followed skips `at`, as its 503 would.
    async fn send_at(&self, at: usize, req: &Req) -> Result<Outcome> {
        let base = self.controllers.base(at);
        let mut url = Url::parse(&format!("{base}{}", req.path))
            .with_context(|| format!("{base}{} is not a URL", req.path))?;
        let mut answering = at;
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        // How an inactive controller redirected the request, when one did.
        let mut inactive: Option<String> = None;
        let skip = |answer: String, skipped_inactive: bool, via: &Option<String>| {
            Ok(Outcome::Skip(Skipped {
                url: base.to_string(),
                answer: match via {
                    Some(via) => format!("{via}; there: {answer}"),
                    None => answer,
                },
                inactive: skipped_inactive || via.is_some(),
            }))
        };
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.request(method.clone(), url.clone());
            for (name, value) in &req.headers {
                request = request.header(*name, value);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let resp = match request.send().await {
                Ok(resp) => resp,
                // Nothing was sent: safe to send to another controller, whatever the method.
                Err(e) if e.is_connect() => {
                    return skip(format!("cannot connect ({e})"), false, &inactive);
                }
                Err(e) if method == Method::GET => return skip(format!("{e}"), false, &inactive),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "no answer from the controller at {base} to {} {}",
                        method, req.path
                    )));
                }
            };
            let state = resp
                .headers()
                .get(INACTIVE_HEADER)
                .map(|s| s.to_str().unwrap_or("inactive").to_string());
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                && let Some(state) = &state
            {
                let text = resp.text().await.unwrap_or_default();
                let detail = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.message);
                return skip(format!("503 ({state}): {detail}"), true, &inactive);
            }
            if let Some(stale) = resp.headers().get(STALE_HEADER)
                && !self.told_stale.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "the controller at {base} has lost its broker connection ({}): what it \
                     shows may be stale, and it accepts no changes until it is back",
                    stale.to_str().unwrap_or("disconnected")
                );
            }
            if !resp.status().is_redirection() {
                return Ok(Outcome::Answered(answering, resp));
            }
            let Some(location) = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(Outcome::Answered(answering, resp));
            };
            let target = url
                .join(location)
                .with_context(|| format!("{url} redirected to a bad location {location:?}"))?;
            let Some(listed) = self.controllers.listed_at(&target) else {
                if let Some(state) = state {
                    return skip(
                        format!(
                            "{} ({state}): redirects to {target}, which is not one of the \
                             controller URLs (list it with --url to be sent there)",
                            resp.status().as_u16()
                        ),
                        true,
                        &inactive,
                    );
                }
                bail!(
                    "the controller at {base} redirected {} {} to {target}, which is not one of \
                     the controller URLs (--url, DROVER_URL); not following it, so the token \
                     is not sent there",
                    method,
                    req.path
                );
            };
            if let Some(state) = state {
                inactive.get_or_insert(format!(
                    "{} ({state}): redirected to {target}",
                    resp.status().as_u16()
                ));
            }
            let keeps_method = matches!(
                resp.status(),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            );
            if !keeps_method && method != Method::GET {
                method = Method::GET;
                body = None;
            }
            url = target;
            answering = listed;
        }
        if inactive.is_some() {
            return skip(
                format!("redirected more than {MAX_REDIRECTS} times"),
                true,
                &inactive,
            );
        }
        bail!(
            "the controller at {base} redirected {} more than {MAX_REDIRECTS} times",
            req.path
        )
    }

    /// GET a JSON document; `None` on 404.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let resp = self.send(path).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, path).await?;
        Ok(Some(
            resp.json()
                .await
                .with_context(|| format!("bad JSON from {path}"))?,
        ))
    }

    pub async fn run(&self, run: &str) -> Result<Option<RunView>> {
        self.get_json(&format!("/api/v1/runs/{run}")).await
    }

    /// Raw log bytes of a step from `offset`, with the log's stored and expected sizes.
    pub async fn log(
        &self,
        run: &str,
        step: &str,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<Option<LogPart>> {
        let mut path = format!("/api/v1/runs/{run}/steps/{step}/log?offset={offset}");
        if let Some(a) = attempt {
            path.push_str(&format!("&attempt={a}"));
        }
        let resp = self.send(&path).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, &path).await?;
        let header = |name: &str| -> Option<u64> {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let (size, expected) = (header("x-drover-log-size"), header("x-drover-log-expected"));
        let bytes = resp.bytes().await?.to_vec();
        let size = size.unwrap_or(offset + bytes.len() as u64);
        Ok(Some(LogPart {
            bytes,
            size,
            expected,
        }))
    }

    /// An event stream (`text/event-stream`), resumed after `last_event`; `None` on 404.
    pub async fn events(
        &self,
        path: &str,
        last_event: Option<&str>,
    ) -> Result<Option<reqwest::Response>> {
        let resp = self.send_with(path, last_event).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(resp, path).await?))
    }

    /// A streaming download; `None` on 404.
    pub async fn download(&self, path: &str) -> Result<Option<reqwest::Response>> {
        let resp = self.send(path).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(resp, path).await?))
    }
}

async fn check(resp: reqwest::Response, path: &str) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.message);
    bail!("controller answered {status} for {path}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::LogPart;

    fn part(size: u64, expected: Option<u64>) -> LogPart {
        LogPart {
            bytes: Vec::new(),
            size,
            expected,
        }
    }

    #[test]
    fn only_reported_bytes_not_stored_are_missing() {
        assert_eq!(part(10, None).missing(), 0, "a running attempt");
        assert_eq!(part(10, Some(10)).missing(), 0, "a whole log");
        assert_eq!(part(4, Some(10)).missing(), 6);
        assert_eq!(part(12, Some(10)).missing(), 0, "more than reported");
    }
}
