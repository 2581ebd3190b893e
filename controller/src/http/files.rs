//! Byte endpoints: blobs (streamed in and out of the configured store, uploads within
//! [`UploadLimits`]), artifacts by name, and step logs.

use super::{ApiError, App};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_protocol::{AttemptNo, Digest, OutputName, StepName};
use drover_storage::BlobError;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

/// What an upload may take.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Largest blob accepted (`--max-artifact-size`).
    pub max_size: u64,
    /// Free space an upload must leave where it is written (`--min-free-space`).
    pub min_free_space: u64,
    /// Where uploads are written on this machine (the local store's directory); `None` when
    /// they go to a bucket.
    pub disk: Option<PathBuf>,
}

/// Free space is looked at again after this many bytes of an upload.
const SPACE_CHECK_EVERY: u64 = 8 * 1024 * 1024;

/// Why an upload was stopped part-way.
const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const NO_SPACE: u8 = 2;

impl UploadLimits {
    fn too_large(&self, size: Option<u64>) -> ApiError {
        let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
        ApiError::too_large(format!(
            "the artifact is larger than the controller accepts{size}: the limit is {} bytes (--max-artifact-size)",
            self.max_size
        ))
    }

    fn no_space(&self, free: u64) -> ApiError {
        ApiError::unavailable(format!(
            "the controller's disk is too full for this upload: {free} bytes free, and uploads must leave {} (--min-free-space)",
            self.min_free_space
        ))
    }

    /// Why `incoming` more bytes cannot be stored now, if they would leave less than the margin
    /// (for blobs that do not come through [`put_blob`]).
    pub(crate) fn space_for(&self, incoming: u64) -> Result<(), String> {
        self.check_space(incoming).map_err(|e| e.0.message)
    }

    /// Refuses an upload of `incoming` more bytes when it would leave less than the margin.
    fn check_space(&self, incoming: u64) -> Result<(), ApiError> {
        let Some(dir) = &self.disk else {
            return Ok(());
        };
        match fs4::available_space(dir) {
            Ok(free) if free < incoming.saturating_add(self.min_free_space) => {
                Err(self.no_space(free))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::internal(format!(
                "cannot read the free space of {}: {e}",
                dir.display()
            ))),
        }
    }
}

fn parse_digest(digest: &str) -> Result<Digest, ApiError> {
    Digest::new(digest).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A streamed download of a stored blob, or 404.
async fn blob_response(
    app: &App,
    digest: &Digest,
    file_name: Option<&str>,
) -> Result<Response, ApiError> {
    let Some(blob) = app.blobs.open(digest).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("no blob {digest}")));
    };
    let size = blob.size;
    let mut response = Body::from_stream(blob.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(name) = file_name {
        let disposition = format!("attachment; filename=\"{}\"", safe_file_name(name));
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}

/// A file name fit for a quoted header value: no quotes, backslashes, separators or controls.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "artifact".to_string()
    } else {
        cleaned
    }
}

pub async fn get_blob(
    State(app): State<App>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    blob_response(&app, &parse_digest(&digest)?, None).await
}

pub async fn head_blob(
    State(app): State<App>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    match app.blobs.stat(&digest).await.map_err(ApiError::internal)? {
        Some(size) => Ok((StatusCode::OK, [(header::CONTENT_LENGTH, size)]).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

pub async fn put_blob(
    State(app): State<App>,
    Path(digest): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    let limits = app.uploads.clone();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|size| size > limits.max_size) {
        return Err(limits.too_large(declared));
    }
    limits.check_space(declared.unwrap_or(0))?;
    // The declared length may be absent or false: the body is counted as it arrives.
    let stopped = Arc::new(AtomicU8::new(FINE));
    let mut received = 0u64;
    let mut checked = 0u64;
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other)
        .map({
            let (limits, stopped) = (limits.clone(), stopped.clone());
            move |chunk| {
                let chunk = chunk?;
                received += chunk.len() as u64;
                if received > limits.max_size {
                    stopped.store(TOO_LARGE, Ordering::SeqCst);
                    return Err(std::io::Error::other("the upload is too large"));
                }
                if received - checked >= SPACE_CHECK_EVERY {
                    checked = received;
                    if limits.check_space(0).is_err() {
                        stopped.store(NO_SPACE, Ordering::SeqCst);
                        return Err(std::io::Error::other("the disk is too full"));
                    }
                }
                Ok(chunk)
            }
        })
        .boxed();
    let put = app.blobs.put(&digest, body).await;
    match stopped.load(Ordering::SeqCst) {
        TOO_LARGE => return Err(limits.too_large(declared)),
        NO_SPACE => {
            let free = limits
                .disk
                .as_ref()
                .and_then(|d| fs4::available_space(d).ok())
                .unwrap_or(0);
            return Err(limits.no_space(free));
        }
        _ => {}
    }
    match put {
        Ok(size) => Ok((
            StatusCode::CREATED,
            axum::Json(drover_api::BlobStored { digest, size }),
        )
            .into_response()),
        Err(e @ BlobError::DigestMismatch { .. }) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ BlobError::Body(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub async fn get_artifact(
    State(app): State<App>,
    Path((run, step, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let record = app.run(&run)?;
    let missing = || {
        ApiError::not_found(format!(
            "no artifact {name:?} for step {step:?} of run {run}"
        ))
    };
    let step_name = StepName::new(step.as_str()).map_err(|_| missing())?;
    let output = OutputName::new(name.as_str()).map_err(|_| missing())?;
    let artifact = record
        .step(&step_name)
        .and_then(|s| s.outputs.get(&output))
        .ok_or_else(missing)?;
    blob_response(&app, &artifact.digest, Some(artifact.file_name.as_str())).await
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    attempt: Option<u32>,
    offset: Option<u64>,
    /// At most this many bytes from `offset` (the console loading earlier parts of a long log).
    limit: Option<u64>,
}

pub async fn get_log(
    State(app): State<App>,
    Path((run, step)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let record = app.run(&run)?;
    let missing = || ApiError::not_found(format!("run {run} has no step {step:?}"));
    let step_name = StepName::new(step.as_str()).map_err(|_| missing())?;
    let step_record = record.step(&step_name).ok_or_else(missing)?;
    let attempt = q.attempt.map(AttemptNo).unwrap_or(step_record.attempt);
    // The size the attempt's agent reported: the log is whole once it is stored.
    let expected = step_record
        .attempts
        .iter()
        .find(|a| a.attempt == attempt)
        .and_then(|a| a.log_size)
        .map(|size| app.logs.complete_at(size));
    app.restore_log(&record, &step_name, attempt)
        .await
        .map_err(ApiError::internal)?;
    let (size, reader) = app
        .logs
        .open_from(&record.run_id, &step_name, attempt, q.offset.unwrap_or(0))
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot read the log of step {step} of run {run}: {e}"
            ))
        })?;
    let body = match (reader, q.limit) {
        (Some(reader), Some(limit)) => Body::from_stream(ReaderStream::new(reader.take(limit))),
        (Some(reader), None) => Body::from_stream(ReaderStream::new(reader)),
        (None, _) => Body::empty(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-drover-log-size", HeaderValue::from(size));
    headers.insert("x-drover-log-attempt", HeaderValue::from(attempt.0));
    if let Some(expected) = expected {
        headers.insert("x-drover-log-expected", HeaderValue::from(expected));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_cannot_break_headers() {
        assert_eq!(super::safe_file_name("a \"b\".txt"), "a _b_.txt");
        assert_eq!(super::safe_file_name("x\r\ny"), "x__y");
        assert_eq!(super::safe_file_name(".."), "artifact");
    }
}
