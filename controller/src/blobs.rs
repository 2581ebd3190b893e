//! Content-addressed artifact storage: `blobs/<first 2 hex>/<sha256>` under the data dir.
//!
//! Uploads stream to a temp file in the same directory tree while hashing, and are renamed into
//! place only when the digest matches, so a stored blob is always complete and correct.

use bytes::Bytes;
use drover_protocol::Digest;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("digest mismatch: the upload was named {expected} but its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("blob store i/o error at {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |error| BlobError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// A stored blob's size and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub path: PathBuf,
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Uses (and creates) `root` and its `tmp/` directory for uploads in progress.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.as_str();
        self.root.join(&hex[..2]).join(hex)
    }

    /// The blob's size, or `None` when it is not stored.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>, BlobError> {
        let path = self.path_of(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(BlobInfo {
                size: m.len(),
                path,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Opens a stored blob for streaming.
    pub async fn open_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<(tokio::fs::File, u64)>, BlobError> {
        let path = self.path_of(digest);
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let size = file.metadata().await.map_err(io_error(&path))?.len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Streams `body` to disk while hashing; keeps it under `expected` only if the hash matches.
    /// Returns the stored size.
    pub async fn put<S, E>(&self, expected: &Digest, mut body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp_dir = self.root.join("tmp");
        // Removed on drop unless persisted: a failed or rejected upload leaves nothing behind.
        let temp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&tmp_dir)
            .map_err(io_error(&tmp_dir))?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(io_error(&temp))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_error(&temp))?;
        }
        file.sync_all().await.map_err(io_error(&temp))?;
        drop(file);
        let actual = Digest::from_sha256(hasher);
        if &actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.path_of(expected);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io_error(dir))?;
        }
        temp.persist(&target).map_err(|e| BlobError::Io {
            path: target.display().to_string(),
            error: e.error,
        })?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn leftovers(root: &Path) -> usize {
        std::fs::read_dir(root.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn stores_a_streamed_upload_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of_bytes(b"hello, blob");
        assert!(store.stat(&digest).await.unwrap().is_none());
        let size = store
            .put(&digest, chunks(&[b"hello", b", ", b"blob"]))
            .await
            .unwrap();
        assert_eq!(size, 11);
        let info = store.stat(&digest).await.unwrap().unwrap();
        assert_eq!(info.size, 11);
        assert!(
            info.path
                .starts_with(dir.path().join(&digest.as_str()[..2]))
        );
        let (mut file, size) = store.open_blob(&digest).await.unwrap().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert_eq!((back.as_slice(), size), (&b"hello, blob"[..], 11));
        // Storing the same content again is fine.
        store.put(&digest, chunks(&[b"hello, blob"])).await.unwrap();
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn rejects_content_that_does_not_match_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let claimed = Digest::of_bytes(b"what was promised");
        let err = store
            .put(&claimed, chunks(&[b"something else"]))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(claimed.as_str()), "{text}");
        assert!(
            text.contains(Digest::of_bytes(b"something else").as_str()),
            "{text}"
        );
        assert!(store.stat(&claimed).await.unwrap().is_none());
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn an_interrupted_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let body = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let err = store
            .put(&Digest::of_bytes(b"part"), body)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert_eq!(leftovers(dir.path()), 0);
    }
}
