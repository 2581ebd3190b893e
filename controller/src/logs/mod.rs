//! Step logs: raw bytes per attempt at `logs/<run>/<step>/<attempt>.log`.
//!
//! Chunks carry their byte offset, so a redelivered chunk is recognised and only the part past
//! the current end of the file is appended. Bytes are never decoded: invalid UTF-8 and `\r`
//! progress bars come back exactly as the step wrote them.
//!
//! An attempt's log is stored up to its cap (`--max-log-size` plus [`MARKER_ROOM`] for the
//! agent's own marker line); a chunk reaching past it is cut there and followed by
//! [`cut_marker`], and later chunks are dropped. Agents cut their logs at their own cap first.
//!
//! A complete log can also be kept in the artifact store ([`archive`]), from where it is read
//! back when its file is gone.

pub mod archive;

use drover_protocol::message::{LogChunk, LogDelay};
use drover_protocol::{AttemptNo, RunId, StepName};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// How a delay of an attempt's log is told (console and live log stream); the log's bytes
/// themselves never mention it.
pub fn delay_text(attempt: AttemptNo, delay: &LogDelay) -> String {
    format!(
        "log of attempt {attempt} delayed {} s from byte {} (broker unreachable)",
        delay.delayed_ms.saturating_add(500) / 1000,
        delay.offset
    )
}

/// Room past `--max-log-size` for the line an agent ends a cut log with.
pub const MARKER_ROOM: u64 = 4096;

/// The line the controller ends a log with when it cuts it at `limit` bytes.
pub fn cut_marker(limit: u64) -> String {
    format!(
        "\ndrover: the controller stores at most {limit} bytes of an attempt's log; the rest is dropped\n"
    )
}

/// The log directory.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
    /// Bytes stored per attempt before the controller cuts the log.
    limit: u64,
    /// Every append that wrote bytes, for live followers; nobody listening is fine.
    appends: broadcast::Sender<LogAppended>,
    /// How long after its attempt ended a log's missing last bytes are waited for.
    tail_patience: Duration,
}

/// Bytes were added to an attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppended {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Bytes written.
    pub written: u64,
    /// The chunk started past the end of the file: bytes before it were lost.
    pub gap: bool,
}

