//! One warm parent: `python drover_warm.py` in a step environment, its control socket as
//! standard input, and the requests the agent sends it (each a length-prefixed JSON object with
//! file descriptors passed as `SCM_RIGHTS`, the first a socket for the answer).

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The warm parent's script inside the bundle, beside the harness.
pub const SCRIPT: &str = "drover_warm.py";

/// How long a parent may take to answer a fork request.
const FORK_PATIENCE: Duration = Duration::from_secs(10);

/// BLAS and OpenMP pools pinned to one thread in the parent, so it holds no thread when it
/// forks; each child sizes its own pools as the step's environment says.
const PINNED: [&str; 6] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
];

/// OpenBLAS reads how long an idle worker spins (`sched_yield` in a loop) before it sleeps as
/// the library loads, so the parent's value holds in every child. Its default, 2^28 clock
/// cycles (about 0.1 s), is paid by a fresh process while it is still importing; a child
/// creates its workers when it sizes its pools, just before the step, so they would spin
/// through the step beside it. 2^20 cycles (under a millisecond) still keeps them awake
/// between back-to-back calls. A step environment that sets it keeps its own value.
const BLAS_SPIN: (&str, &str) = ("OPENBLAS_THREAD_TIMEOUT", "20");

/// What a parent is started with.
pub struct Launch<'a> {
    pub python: &'a Path,
    pub bundle: &'a Path,
    /// The environment steps of this parent share (without the per-attempt variables).
    pub env: &'a BTreeMap<String, String>,
    /// The parent's working, home and temporary directory.
    pub home: &'a Path,
}

/// A running parent.
pub struct Parent {
    process: tokio::process::Child,
    pid: i32,
    ctl: UnixStream,
    /// Modules this parent tried to import (imported or missing).
    pub tried: BTreeSet<String>,
    pub last_used: Instant,
    /// Steps forked so far.
    pub forks: u64,
}

/// The answer to a preload request.
#[derive(Debug, Deserialize)]
pub struct Preloaded {
    pub imported: Vec<String>,
    pub missing: Vec<String>,
    /// The module whose import started a thread: the parent has exited.
    pub threads_from: Option<String>,
}

/// A parent's first answer to a fork request.
#[derive(Debug, Deserialize)]
struct Forked {
    pid: i32,
}

/// A fork request sent, its answer not read yet.
pub struct Asked {
    answer: BufReader<tokio::net::UnixStream>,
    gate: std::io::PipeWriter,
}

impl Asked {
    /// The forked process, once the parent has answered with its pid.
    pub async fn forked(mut self) -> std::io::Result<Forking> {
        let line = read_line(&mut self.answer, FORK_PATIENCE).await?;
        let forked: Forked = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::other(format!("the warm parent answered {line:?}: {e}"))
        })?;
        Ok(Forking {
            pid: forked.pid,
            answer: self.answer,
            gate: self.gate,
        })
    }
}

/// A forked step's process, waiting at its gate.
pub struct Forking {
    pub pid: i32,
    /// Where the parent reports the process's end.
    pub answer: BufReader<tokio::net::UnixStream>,
    /// A byte here lets the process run the step.
    pub gate: std::io::PipeWriter,
}

impl Parent {
    /// Starts a parent (it imports nothing until asked).
    pub fn start(launch: &Launch<'_>) -> std::io::Result<Parent> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut env = launch.env.clone();
        for key in PINNED {
            env.insert(key.to_string(), "1".to_string());
        }
        env.entry(BLAS_SPIN.0.to_string())
            .or_insert_with(|| BLAS_SPIN.1.to_string());
        let home = launch.home.display().to_string();
        env.insert("HOME".into(), home.clone());
        env.insert("TMPDIR".into(), home);
        let process = tokio::process::Command::new(launch.python)
            .arg(launch.bundle.join(SCRIPT))
            .env_clear()
            .envs(&env)
            .current_dir(launch.home)
            .process_group(0)
            .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = process
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| std::io::Error::other("the warm parent exited as soon as it started"))?;
        ours.set_write_timeout(Some(FORK_PATIENCE))?;
        Ok(Parent {
            process,
            pid,
            ctl: ours,
            tried: BTreeSet::new(),
            last_used: Instant::now(),
            forks: 0,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `None` while the process runs, else how it ended.
    pub fn ended(&mut self) -> Option<String> {
        match self.process.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(match (status.code(), status.signal()) {
                (Some(code), _) => format!("it exited with status {code}"),
                (None, Some(sig)) => format!("it was killed by signal {sig}"),
                (None, None) => format!("it ended ({status})"),
            }),
            Err(e) => Some(format!("its status cannot be read: {e}")),
        }
    }

    /// Its resident memory, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid).unwrap_or(0)
    }

