//! Complete step logs kept in the artifact store, so that they outlive the controller's data
//! dir, and read back from there into the log directory when their file is gone.
//!
//! An archived log is a blob like any artifact, named by the sha256 of its bytes; the attempt's
//! record holds that digest and the size ([`ArchivedLog`]), so the journal carries where to find
//! it. Archiving reads the file twice (the digest names the upload, which the store checks
//! against the bytes it receives) and never changes it.

use super::LogStore;
use crate::scheduler::ArchivedLog;
use drover_protocol::{AttemptNo, Digest, RunId, StepName};
use drover_storage::{BLOCK, BlobError, BlobStore, HashedFile};
use futures_util::{StreamExt, TryStreamExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// An attempt whose end was recorded: its log is archived once complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedLog {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    /// The log's final size as its agent reported it (`Finished.log_size`); `None` when the
    /// agent reported only once the whole log was stored, or never reported.
    pub size: Option<u64>,
}

impl std::fmt::Display for EndedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the log of attempt {} of step {} of run {}",
            self.attempt, self.step, self.run_id
        )
    }
}

/// Why a log could not be archived or read back.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("log file {path}: {error}")]
    Local { path: String, error: std::io::Error },
    #[error("artifact store: {0}")]
    Store(#[from] BlobError),
    #[error("the artifact store has no blob {0}")]
    Missing(Digest),
    #[error("the archived log {expected} read back as {size} bytes hashing to {actual}")]
    Corrupt {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
}

fn local(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |error| ArchiveError::Local {
        path: path.display().to_string(),
        error,
    }
}

/// The log directory and the artifact store its complete logs are archived in.
#[derive(Debug, Clone)]
pub struct LogArchive {
    logs: LogStore,
    blobs: Arc<dyn BlobStore>,
}

impl LogArchive {
    pub fn new(logs: LogStore, blobs: Arc<dyn BlobStore>) -> Self {
        Self { logs, blobs }
    }

    /// Waits until the log is complete, then stores it; `None` when the attempt logged nothing.
    /// A log still short of its reported size after the tail patience is archived as it is,
    /// with a warning: its file is the only other copy, and bytes that late are not waited for
    /// anywhere else either.
    pub async fn archive(&self, ended: &EndedLog) -> Result<Option<ArchivedLog>, ArchiveError> {
        let size = self.wait_until_complete(ended).await?;
        self.store(ended, size).await
    }

    /// Stores the first `size` bytes of the log; `None` when `size` is 0.
    pub async fn store(
        &self,
        ended: &EndedLog,
        size: u64,
    ) -> Result<Option<ArchivedLog>, ArchiveError> {
        if size == 0 {
            return Ok(None);
        }
        let path = self.logs.path_of(&ended.run_id, &ended.step, ended.attempt);
        let (digest, _) = drover_storage::hash_file(&path, size)
            .await
            .map_err(local(&path))?;
        let file = tokio::fs::File::open(&path).await.map_err(local(&path))?;
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(size), BLOCK).boxed();
        let stored = self.blobs.put(&digest, body).await?;
        Ok(Some(ArchivedLog {
            digest,
            size: stored,
        }))
    }

    /// The size of the log once it holds every byte its agent reported (or the tail patience
    /// has passed since it is waited for).
    pub async fn wait_until_complete(&self, ended: &EndedLog) -> Result<u64, ArchiveError> {
        let (run, step, attempt) = (&ended.run_id, &ended.step, ended.attempt);
        let path = self.logs.path_of(run, step, attempt);
        // Subscribed before the first look, so an append between the two is not missed.
        let mut appends = self.logs.watch();
        let deadline = tokio::time::Instant::now() + self.logs.tail_patience();
        loop {
            let stored = self
                .logs
                .size_of(run, step, attempt)
                .await
                .map_err(local(&path))?;
            let Some(reported) = ended.size else {
                return Ok(stored);
            };
            let complete = self.logs.complete_at(reported);
            if stored >= complete {
                return Ok(stored);
            }
            tokio::select! {
                received = appends.recv() => {
                    if let Ok(a) = received
                        && (&a.run_id, &a.step, a.attempt) != (run, step, attempt)
                    {
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if stored > 0 {
                        tracing::warn!(
                            "{ended} lacks {} of its {complete} bytes {} s after its step \
                             ended; archiving the {stored} bytes stored",
                            complete - stored,
                            self.logs.tail_patience().as_secs()
                        );
                    }
                    return Ok(stored);
                }
            }
        }
    }

    /// Writes an archived log back to its file when the file is shorter (gone with an earlier
    /// data dir, or begun again by a chunk delivered late); true when it did. The bytes are
    /// checked against the digest before the file is replaced.
    pub async fn restore(
        &self,
        run: &RunId,
        step: &StepName,
        attempt: AttemptNo,
        archived: &ArchivedLog,
    ) -> Result<bool, ArchiveError> {
        let path = self.logs.path_of(run, step, attempt);
        if self
            .logs
            .size_of(run, step, attempt)
            .await
            .map_err(local(&path))?
            >= archived.size
        {
            return Ok(false);
        }
        let blob = self
            .blobs
            .open(&archived.digest)
            .await?
            .ok_or_else(|| ArchiveError::Missing(archived.digest.clone()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await.map_err(local(&dir))?;
        // Removed on drop unless persisted: a failed read leaves nothing behind.
        let temp = tempfile::Builder::new()
            .prefix(".restore-")
            .tempfile_in(&dir)
            .map_err(local(&dir))?
            .into_temp_path();
        let mut file = HashedFile::create(&temp, false)
            .await
            .map_err(local(&temp))?;
        let mut bytes = blob.bytes;
        while let Some(chunk) = bytes.try_next().await? {
            file.write(chunk).await.map_err(local(&temp))?;
        }
        let (actual, size) = file.finish().await.map_err(local(&temp))?;
        if actual != archived.digest || size != archived.size {
            return Err(ArchiveError::Corrupt {
                expected: archived.digest.clone(),
                actual,
                size,
            });
        }
        temp.persist(&path).map_err(|e| ArchiveError::Local {
            path: path.display().to_string(),
            error: e.error,
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