impl LogStore {
    /// The store with no practical cap (tests and tools).
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Self::open_capped(root, u64::MAX - MARKER_ROOM)
    }

    /// The store that keeps at most `max_log_size` bytes of an attempt's log, plus
    /// [`MARKER_ROOM`].
    pub fn open_capped(root: &Path, max_log_size: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            limit: max_log_size.saturating_add(MARKER_ROOM),
            appends: broadcast::channel(1024).0,
            tail_patience: crate::config::DEFAULT_LOG_TAIL_PATIENCE,
        })
    }

    /// The store whose followers wait `patience` for an ended attempt's missing log bytes.
    pub fn with_tail_patience(mut self, patience: Duration) -> Self {
        self.tail_patience = patience;
        self
    }

    /// How long after its attempt ended a log's missing last bytes are waited for.
    pub fn tail_patience(&self) -> Duration {
        self.tail_patience
    }

    pub fn path_of(&self, run: &RunId, step: &StepName, attempt: AttemptNo) -> PathBuf {
        // Typed ids cannot hold separators or `..`, so these are safe path components.
        self.root
            .join(run.as_str())
            .join(step.as_str())
            .join(format!("{attempt}.log"))
    }

    /// Appends the part of `chunk` beyond the current end of its attempt's log.
    pub async fn append(&self, chunk: &LogChunk) -> std::io::Result<Appended> {
        let path = self.path_of(&chunk.run_id, &chunk.step, chunk.attempt);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let size = file.metadata().await?.len();
        let end = chunk.offset + chunk.data.len() as u64;
        // A log at its limit (cut, with the marker after it) takes nothing more.
        if end <= size || size >= self.limit {
            return Ok(Appended {
                written: 0,
                gap: false,
            });
        }
        let gap = chunk.offset > size;
        let skip = size.saturating_sub(chunk.offset) as usize;
        let mut new = &chunk.data[skip..];
        let cut = size + new.len() as u64 > self.limit;
        if cut {
            new = &new[..(self.limit - size) as usize];
        }
        file.write_all(new).await?;
        if cut {
            tracing::warn!(
                "the log of attempt {} of step {} of run {} reached {} bytes; dropping the rest",
                chunk.attempt,
                chunk.step,
                chunk.run_id,
                self.limit
            );
            file.write_all(cut_marker(self.limit).as_bytes()).await?;
        }
        file.flush().await?;
        let _ = self.appends.send(LogAppended {
            run_id: chunk.run_id.clone(),
            step: chunk.step.clone(),
            attempt: chunk.attempt,
        });
        Ok(Appended {
            written: new.len() as u64,
            gap,
        })
    }

    /// How many bytes of a log whose agent reported `size` make it complete: all of them, or
    /// as many as the controller stores before it cuts the log (a cut log is complete).
    pub fn complete_at(&self, size: u64) -> u64 {
        size.min(self.limit)
    }

    /// The size of the attempt's log file; 0 when there is none.
    pub async fn size_of(
        &self,
        run: &RunId,
        step: &StepName,
        attempt: AttemptNo,
    ) -> std::io::Result<u64> {
        match tokio::fs::metadata(self.path_of(run, step, attempt)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Tells of every append from now on (a lagging receiver should re-read its log).
    pub fn watch(&self) -> broadcast::Receiver<LogAppended> {
        self.appends.subscribe()
    }

    /// The log's total size and a reader of its bytes from `offset` (`None` when there are none).
    pub async fn open_from(
        &self,
        run: &RunId,
        step: &StepName,
        attempt: AttemptNo,
        offset: u64,
    ) -> std::io::Result<(u64, Option<tokio::io::Take<tokio::fs::File>>)> {
        let path = self.path_of(run, step, attempt);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None)),
            Err(e) => return Err(e),
        };
        let size = file.metadata().await?.len();
        if offset >= size {
            return Ok((size, None));
        }
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        // Bytes appended after this read are left for the next one, so `size` stays true.
        Ok((size, Some(file.take(size - offset))))
    }

    /// The log's total size and its bytes from `offset`; `(0, [])` when nothing was logged yet.
    pub async fn read_from(
        &self,
        run: &RunId,
        step: &StepName,
        attempt: AttemptNo,
        offset: u64,
    ) -> std::io::Result<(u64, Vec<u8>)> {
        let (size, reader) = self.open_from(run, step, attempt, offset).await?;
        let mut bytes = Vec::new();
        if let Some(mut reader) = reader {
            reader.read_to_end(&mut bytes).await?;
        }
        Ok((size, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(run: &RunId, offset: u64, data: &[u8]) -> LogChunk {
        LogChunk {
            run_id: run.clone(),
            step: StepName::new("s").unwrap(),
            attempt: AttemptNo(1),
            offset,
            data: data.to_vec(),
        }
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_raw_bytes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::open(dir.path()).unwrap();
        let run = RunId::generate();
        let step = StepName::new("s").unwrap();
        assert_eq!(
            logs.read_from(&run, &step, AttemptNo(1), 0).await.unwrap(),
            (0, vec![])
        );
        logs.append(&chunk(&run, 0, b"10%\r50%\r")).await.unwrap();
        // A redelivered chunk, then one overlapping the end.
        let dup = logs.append(&chunk(&run, 0, b"10%\r50%\r")).await.unwrap();
        assert_eq!(dup.written, 0);
        let overlap = logs
            .append(&chunk(&run, 4, b"50%\r\xff\xfe\n"))
            .await
            .unwrap();
        assert_eq!(overlap.written, 3);
        let (size, all) = logs.read_from(&run, &step, AttemptNo(1), 0).await.unwrap();
        assert_eq!((size, all.as_slice()), (11, &b"10%\r50%\r\xff\xfe\n"[..]));
        let (_, tail) = logs.read_from(&run, &step, AttemptNo(1), 8).await.unwrap();
        assert_eq!(tail, b"\xff\xfe\n");
        let (_, none) = logs.read_from(&run, &step, AttemptNo(1), 99).await.unwrap();
        assert!(none.is_empty());
        let gap = logs.append(&chunk(&run, 20, b"x")).await.unwrap();
        assert!(gap.gap);
    }

    #[tokio::test]
    async fn a_log_is_cut_at_its_limit_with_a_marker_and_then_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::open_capped(dir.path(), 10).unwrap();
        let run = RunId::generate();
        let step = StepName::new("s").unwrap();
        let limit = 10 + MARKER_ROOM as usize;
        logs.append(&chunk(&run, 0, &vec![b'a'; limit - 2]))
            .await
            .unwrap();
        let cut = logs
            .append(&chunk(&run, limit as u64 - 2, b"bbbb"))
            .await
            .unwrap();
        assert_eq!(cut.written, 2);
        let after = logs
            .append(&chunk(&run, limit as u64 + 2, b"cc"))
            .await
            .unwrap();
        assert_eq!((after.written, after.gap), (0, false));
        let (size, all) = logs.read_from(&run, &step, AttemptNo(1), 0).await.unwrap();
        let marker = cut_marker(limit as u64);
        assert_eq!(size as usize, limit + marker.len());
        assert!(all[..limit].ends_with(b"abb"));
        assert!(all.ends_with(marker.as_bytes()));
    }
}
