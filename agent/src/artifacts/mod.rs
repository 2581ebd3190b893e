//! Moves artifact bytes between a workdir and the artifact store, streaming and checking sha256
//! both ways: through the controller's HTTP API ([`http`]) or straight to the bucket a job names
//! ([`route`] picks which).

mod http;
mod route;

pub use route::{Route, Routes};

use bytes::Bytes;
use drover_protocol::message::{ArtifactRef, JobInput};
use drover_protocol::{Digest, FileName};
use drover_storage::{BlobError, HashedFile};
use futures_util::{Stream, StreamExt};
use std::path::Path;
use std::time::Duration;

/// Bytes read from a file per chunk on the way out: large enough that the per-read cost (a
/// blocking-pool hop for tokio's files, one HTTP body frame) is small against the copy.
const READ_CHUNK: usize = drover_storage::BLOCK;

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
    /// A controller that is not active: its 503, or its redirect (to the active controller) when
    /// that is not a listed controller URL.
    #[error("{url} answered {status} as a controller that is not active ({state})")]
    Inactive {
        url: String,
        status: u16,
        state: String,
    },
    #[error("downloaded {what} hashes to {got}, expected {expected}")]
    Corrupt {
        /// `step.output`, or what else was downloaded.
        what: String,
        expected: String,
        got: String,
    },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}")]
    Store(#[from] BlobError),
    #[error("the artifact store {store} has no blob {digest}")]
    Missing { store: String, digest: Digest },
}

