//! The controller's blob routes (`/api/v1/blobs/{digest}`): streamed GET, HEAD, streamed PUT.

use super::TransferError;
use bytes::Bytes;
use drover_protocol::Digest;
use futures_util::{Stream, TryStreamExt};

fn http_error(url: &str, e: reqwest::Error) -> TransferError {
    TransferError::Http {
        url: url.to_string(),
        error: e.to_string(),
    }
}

fn blob_url(base: &str, digest: &Digest) -> String {
    format!("{base}/api/v1/blobs/{digest}")
}

async fn check_status(
    url: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, TransferError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    if let Some(state) = resp.headers().get(drover_api::INACTIVE_HEADER) {
        return Err(TransferError::Inactive {
            url: url.to_string(),
            status,
            state: String::from_utf8_lossy(state.as_bytes()).into_owned(),
        });
    }
    let text = resp.text().await.unwrap_or_default();
    // The controller's refusals carry their reason as an `ApiError`.
    let body = serde_json::from_str::<drover_api::ApiError>(&text)
        .map(|e| e.message)
        .unwrap_or(text);
    Err(TransferError::Status {
        url: url.to_string(),
        status,
        body,
    })
}

/// The blob's bytes as they arrive.
pub async fn get(
    http: &reqwest::Client,
    base: &str,
    digest: &Digest,
) -> Result<impl Stream<Item = Result<Bytes, TransferError>> + Unpin + use<>, TransferError> {
    let url = blob_url(base, digest);
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    let resp = check_status(&url, resp).await?;
    Ok(resp.bytes_stream().map_err(move |e| http_error(&url, e)))
}

/// Whether the controller's store holds the blob.
pub async fn exists(
    http: &reqwest::Client,
    base: &str,
    digest: &Digest,
) -> Result<bool, TransferError> {
    let url = blob_url(base, digest);
    let head = http
        .head(&url)
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    Ok(head.status().is_success())
}

/// Streams `body` (`size` bytes) to the controller, which checks it hashes to `digest`.
pub async fn put<S>(
    http: &reqwest::Client,
    base: &str,
    digest: &Digest,
    size: u64,
    body: S,
) -> Result<(), TransferError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let url = blob_url(base, digest);
    let resp = http
        .put(&url)
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    check_status(&url, resp).await?;
    Ok(())
}