    /// Imports `modules` in the parent; `patience` bounds how long that may take.
    pub async fn preload(
        &mut self,
        modules: &BTreeSet<String>,
        patience: Duration,
    ) -> std::io::Result<Preloaded> {
        let request = serde_json::json!({"op": "preload", "modules": modules});
        let mut answer = self.send(&request, Vec::new())?;
        let line = read_line(&mut answer, patience).await?;
        self.tried.extend(modules.iter().cloned());
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("the warm parent answered {line:?}: {e}")))
    }

    /// Asks for a step's process: `argv` (the harness and its job), `env` and `cwd` as the step
    /// gets them, output to `log`. The request is only sent: the parent answers requests in the
    /// order they came, so the place can be let go while [`Asked::forked`] waits, and the
    /// parent serves the requests of several steps in one wake-up instead of one at a time.
    pub fn ask_fork(
        &mut self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
        log: std::io::PipeWriter,
    ) -> std::io::Result<Asked> {
        let (gate_reader, gate) = std::io::pipe()?;
        let parent_only: Vec<&str> = PINNED
            .iter()
            .chain(&[BLAS_SPIN.0, "HOME", "TMPDIR"])
            .copied()
            .collect();
        let request = serde_json::json!({
            "op": "fork", "argv": argv, "env": env, "cwd": cwd, "parent_only": parent_only,
        });
        let answer = self.send(
            &request,
            vec![OwnedFd::from(log), OwnedFd::from(gate_reader)],
        )?;
        self.forks += 1;
        self.last_used = Instant::now();
        Ok(Asked { answer, gate })
    }

    /// Sends one request with an answer socket and `fds` (closed here once sent).
    fn send(
        &mut self,
        request: &serde_json::Value,
        fds: Vec<OwnedFd>,
    ) -> std::io::Result<BufReader<tokio::net::UnixStream>> {
        let (ours, theirs) = UnixStream::pair()?;
        let body = request.to_string().into_bytes();
        let length = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("a warm parent request over 4 GiB"))?;
        let mut message = length.to_be_bytes().to_vec();
        message.extend(body);
        let mut raw = vec![theirs.as_raw_fd()];
        raw.extend(fds.iter().map(AsRawFd::as_raw_fd));
        let control = [ControlMessage::ScmRights(&raw)];
        let sent = sendmsg::<()>(
            self.ctl.as_raw_fd(),
            &[std::io::IoSlice::new(&message)],
            &control,
            MsgFlags::empty(),
            None,
        )
        .map_err(std::io::Error::from)?;
        // The descriptors went with the first byte; the rest is plain data.
        self.ctl.write_all(&message[sent..])?;
        drop(theirs);
        drop(fds);
        ours.set_nonblocking(true)?;
        Ok(BufReader::new(tokio::net::UnixStream::from_std(ours)?))
    }
}

/// One line of an answer, within `patience`.
pub async fn read_line(
    answer: &mut BufReader<tokio::net::UnixStream>,
    patience: Duration,
) -> std::io::Result<String> {
    let mut line = String::new();
    match tokio::time::timeout(patience, answer.read_line(&mut line)).await {
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the warm parent did not answer within {}",
                humantime::format_duration(patience)
            ),
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(0)) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the warm parent closed the request without an answer",
        )),
        Ok(Ok(_)) => Ok(line),
    }
}

/// A process's resident memory (`VmRSS`).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// A `/proc` field given in kB, in bytes.
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Where a parent of `key` lives under the environments' root.
pub fn home(env_root: &Path, key: &str) -> PathBuf {
    env_root.join("warm").join(key)
}
