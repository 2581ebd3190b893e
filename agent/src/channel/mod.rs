//! The attempt's channel: a Unix socket through which a running Python function step asks its
//! own agent to add a step to its run, wait for a step, store or fetch blobs, and store
//! artifacts of its own (`Task.upload_artifact`). The agent
//! relays with its own credentials to the controller it is configured with, so the step holds
//! no secret, and the channel dies with the attempt.
//!
//! Framing is one JSON object per line each way ([`wire`]); a connection carries requests one
//! after another and gets one answer line per request, in order; several connections may be
//! open at once. While a `wait` is pending the attempt's agent slot is given back
//! ([`crate::slots::AttemptSlot`]).

mod confine;
mod ops;
mod relay;
mod wire;

#[cfg(test)]
mod tests;

use crate::artifacts::Route;
use crate::slots::AttemptSlot;
use drover_protocol::OutputName;
use drover_protocol::message::{ArtifactRef, AttemptRef};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// The longest request line read; a step's source code travels in `add_step`.
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// What the channel of one attempt serves from.
pub(crate) struct Context {
    pub attempt: AttemptRef,
    /// The controller's base URL, as [`crate::AgentConfig::controller_base`] gives it: the
    /// agent's client sends its token there and nowhere else.
    pub base: String,
    pub http: reqwest::Client,
    /// Where blobs go and come from: the attempt's artifact route.
    pub route: Route,
    /// The attempt's workdir, canonical: paths outside it are refused.
    pub workdir: PathBuf,
    pub slot: Arc<AttemptSlot>,
    /// The CSRF token (and its cookie) a controller without an access token asks writes for;
    /// fetched on the first refusal and kept for the attempt.
    pub csrf: tokio::sync::Mutex<Option<drover_api::CsrfToken>>,
    /// The step's process group once it is spawned: from then on only its processes are
    /// answered, so another step that finds this socket cannot speak for this attempt.
    pub owner: Arc<std::sync::OnceLock<i32>>,
    /// The outputs the job declares (a function's return values): an artifact may not take
    /// one of their names.
    pub declared: BTreeSet<OutputName>,
    /// The artifacts the step stored (`artifact`), reported with its outputs on success.
    pub artifacts: StoredArtifacts,
}

/// The artifacts a step stored through its channel, by name.
pub(crate) type StoredArtifacts = Arc<std::sync::Mutex<BTreeMap<OutputName, ArtifactRef>>>;

/// A listening channel; dropping it stops serving and removes the socket.
pub(crate) struct Channel {
    path: PathBuf,
    stop: CancellationToken,
    owner: Arc<std::sync::OnceLock<i32>>,
    artifacts: StoredArtifacts,
}

impl Channel {
    /// Listens on the attempt's socket: `<workdir>/.drover.sock`, or a short path under the
    /// agent's `work_dir` (or `/tmp`) when that one is too long for a socket address.
    pub fn open(context: Context, work_dir: &Path) -> std::io::Result<Channel> {
        let path = confine::socket_path(&context.workdir, work_dir)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })?;
        let stop = CancellationToken::new();
        let owner = context.owner.clone();
        let artifacts = context.artifacts.clone();
        tokio::spawn(accept(listener, Arc::new(context), stop.clone()));
        Ok(Channel {
            path,
            stop,
            owner,
            artifacts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The artifacts the step has stored so far.
    pub fn artifacts(&self) -> BTreeMap<OutputName, ArtifactRef> {
        self.artifacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where the step's process group is set once spawned.
    pub fn owner(&self) -> Arc<std::sync::OnceLock<i32>> {
        self.owner.clone()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

async fn accept(listener: UnixListener, context: Arc<Context>, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match foreign(&stream, &context) {
                    None => {
                        tokio::spawn(serve(stream, context.clone(), stop.clone()));
                    }
                    Some(why) => {
                        tracing::warn!("channel of {}: refused {why}", describe(&context.attempt));
                        tokio::spawn(refuse(stream, why));
                    }
                },
                Err(e) => {
                    tracing::warn!("channel of {}: cannot accept: {e}", describe(&context.attempt));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Why a connection is not the attempt's own: its peer is not in the step's process group.
/// `None` once it is, and before the step is spawned (nothing of the step exists yet).
fn foreign(stream: &UnixStream, context: &Context) -> Option<String> {
    let &owner = context.owner.get()?;
    let pid = match stream.peer_cred().map(|c| c.pid()) {
        Ok(Some(pid)) => pid,
        _ => return Some("a connection whose process is unknown".into()),
    };
    match crate::running::process_group(pid) {
        Some(group) if group == owner => None,
        _ => Some(format!(
            "process {pid}, which is not in the step's process group {owner}"
        )),
    }
}

/// Answers a refused connection once, so its process learns why, then closes it.
async fn refuse(mut stream: UnixStream, why: String) {
    let answer = wire::failure(&drover_api::ApiError::new(
        drover_api::ErrorCode::Forbidden,
        format!("this channel answers only the processes of its own step; refused {why}"),
    ));
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// Answers one connection's requests in order until it closes or the attempt ends.
async fn serve(stream: UnixStream, context: Arc<Context>, stop: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut read).take(MAX_LINE + 1);
        // Biased: once the attempt has ended, nothing more is answered.
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            n = limited.read_until(b'\n', &mut line) => n,
        };
        let Ok(n) = n else { return };
        if n == 0 {
            return;
        }
        let answer = if line.len() as u64 > MAX_LINE && !line.ends_with(b"\n") {
            // Skip the rest of that line unread, then go on with the next request.
            if !skip_line(&mut read).await {
                return;
            }
            wire::failure(&drover_api::ApiError::new(
                drover_api::ErrorCode::BadRequest,
                format!("a request line is longer than {MAX_LINE} bytes"),
            ))
        } else {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                answer = ops::answer(&context, &line) => answer,
            }
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Discards input up to and including the next newline; false at the end of input.
async fn skip_line<R: AsyncBufRead + Unpin>(read: &mut R) -> bool {
    loop {
        let Ok(buf) = read.fill_buf().await else {
            return false;
        };
        if buf.is_empty() {
            return false;
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                read.consume(i + 1);
                return true;
            }
            None => {
                let n = buf.len();
                read.consume(n);
            }
        }
    }
}

fn describe(attempt: &AttemptRef) -> String {
    format!(
        "{}/{} attempt {}",
        attempt.run_id, attempt.step, attempt.attempt
    )
}
