//! The bytes of a log that are written but not yet confirmed by the broker, in order: the oldest
//! in memory up to a window, the rest in a spool file on disk, so an outage costs disk, not RAM.
//!
//! The spool holds one contiguous range of the log, always newer than everything in memory:
//! once something is spooled, new bytes go to the spool until it has been sent completely, and
//! then the file is removed and new bytes stay in memory again.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use tokio::time::Instant;

/// A piece of the log to publish.
#[derive(Debug)]
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
    /// When the step wrote it (for spooled bytes: when they were read back).
    pub written_at: Instant,
    from_spool: bool,
}

/// Unconfirmed log bytes of one attempt.
pub struct Backlog {
    /// Bytes kept in memory before the spool is used.
    window: usize,
    /// Largest chunk read back from the spool.
    max_chunk: usize,
    spool_path: PathBuf,
    /// Chunks not yet confirmed, oldest first (the one being published included).
    memory: VecDeque<Chunk>,
    memory_bytes: usize,
    /// Whether the front of `memory` has been handed out and awaits its confirm.
    memory_in_flight: bool,
    spool: Option<Spool>,
    /// The offset after the last byte pushed.
    end: u64,
    /// The most the spool ever held, for tests and the agent's own log.
    spooled_peak: u64,
}

/// The spool file: log bytes `[base + sent, base + written)` are still to be published.
struct Spool {
    file: File,
    /// Log offset of the file's first byte.
    base: u64,
    written: u64,
    sent: u64,
}

impl Backlog {
    pub fn new(window: usize, max_chunk: usize, spool_path: PathBuf) -> Self {
        Self {
            window,
            max_chunk,
            spool_path,
            memory: VecDeque::new(),
            memory_bytes: 0,
            memory_in_flight: false,
            spool: None,
            end: 0,
            spooled_peak: 0,
        }
    }

    /// The log's size so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The most bytes the spool held at once.
    pub fn spooled_peak(&self) -> u64 {
        self.spooled_peak
    }

