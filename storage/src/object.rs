//! Blobs in an S3-compatible bucket (the `object_store` crate), keyed `<prefix>/blobs/ab/<sha>`.
//!
//! An upload below [`PART_SIZE`] is collected and sent as one PUT; a larger one becomes a
//! multipart upload with at most [`PARTS_IN_FLIGHT`] parts on the wire while the next one fills,
//! so memory stays near `(PARTS_IN_FLIGHT + 1) * PART_SIZE` whatever the blob's size. The upload
//! is hashed as it streams and only completed (made visible) when the digest matches; otherwise
//! it is aborted and S3 discards its parts.

use crate::{Blob, BlobError, BlobStore, Body, S3Location, layout};
use bytes::Bytes;
use drover_protocol::Digest;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per multipart part (S3 wants at least 5 MiB but for the last part; at most 10,000
/// parts, so a blob can hold up to ~78 GiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once; the stream waits for one to finish before it fills another.
pub const PARTS_IN_FLIGHT: usize = 2;
/// How long the client retries a failing request (connection refused, 5xx) before giving up.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// A bucket (and key prefix) holding blobs.
#[derive(Debug, Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    location: S3Location,
}

impl ObjectBlobs {
    /// A client for `location`, with credentials from the standard `AWS_*` environment variables.
    /// Makes no request: see [`ObjectBlobs::check`].
    pub fn connect(location: &S3Location) -> Result<Self, BlobError> {
        Self::connect_with(location, &[])
    }

    /// Like [`ObjectBlobs::connect`], with `AWS_*` settings given explicitly (lowercase names,
    /// e.g. `("aws_access_key_id", "...")`) on top of the environment's.
    pub fn connect_with(
        location: &S3Location,
        settings: &[(&str, &str)],
    ) -> Result<Self, BlobError> {
        let config_error = |reason: String| BlobError::Config {
            store: location.url(),
            reason,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(location.bucket())
            .with_retry(RetryConfig {
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        for (key, value) in settings {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| config_error(format!("unknown S3 setting {key:?}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &location.region {
            builder = builder.with_region(region);
        }
        let store = builder.build().map_err(|e| config_error(e.to_string()))?;
        Ok(Self::with_store(Arc::new(store), location.clone()))
    }

    /// Blobs in any `object_store` implementation (tests use the in-memory one).
    pub fn with_store(store: Arc<dyn ObjectStore>, location: S3Location) -> Self {
        Self { store, location }
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Lists the blob prefix once: fails early, with the store's own words, on a missing bucket,
    /// bad credentials or an unreachable endpoint.
    pub async fn check(&self) -> Result<(), BlobError> {
        let blobs = if self.location.prefix().is_empty() {
            Path::from("blobs")
        } else {
            Path::from(format!("{}/blobs", self.location.prefix()))
        };
        self.store
            .list_with_delimiter(Some(&blobs))
            .await
            .map(|_| ())
            .map_err(|e| self.remote(e))
    }

    fn key(&self, digest: &Digest) -> Path {
        Path::from(layout::object_key(self.location.prefix(), digest))
    }

    fn remote(&self, error: object_store::Error) -> BlobError {
        BlobError::Remote {
            store: self.describe(),
            error,
        }
    }

    async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote(e)),
        }
    }

    async fn open_blob(&self, digest: &Digest) -> Result<Option<Blob>, BlobError> {
        let result = match self.store.get(&self.key(digest)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote(e)),
        };
        let size = result.meta.size;
        let store = self.describe();
        let bytes = result
            .into_stream()
            .map_err(move |error| BlobError::Remote {
                store: store.clone(),
                error,
            })
            .boxed();
        Ok(Some(Blob { size, bytes }))
    }

    async fn put_blob(&self, expected: &Digest, mut body: Body<'_>) -> Result<u64, BlobError> {
        let key = self.key(expected);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // The first part's worth is held back: a blob that ends within it is one plain PUT.
        let mut first: Vec<Bytes> = Vec::new();
        let mut upload: Option<WriteMultipart> = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    abort(upload).await;
                    return Err(BlobError::Body(e.to_string()));
                }
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            match &mut upload {
                Some(writer) => {
                    if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        abort(upload).await;
                        return Err(self.remote(e));
                    }
                    writer.put(chunk);
                }
                None => {
                    first.push(chunk);
                    if size >= PART_SIZE as u64 {
                        let parts = self
                            .store
                            .put_multipart(&key)
                            .await
                            .map_err(|e| self.remote(e))?;
                        let mut writer = WriteMultipart::new_with_chunk_size(parts, PART_SIZE);
                        for held in first.drain(..) {
                            writer.put(held);
                        }
                        upload = Some(writer);
                    }
                }
            }
        }
        let actual = Digest::from_sha256(hasher);
        if &actual != expected {
            abort(upload).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let done = match upload {
            Some(writer) => writer.finish().await,
            None => self.store.put(&key, PutPayload::from_iter(first)).await,
        };
        done.map_err(|e| self.remote(e))?;
        Ok(size)
    }
}

/// Aborts a multipart upload, so the store drops its parts; a failure to abort is only logged
/// (the bucket's lifecycle rule for incomplete uploads cleans up after that).
async fn abort(upload: Option<WriteMultipart>) {
    if let Some(writer) = upload
        && let Err(e) = writer.abort().await
    {
        tracing::warn!("cannot abort a multipart upload: {e}");
    }
}

impl BlobStore for ObjectBlobs {
    fn describe(&self) -> String {
        match &self.location.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.location.url()),
            None => self.location.url(),
        }
    }

    fn stat<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>, BlobError>> {
        self.stat_blob(digest).boxed()
    }

    fn open<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<Blob>, BlobError>> {
        self.open_blob(digest).boxed()
    }

    fn put<'a>(
        &'a self,
        expected: &'a Digest,
        body: Body<'a>,
    ) -> BoxFuture<'a, Result<u64, BlobError>> {
        self.put_blob(expected, body).boxed()
    }
}