impl TransferError {
    /// Worth another try: the controller was unreachable or failed on its side (restarting).
    /// Object store requests are retried by their client already.
    fn is_transient(&self) -> bool {
        match self {
            TransferError::Http { .. } | TransferError::Inactive { .. } => true,
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

fn io_error(path: &Path, error: std::io::Error) -> TransferError {
    TransferError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Downloads one input to `dest`, verifying its digest while writing.
pub async fn download(route: &Route, input: &JobInput, dest: &Path) -> Result<(), TransferError> {
    let what = format!("{}.{}", input.step, input.output);
    download_blob(route, &input.digest, &what, dest).await
}

/// Writes the bytes the job brought for `input` to `dest`, once they hash to its digest.
///
/// Written in place, not on the blocking pool: the bytes are few (at most a job's inline
/// allowance), and two hand-offs to the pool's threads cost more than the write on a step's path.
pub fn write_given(input: &JobInput, bytes: &[u8], dest: &Path) -> Result<(), TransferError> {
    let got = Digest::of_bytes(bytes);
    if got != input.digest {
        return Err(TransferError::Corrupt {
            what: format!("{}.{} (sent with the job)", input.step, input.output),
            expected: input.digest.to_string(),
            got: got.to_string(),
        });
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    std::fs::write(dest, bytes).map_err(|e| io_error(dest, e))
}

/// Downloads the blob `digest` (described as `what` in errors) to `dest`, verifying its
/// digest while writing.
pub async fn download_blob(
    route: &Route,
    digest: &Digest,
    what: &str,
    dest: &Path,
) -> Result<(), TransferError> {
    let started = std::time::Instant::now();
    let fetched = fetch(route, digest, what, dest).await;
    tracing::debug!("downloaded {what} in {:?}", started.elapsed());
    fetched
}

async fn fetch(
    route: &Route,
    digest: &Digest,
    what: &str,
    dest: &Path,
) -> Result<(), TransferError> {
    match route {
        Route::Controller { http, base } => {
            let body = http::get(http, base, digest).await?;
            write_verified(body, digest, what, dest).await
        }
        Route::Store(store) => {
            let Some(blob) = store.open(digest).await? else {
                return Err(TransferError::Missing {
                    store: store.describe(),
                    digest: digest.clone(),
                });
            };
            write_verified(blob.bytes, digest, what, dest).await
        }
    }
}

/// Streams `body` into `dest` while hashing; an error unless it hashes to `digest`.
async fn write_verified<S, E>(
    mut body: S,
    digest: &Digest,
    what: &str,
    dest: &Path,
) -> Result<(), TransferError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    TransferError: From<E>,
{
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_error(parent, e))?;
    }
    // A workdir's input needs no fsync: it is fetched again if the agent dies.
    let mut file = HashedFile::create(dest, false)
        .await
        .map_err(|e| io_error(dest, e))?;
    while let Some(chunk) = body.next().await {
        file.write(chunk?).await.map_err(|e| io_error(dest, e))?;
    }
    let (got, _) = file.finish().await.map_err(|e| io_error(dest, e))?;
    if got != *digest {
        return Err(TransferError::Corrupt {
            what: what.to_string(),
            expected: digest.to_string(),
            got: got.to_string(),
        });
    }
    Ok(())
}

/// sha256 and size of a file, read in blocks on the blocking pool.
pub async fn hash_file(path: &Path) -> Result<(Digest, u64), TransferError> {
    drover_storage::hash_file(path, u64::MAX)
        .await
        .map_err(|e| io_error(path, e))
}

/// The file as a stream of chunks.
async fn file_stream(
    path: &Path,
) -> Result<tokio_util::io::ReaderStream<tokio::fs::File>, TransferError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error(path, e))?;
    Ok(tokio_util::io::ReaderStream::with_capacity(
        file, READ_CHUNK,
    ))
}

/// Uploads of at most this many bytes are sent without asking whether the store holds the blob:
/// sending it again costs about what the question does (one round trip), and storing a blob
/// that is there already replaces it with the same bytes.
const SENT_WITHOUT_ASKING: u64 = 64 * 1024;

/// Whether an upload of `size` bytes first asks whether the store holds the blob.
fn asked_first(size: u64) -> bool {
    size > SENT_WITHOUT_ASKING
}

/// Uploads a file unless the store has it already (asked first when the file is larger than
/// [`SENT_WITHOUT_ASKING`]); returns its reference.
pub async fn upload(route: &Route, path: &Path) -> Result<ArtifactRef, TransferError> {
    let started = std::time::Instant::now();
    let (digest, size) = hash_file(path).await?;
    let hashed = started.elapsed();
    let checked = asked_first(size);
    match route {
        Route::Controller { http, base } => {
            if !(checked && http::exists(http, base, &digest).await?) {
                http::put(http, base, &digest, size, file_stream(path).await?).await?;
            }
        }
        Route::Store(store) => {
            if !(checked && store.stat(&digest).await?.is_some()) {
                store.put(&digest, file_stream(path).await?.boxed()).await?;
            }
        }
    }
    tracing::debug!(
        "uploaded {} ({size} bytes): hashed in {hashed:?}, stored in {:?}",
        path.display(),
        started.elapsed() - hashed
    );
    Ok(ArtifactRef {
        digest,
        size,
        file_name: file_name_of(path),
    })
}

/// The file's bytes and its reference when it is a regular file of at most `most` bytes;
/// `None` when it is larger (also when it grew past `most` while being read).
///
/// Read in place, not on the blocking pool, as [`write_given`] writes: at most `most` bytes of
/// an output whose step has ended, and only from a regular file (the open file is what is
/// checked: a pipe put at the path is neither waited for nor read).
pub fn read_small(path: &Path, most: u64) -> Result<Option<(ArtifactRef, Vec<u8>)>, TransferError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Without O_NONBLOCK, opening a pipe would wait for a writer.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() || meta.len() > most {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(most + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > most {
        return Ok(None);
    }
    let artifact = ArtifactRef {
        digest: Digest::of_bytes(&bytes),
        size: bytes.len() as u64,
        file_name: file_name_of(path),
    };
    Ok(Some((artifact, bytes)))
}

/// The name an artifact keeps: the file's own, made safe.
fn file_name_of(path: &Path) -> FileName {
    FileName::sanitized(
        &path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests;