    /// Whether everything pushed has been confirmed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.is_none()
    }

    /// Adds the next bytes of the log: to memory while they fit in the window and nothing is
    /// spooled, otherwise to the end of the spool file. On an error nothing was added and the
    /// bytes come back, to be pushed again later.
    ///
    /// The write is a plain `pwrite` on the async task: it lands in the page cache and is as
    /// cheap as the copy into memory it replaces.
    pub fn push(&mut self, data: Vec<u8>) -> Result<(), (Vec<u8>, std::io::Error)> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len();
        if self.spool.is_none() && self.memory_bytes + len <= self.window {
            self.memory.push_back(Chunk {
                offset: self.end,
                data,
                written_at: Instant::now(),
                from_spool: false,
            });
            self.memory_bytes += len;
            self.end += len as u64;
            return Ok(());
        }
        if self.spool.is_none() {
            match self.open_spool() {
                Ok(spool) => self.spool = Some(spool),
                Err(e) => return Err((data, e)),
            }
        }
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.file.write_all_at(&data, spool.written) {
                return Err((data, e));
            }
            spool.written += len as u64;
            self.spooled_peak = self.spooled_peak.max(spool.written - spool.sent);
        }
        self.end += len as u64;
        Ok(())
    }

    fn open_spool(&self) -> std::io::Result<Spool> {
        if let Some(dir) = self.spool_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.spool_path)?;
        tracing::info!(
            "log bytes from offset {} wait in {}",
            self.end,
            self.spool_path.display()
        );
        Ok(Spool {
            file,
            base: self.end,
            written: 0,
            sent: 0,
        })
    }

    /// The oldest unconfirmed chunk, to publish; `None` when there is nothing to send. Call
    /// [`Backlog::confirmed`] before asking for the next one.
    pub fn next(&mut self) -> std::io::Result<Option<Chunk>> {
        if let Some(front) = self.memory.front() {
            if self.memory_in_flight {
                return Ok(None);
            }
            self.memory_in_flight = true;
            // Handed out by copy: its bytes stay counted against the window until confirmed.
            return Ok(Some(Chunk {
                offset: front.offset,
                data: front.data.clone(),
                written_at: front.written_at,
                from_spool: false,
            }));
        }
        let Some(spool) = self.spool.as_ref() else {
            return Ok(None);
        };
        let len = (spool.written - spool.sent).min(self.max_chunk as u64) as usize;
        let mut data = vec![0u8; len];
        spool.file.read_exact_at(&mut data, spool.sent)?;
        Ok(Some(Chunk {
            offset: spool.base + spool.sent,
            data,
            written_at: Instant::now(),
            from_spool: true,
        }))
    }

    /// The broker confirmed `chunk`: forget it, and remove the spool once all of it was sent.
    pub fn confirmed(&mut self, chunk: &Chunk) {
        if !chunk.from_spool {
            if let Some(front) = self.memory.pop_front() {
                self.memory_bytes -= front.data.len();
            }
            self.memory_in_flight = false;
            return;
        }
        let drained = match self.spool.as_mut() {
            Some(spool) => {
                spool.sent += chunk.data.len() as u64;
                spool.sent >= spool.written
            }
            None => false,
        };
        if drained {
            self.remove_spool();
        }
    }

    /// Removes the spool file (when everything was sent, or when the agent gives up).
    pub fn remove_spool(&mut self) {
        if self.spool.take().is_some()
            && let Err(e) = std::fs::remove_file(&self.spool_path)
        {
            tracing::warn!("cannot remove {}: {e}", self.spool_path.display());
        }
    }

    /// Bytes not yet confirmed.
    pub fn unsent(&self) -> u64 {
        let spooled = self.spool.as_ref().map_or(0, |s| s.written - s.sent);
        self.memory_bytes as u64 + spooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_past_the_window_go_to_the_spool_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool").join("a.log");
        let mut backlog = Backlog::new(10, 4, path.clone());
        for piece in [&b"0123"[..], b"4567", b"89", b"abcdef", b"gh"] {
            backlog.push(piece.to_vec()).unwrap();
        }
        assert!(
            path.exists(),
            "10 bytes fill the window; the rest is spooled"
        );
        assert_eq!(backlog.spooled_peak(), 8);
        let mut log = Vec::new();
        let mut offsets = Vec::new();
        while let Some(chunk) = backlog.next().unwrap() {
            assert_eq!(chunk.offset, log.len() as u64);
            offsets.push(chunk.offset);
            log.extend_from_slice(&chunk.data);
            backlog.confirmed(&chunk);
            if log.len() == 14 {
                // Pushed while the spool still has bytes: goes after them, not into memory.
                backlog.push(b"ij".to_vec()).unwrap();
            }
        }
        assert_eq!(log, b"0123456789abcdefghij");
        assert_eq!(offsets, [0, 4, 8, 10, 14, 18]);
        assert!(!path.exists(), "the spool is removed once sent");
        assert!(backlog.is_empty());
        backlog.push(b"k".to_vec()).unwrap();
        assert!(
            !path.exists(),
            "with the spool drained, bytes fit in memory again"
        );
    }

    #[tokio::test]
    async fn a_chunk_is_handed_out_again_until_it_is_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut backlog = Backlog::new(1, 64, dir.path().join("a.log"));
        backlog.push(b"x".to_vec()).unwrap();
        backlog.push(b"yz".to_vec()).unwrap();
        let first = backlog.next().unwrap().unwrap();
        assert!(
            backlog.next().unwrap().is_none(),
            "one chunk in flight at a time"
        );
        backlog.confirmed(&first);
        let spooled = backlog.next().unwrap().unwrap();
        let again = backlog.next().unwrap().unwrap();
        assert_eq!((spooled.offset, &spooled.data[..]), (1, &b"yz"[..]));
        assert_eq!((again.offset, &again.data[..]), (1, &b"yz"[..]));
        assert_eq!(backlog.unsent(), 2);
    }
}
