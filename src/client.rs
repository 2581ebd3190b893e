//! HTTP client for the controller's JSON API (`/api/v1`).

use crate::cli::Global;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// A run as `GET /api/v1/runs/{run}` returns it (fields the CLI uses).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct RunView {
    pub run_id: String,
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub version: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub created_at: Option<u64>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub steps: Vec<StepView>,
}

/// A step within a [`RunView`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StepView {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub cache_hit: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub attempts: Vec<serde_json::Value>,
}

impl RunView {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "failed" | "aborted" | "rejected"
        )
    }
}

/// Talks to one controller.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

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
        })
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

    /// Raw log bytes of a step from `offset`, and the log's total size.
    pub async fn log(
        &self,
        run: &str,
        step: &str,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<Option<(Vec<u8>, u64)>> {
        let mut path = format!("/api/v1/runs/{run}/steps/{step}/log?offset={offset}");
        if let Some(a) = attempt {
            path.push_str(&format!("&attempt={a}"));
        }
        let resp = self.send(&path).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, &path).await?;
        let size = resp
            .headers()
            .get("x-drover-log-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await?.to_vec();
        let size = size.unwrap_or(offset + bytes.len() as u64);
        Ok(Some((bytes, size)))
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
    let detail = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&text)
        .ok()
        .and_then(|m| m.get("error").map(|e| e.to_string()))
        .unwrap_or(text);
    bail!("controller answered {status} for {path}: {detail}")
}
