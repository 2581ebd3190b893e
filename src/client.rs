//! HTTP client for the controller's JSON API (`/api/v1`).

use crate::cli::Global;
use anyhow::{Context, Result, bail};
use drover_api::{ApiError, CsrfToken, RunList, RunView};
use drover_protocol::RunId;
use serde::de::DeserializeOwned;

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

/// Talks to one controller.
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Whether a token is sent; without one, writes carry a CSRF token instead.
    has_token: bool,
}

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
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: g.url.trim_end_matches('/').to_string(),
            http,
            has_token: g.token.is_some(),
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
            .with_context(|| format!("`latest`: there are no runs at {}", self.base))
    }

    /// POST a JSON body and read a JSON answer; `None` on 404. Without a token, first gets a
    /// CSRF token, which the controller requires of every POST then.
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url).json(body);
        if !self.has_token {
            let csrf = self
                .get_json::<CsrfToken>("/api/v1/csrf")
                .await?
                .context("the controller gives no CSRF token (GET /api/v1/csrf); is it older than this drover?")?;
            request = request
                .header(drover_api::CsrfToken::HEADER, csrf.token)
                .header(reqwest::header::COOKIE, csrf.cookie);
        }
        let resp = request.send().await.with_context(|| {
            format!(
                "cannot reach the controller at {}: is it running? (set --url or DROVER_URL)",
                self.base
            )
        })?;
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

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The run page users open in a browser.
    pub fn run_page(&self, run: &str) -> String {
        format!("{}/runs/{run}", self.base)
    }

    async fn send(&self, path: &str) -> Result<reqwest::Response> {
        self.send_with(path, None).await
    }

    /// GET with an optional `Last-Event-ID` (to resume an event stream).
    async fn send_with(&self, path: &str, last_event: Option<&str>) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url);
        if let Some(id) = last_event {
            request = request.header("last-event-id", id);
        }
        request.send().await.with_context(|| {
            format!(
                "cannot reach the controller at {}: is it running? (set --url or DROVER_URL)",
                self.base
            )
        })
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
