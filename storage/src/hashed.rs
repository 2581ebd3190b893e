//! A file written from async code while its sha256 is computed: the bytes are gathered into
//! large blocks, each hashed and written on the blocking pool while the next one arrives, and a
//! durable file has its writeback started as it grows, so the closing fsync waits only for the
//! tail rather than for the whole file.
//!
//! This is the one pass over the bytes that both ends of a transfer make: the controller's
//! directory store writing an upload, and an agent writing a download into a workdir.
//! [`hash_file`] is the reading side: the digest of a file already written.

use bytes::{Bytes, BytesMut};
use drover_protocol::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use tokio::task::JoinHandle;

/// Bytes gathered before they are hashed and written in one go.
pub const BLOCK: usize = 1 << 20;

/// Bytes written between two background `fdatasync`s of a durable file.
const SYNC_EVERY: u64 = 32 << 20;

/// The sha256 and size of the file at `path`, or of its first `limit` bytes, read in blocks on
/// the blocking pool (a file may be hundreds of MiB).
pub async fn hash_file(path: &Path, limit: u64) -> std::io::Result<(Digest, u64)> {
    let path = path.to_path_buf();
    joined(
        tokio::task::spawn_blocking(move || {
            let mut reader = File::open(&path)?.take(limit);
            let mut hasher = Sha256::new();
            let mut block = vec![0; BLOCK];
            let mut size = 0u64;
            loop {
                let n = match reader.read(&mut block) {
                    Ok(0) => return Ok((Digest::from_sha256(hasher), size)),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&block[..n]);
                size += n as u64;
            }
        })
        .await,
    )
}

/// The file and the hash so far, owned by whichever block is being written.
struct Writer {
    file: File,
    hasher: Sha256,
}

/// A file being written and hashed; [`HashedFile::finish`] returns its digest and size.
pub struct HashedFile {
    /// Present while no block is in flight.
    writer: Option<Writer>,
    in_flight: Option<JoinHandle<std::io::Result<Writer>>>,
    gathered: BytesMut,
    size: u64,
    /// Flushes to disk what was written so far, started every [`SYNC_EVERY`] bytes.
    durable: Option<Syncer>,
}

struct Syncer {
    file: File,
    running: Option<JoinHandle<std::io::Result<File>>>,
    started_at: u64,
}

fn joined<T>(r: Result<std::io::Result<T>, tokio::task::JoinError>) -> std::io::Result<T> {
    r.map_err(std::io::Error::other)?
}

impl HashedFile {
    /// Creates (or truncates) `path`. A `durable` file is on disk when `finish` returns.
    pub async fn create(path: &Path, durable: bool) -> std::io::Result<Self> {
        let path = path.to_path_buf();
        let file = joined(tokio::task::spawn_blocking(move || File::create(path)).await)?;
        let durable = match durable {
            true => Some(Syncer {
                file: file.try_clone()?,
                running: None,
                started_at: 0,
            }),
            false => None,
        };
        Ok(Self {
            writer: Some(Writer {
                file,
                hasher: Sha256::new(),
            }),
            in_flight: None,
            gathered: BytesMut::new(),
            size: 0,
            durable,
        })
    }

    /// Adds `chunk` to the file.
    pub async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        if self.gathered.is_empty() && chunk.len() >= BLOCK {
            // Already a block: handed on as it is, without a copy.
            return self.dispatch(chunk).await;
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve(BLOCK);
        }
        self.gathered.extend_from_slice(&chunk);
        if self.gathered.len() >= BLOCK {
            let block = self.gathered.split().freeze();
            self.dispatch(block).await?;
        }
        Ok(())
    }

    /// Waits for the block in flight, then hands `block` to the blocking pool.
    async fn dispatch(&mut self, block: Bytes) -> std::io::Result<()> {
        let mut writer = self.settle().await?;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            writer.hasher.update(&block);
            writer.file.write_all(&block)?;
            Ok(writer)
        }));
        self.start_sync().await
    }

    /// The writer once no block is in flight.
    async fn settle(&mut self) -> std::io::Result<Writer> {
        if let Some(handle) = self.in_flight.take() {
            return joined(handle.await);
        }
        self.writer
            .take()
            .ok_or_else(|| std::io::Error::other("a failed write left the file unusable"))
    }

    /// Starts a background `fdatasync` when enough was written since the last one began and
    /// none is running; the disk then writes while the rest of the bytes arrive.
    async fn start_sync(&mut self) -> std::io::Result<()> {
        let size = self.size;
        let Some(syncer) = self.durable.as_mut() else {
            return Ok(());
        };
        if size - syncer.started_at < SYNC_EVERY {
            return Ok(());
        }
        if let Some(running) = &syncer.running {
            if !running.is_finished() {
                return Ok(());
            }
            if let Some(done) = syncer.running.take() {
                syncer.file = joined(done.await)?;
            }
        }
        let file = syncer.file.try_clone()?;
        syncer.started_at = size;
        syncer.running = Some(tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            Ok(file)
        }));
        Ok(())
    }

    /// Writes what is left, waits for the disk when the file is durable, and returns the
    /// digest and size of everything written.
    pub async fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        if !self.gathered.is_empty() {
            let block = self.gathered.split().freeze();
            self.dispatch(block).await?;
        }
        let writer = self.settle().await?;
        let durable = match self.durable.take() {
            // A background sync's error is reported to it alone (the handles share one open
            // file), so it is awaited rather than left to the final sync.
            Some(Syncer {
                running: Some(running),
                ..
            }) => {
                joined(running.await)?;
                true
            }
            Some(_) => true,
            None => false,
        };
        let hasher = joined(
            tokio::task::spawn_blocking(move || {
                if durable {
                    writer.file.sync_all()?;
                }
                Ok(writer.hasher)
            })
            .await,
        )?;
        Ok((Digest::from_sha256(hasher), self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_and_large_pieces_make_the_same_file_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * BLOCK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for (durable, cut) in [(true, 1000), (false, BLOCK + 1), (true, 5 * BLOCK)] {
            let path = dir.path().join(format!("f-{durable}-{cut}"));
            let mut file = HashedFile::create(&path, durable).await.unwrap();
            for piece in data.chunks(cut) {
                file.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            let (digest, size) = file.finish().await.unwrap();
            assert_eq!(size, data.len() as u64);
            assert_eq!(digest, Digest::of_bytes(&data));
            assert_eq!(std::fs::read(&path).unwrap(), data);
        }
    }

    #[tokio::test]
    async fn an_empty_file_has_the_empty_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        let file = HashedFile::create(&path, true).await.unwrap();
        let (digest, size) = file.finish().await.unwrap();
        assert_eq!((digest, size), (Digest::of_bytes(b""), 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
