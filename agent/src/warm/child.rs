//! A step's process forked by a warm parent, run to its end as [`crate::process`] runs a cold
//! one: its own process group (the channel's peer), its cgroup (entered before the gate opens),
//! the running record, timeout and cancellation by group, and what left the group killed last.
//!
//! Its exit status comes from the parent. When the parent dies first, the process is
//! reparented to the agent (the child subreaper, see [`super::Pool::new`]) and waited for here.

use super::parent::Forking;
use crate::process::{Ended, ProcessSpec, forward};
use crate::reaper::Reaper;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Deserialize;
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

/// How often an orphaned step's process is looked at.
const ORPHAN_POLL: Duration = Duration::from_millis(20);

/// The parent's report of a child's end.
#[derive(Debug, Deserialize)]
struct Status {
    exit: Option<i32>,
    signal: Option<i32>,
}

/// Runs the forked process to its end; `reader` is the read end of its output pipe.
pub async fn run(
    reaper: &Reaper,
    spec: &ProcessSpec,
    forking: Forking,
    reader: std::io::PipeReader,
    output: Sender<Vec<u8>>,
    cancel: CancellationToken,
) -> std::io::Result<Ended> {
    let Forking {
        pid,
        mut answer,
        mut gate,
    } = forking;
    let pgid = Pid::from_raw(pid);
    if let Some(cell) = &spec.started {
        let _ = cell.set(pid);
    }
    // The process made itself a group leader before it waits at the gate.
    let contained = reaper.enter(pid, reaper.spawning());
    let _recorded = match &spec.record {
        Some(registration) => match registration.record(pid, None) {
            Ok(recorded) => Some(recorded),
            Err(e) => {
                tracing::warn!(
                    "cannot record process group {pid} in {}: {e}",
                    registration.dir().display()
                );
                None
            }
        },
        None => None,
    };
    let reader = tokio::spawn(forward(reader, output));
    let _ = gate.write_all(b"g");
    drop(gate);

    let status = wait(&mut answer, pid);
    tokio::pin!(status);
    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        ended = &mut status => ended,
        _ = timeout => {
            terminate(pgid, spec.kill_grace, &mut status).await;
            Ended::TimedOut
        }
        _ = cancel.cancelled() => {
            terminate(pgid, spec.kill_grace, &mut status).await;
            Ended::Cancelled
        }
    };
    let _ = killpg(pgid, Signal::SIGKILL);
    reaper.finish_group(contained, pid).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    Ok(ended)
}

/// SIGTERM to the group, SIGKILL after the grace period; returns once the process has ended.
async fn terminate(
    pgid: Pid,
    grace: Duration,
    status: &mut std::pin::Pin<&mut impl std::future::Future<Output = Ended>>,
) {
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, status.as_mut()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
        status.as_mut().await;
    }
}

/// How the process ended: the parent's report, or, when the parent died first, its status
/// as the agent's own child.
async fn wait(answer: &mut tokio::io::BufReader<tokio::net::UnixStream>, pid: i32) -> Ended {
    let mut line = String::new();
    if answer.read_line(&mut line).await.is_ok_and(|n| n > 0) {
        match serde_json::from_str::<Status>(&line) {
            Ok(Status {
                signal: Some(sig), ..
            }) => return Ended::Signaled(sig),
            Ok(Status {
                exit: Some(code), ..
            }) => return Ended::Exited(code),
            _ => tracing::warn!("a warm parent reported {line:?} for process {pid}"),
        }
    }
    wait_orphan(pid).await
}

/// Waits for a process whose warm parent died: it is reparented to the agent (the subreaper)
/// as soon as the kernel has finished with the parent.
async fn wait_orphan(pid: i32) -> Ended {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ended::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ended::Signaled(sig as i32),
            Ok(_) => {}
            Err(Errno::ECHILD) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                tracing::warn!(
                    "process {pid} of a warm parent that died ended with a status nobody could read"
                );
                return Ended::Exited(-1);
            }
            Err(Errno::EINTR | Errno::ECHILD) => {}
            Err(e) => {
                tracing::warn!("cannot wait for process {pid}: {e}");
                return Ended::Exited(-1);
            }
        }
        tokio::time::sleep(ORPHAN_POLL).await;
    }
}
