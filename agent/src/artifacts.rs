//! Moves artifact bytes between a workdir and the controller's blob store, streaming and
//! checking sha256 both ways.

use drover_protocol::Digest;
use drover_protocol::message::{ArtifactRef, JobInput};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An artifact transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot reach the controller at {url}: {error}")]
    Http { url: String, error: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("downloaded {step}.{output} hashes to {got}, expected {expected}")]
    Corrupt {
        step: String,
        output: String,
        expected: String,
        got: String,
    },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl TransferError {
    /// Worth another try: the controller was unreachable or failed on its side (restarting).
    fn is_transient(&self) -> bool {
        match self {
            TransferError::Http { .. } => true,
            TransferError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// How long a transfer keeps trying while the controller is unreachable, e.g. restarting.
pub const TRANSFER_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a transfer again after transient failures, backing off from 200 ms to 5 s, for up to
/// [`TRANSFER_PATIENCE`].
pub async fn retrying<T, F, Fut>(what: &str, mut transfer: F) -> Result<T, TransferError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransferError>>,
{
    let deadline = tokio::time::Instant::now() + TRANSFER_PATIENCE;
    let mut delay = Duration::from_millis(200);
    loop {
        match transfer().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!("{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn http_error(url: &str, e: reqwest::Error) -> TransferError {
    TransferError::Http {
        url: url.to_string(),
        error: e.to_string(),
    }
}

fn io_error(path: &Path, error: std::io::Error) -> TransferError {
    TransferError::Io {
        path: path.display().to_string(),
        error,
    }
}

async fn check_status(
    url: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, TransferError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Err(TransferError::Status {
        url: url.to_string(),
        status,
        body,
    })
}

/// Downloads one input to `dest`, verifying its digest while writing.
pub async fn download(
    http: &reqwest::Client,
    base: &str,
    input: &JobInput,
    dest: &Path,
) -> Result<(), TransferError> {
    let url = format!("{base}/api/v1/blobs/{}", input.digest);
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    let resp = check_status(&url, resp).await?;
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_error(parent, e))?;
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| io_error(dest, e))?;
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| http_error(&url, e))?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| io_error(dest, e))?;
    }
    file.flush().await.map_err(|e| io_error(dest, e))?;
    let got = Digest::from_sha256(hasher);
    if got != input.digest {
        return Err(TransferError::Corrupt {
            step: input.step.to_string(),
            output: input.output.to_string(),
            expected: input.digest.to_string(),
            got: got.to_string(),
        });
    }
    Ok(())
}

/// sha256 and size of a file, read in chunks.
pub async fn hash_file(path: &Path) -> Result<(Digest, u64), TransferError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_sha256(hasher), size))
}

/// Uploads a file unless the store has it already; returns its reference.
pub async fn upload(
    http: &reqwest::Client,
    base: &str,
    path: &Path,
) -> Result<ArtifactRef, TransferError> {
    let (digest, size) = hash_file(path).await?;
    let url = format!("{base}/api/v1/blobs/{digest}");
    let head = http
        .head(&url)
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    if !head.status().is_success() {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_error(path, e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let resp = http
            .put(&url)
            .header("content-length", size)
            .body(body)
            .send()
            .await
            .map_err(|e| http_error(&url, e))?;
        check_status(&url, resp).await?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".to_string());
    Ok(ArtifactRef {
        digest,
        size,
        file_name,
    })
}
