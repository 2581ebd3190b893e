//! The controller's own store: `blobs/<first 2 hex>/<sha256>` under its data dir.
//!
//! Uploads stream to a temp file in the same directory tree while hashing (one pass, see
//! [`HashedFile`]), are fsynced, and are renamed into place only when the digest matches, so a
//! stored blob is always complete and correct; the directory is synced after the rename, so a
//! blob that was stored is still there after a crash.

use crate::{BLOCK, Blob, BlobError, BlobStore, Body, HashedFile, layout};
use drover_protocol::Digest;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |error| BlobError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// Uses (and creates) `root` and its `tmp/` directory for uploads in progress.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root.join(layout::relative(digest))
    }

    async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let path = self.path_of(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    async fn open_blob(&self, digest: &Digest) -> Result<Option<Blob>, BlobError> {
        let path = self.path_of(digest);
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let size = file.metadata().await.map_err(io_error(&path))?.len();
                let shown = path.display().to_string();
                let bytes = tokio_util::io::ReaderStream::with_capacity(file, BLOCK)
                    .map_err(move |error| BlobError::Io {
                        path: shown.clone(),
                        error,
                    })
                    .boxed();
                Ok(Some(Blob { size, bytes }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    async fn put_blob(&self, expected: &Digest, mut body: Body<'_>) -> Result<u64, BlobError> {
        let tmp_dir = self.root.join("tmp");
        // Removed on drop unless persisted: a failed or rejected upload leaves nothing behind.
        let temp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&tmp_dir)
            .map_err(io_error(&tmp_dir))?
            .into_temp_path();
        let mut file = HashedFile::create(&temp, true)
            .await
            .map_err(io_error(&temp))?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            file.write(chunk).await.map_err(io_error(&temp))?;
        }
        let received = std::time::Instant::now();
        let (actual, size) = file.finish().await.map_err(io_error(&temp))?;
        tracing::debug!(
            "blob {expected}: {size} bytes stored, {:?} of them in the closing fsync",
            received.elapsed()
        );
        if &actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.path_of(expected);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let created = !tokio::fs::try_exists(&dir).await.unwrap_or(false);
        if created {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(io_error(&dir))?;
        }
        temp.persist(&target).map_err(|e| BlobError::Io {
            path: target.display().to_string(),
            error: e.error,
        })?;
        // The rename, and a new directory's entry in the root, last only once their directories
        // are synced.
        let synced = match created {
            true => vec![dir, self.root.clone()],
            false => vec![dir],
        };
        tokio::task::spawn_blocking(move || {
            synced.iter().try_for_each(|d| {
                std::fs::File::open(d)
                    .and_then(|f| f.sync_all())
                    .map_err(io_error(d))
            })
        })
        .await
        .map_err(|e| BlobError::Io {
            path: self.root.display().to_string(),
            error: std::io::Error::other(e),
        })??;
        Ok(size)
    }
}

impl BlobStore for LocalBlobs {
    fn describe(&self) -> String {
        self.root.display().to_string()
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

#[cfg(test)]
mod tests {
    //! What only the directory store has: its file layout and its temp dir. The behaviour both
    //! stores share is tested on both in `tests/stores.rs`.
    use super::*;
    use bytes::Bytes;

    fn leftovers(root: &Path) -> usize {
        std::fs::read_dir(root.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn blobs_are_files_under_their_fan_out_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let digest = Digest::of_bytes(b"hello, blob");
        let body = futures_util::stream::iter([Ok(Bytes::from_static(b"hello, blob"))]).boxed();
        store.put(&digest, body).await.unwrap();
        let path = dir.path().join(&digest.as_str()[..2]).join(digest.as_str());
        assert_eq!(store.path_of(&digest), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello, blob");
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_rejected_or_interrupted_upload_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let wrong = futures_util::stream::iter([Ok(Bytes::from_static(b"other"))]).boxed();
        let claimed = Digest::of_bytes(b"promised");
        assert!(store.put(&claimed, wrong).await.is_err());
        let cut = futures_util::stream::iter([
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("connection reset")),
        ])
        .boxed();
        assert!(store.put(&claimed, cut).await.is_err());
        assert_eq!(leftovers(dir.path()), 0);
    }
}
