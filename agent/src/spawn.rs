//! Starts a step's program straight inside its attempt's cgroup, so that nothing it forks can be
//! outside it, without a gate process in front of it. The only module of the project that uses
//! `unsafe`: std cannot create a child in a cgroup, and its `pre_exec` hook would make it fork,
//! which copies the page tables of the whole agent (under `drover up`, the controller's too).
//!
//! The child is made by `clone(CLONE_VM | CLONE_VFORK)`, as glibc's `posix_spawn` makes it: it
//! runs on a small stack of its own in the agent's memory while the calling thread waits, until
//! it has executed the program or failed. In that child, in order: every signal the agent handles
//! goes back to its default action (a handler must not run in a process sharing the agent's
//! memory) as does `SIGPIPE`; it moves itself into the cgroup (writes `0` to the `cgroup.procs`
//! the agent opened); it becomes the leader of a process group of its own; `/dev/null` becomes
//! its stdin and the output pipe its stdout and stderr; it changes to the workdir; no signal is
//! blocked any more; it executes the program with exactly the given environment. Each is a plain
//! system call through libc: nothing in the child allocates, locks or can unwind. A failure
//! before the program runs is written to memory the agent reads once the clone returns, and
//! the child exits with 127.

#![allow(unsafe_code)]

use nix::libc;
use std::collections::BTreeMap;
use std::ffi::{CString, c_char, c_int, c_void};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The child's stack: it only makes system calls before `execve` replaces it.
const STACK: usize = 64 * 1024;

/// What to execute, as C strings made before the clone.
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
}

impl Program {
    /// `path` is executed with `argv` (its first element included) and exactly `env`, in `cwd`.
    pub fn new(
        path: &Path,
        argv: &[&str],
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> std::io::Result<Program> {
        let text = |s: &[u8]| {
            CString::new(s).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{:?} holds a NUL byte", String::from_utf8_lossy(s)),
                )
            })
        };
        Ok(Program {
            path: text(path.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| text(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| text(format!("{k}={v}").as_bytes()))
                .collect::<Result<_, _>>()?,
            cwd: text(cwd.as_os_str().as_bytes())?,
        })
    }
}

/// The strings' pointers and the null pointer that ends such an array for `execve`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Where the child got to when it failed before executing the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Cgroup = 1,
    Group,
    Files,
    Workdir,
    Exec,
}

impl Stage {
    fn from_raw(raw: i32) -> Option<Stage> {
        [
            Stage::Cgroup,
            Stage::Group,
            Stage::Files,
            Stage::Workdir,
            Stage::Exec,
        ]
        .into_iter()
        .find(|s| *s as i32 == raw)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::Cgroup => "cannot enter its cgroup",
            Stage::Group => "cannot make its process group",
            Stage::Files => "cannot set up its stdin, stdout and stderr",
            Stage::Workdir => "cannot change to its workdir",
            Stage::Exec => "cannot execute it",
        }
    }
}

/// Everything the child reads, made before the clone; `stage` and `errno` it writes.
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    stdin: RawFd,
    output: RawFd,
    cgroup_procs: RawFd,
    stage: AtomicI32,
    errno: AtomicI32,
}

/// A program spawned by [`spawn`]: its pid until it is reaped, and a pidfd to wait on.
pub struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

/// Starts `program` inside the cgroup whose `cgroup.procs` is open as `cgroup_procs`, with
/// `stdin` and `output` (for stdout and stderr), as the leader of a new process group.
pub fn spawn(
    program: &Program,
    stdin: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cgroup_procs: BorrowedFd<'_>,
) -> std::io::Result<Child> {
    let fds = [
        stdin.as_raw_fd(),
        output.as_raw_fd(),
        cgroup_procs.as_raw_fd(),
    ];
    if fds.iter().any(|fd| *fd <= 2) {
        // dup2 onto 0, 1 and 2 would replace one of them before it is used.
        return Err(std::io::Error::other(
            "the agent's own stdin, stdout or stderr is closed",
        ));
    }
    let (argv, envp) = (pointers(&program.argv), pointers(&program.env));
    let args = ChildArgs {
        path: program.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: program.cwd.as_ptr(),
        stdin: fds[0],
        output: fds[1],
        cgroup_procs: fds[2],
        stage: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK];
    // SAFETY: the stack's end, rounded down to the 16 bytes the ABI wants, is inside `stack`.
    let top = unsafe { stack.as_mut_ptr().add(STACK) } as usize & !15;
    let (pid, clone_errno) = {
        let _blocked = BlockedSignals::all();
        // SAFETY: `child_main` only makes async-signal-safe system calls on its own stack;
        // CLONE_VFORK keeps this thread (and with it `args`, `argv`, `envp`, `program` and
        // `stack`) waiting until the child has executed the program or exited.
        let pid = unsafe {
            libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const ChildArgs as *mut c_void,
            )
        };
        (pid, std::io::Error::last_os_error())
    };
    drop(stack);
    if pid < 0 {
        return Err(clone_errno);
    }
    if let Some(stage) = Stage::from_raw(args.stage.load(Ordering::SeqCst)) {
        let error = std::io::Error::from_raw_os_error(args.errno.load(Ordering::SeqCst));
        reap(pid);
        return Err(std::io::Error::new(
            error.kind(),
            format!("{}: {error}", stage.describe()),
        ));
    }
    match wait_handle(pid) {
        Ok(pidfd) => Ok(Child {
            pid,
            pidfd,
            status: None,
        }),
        Err(error) => {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            reap(pid);
            Err(std::io::Error::new(
                error.kind(),
                format!("cannot wait for it: {error}"),
            ))
        }
    }
}

/// Whether this kernel has what [`spawn`] needs beyond `clone`: `pidfd_open` (Linux 5.3), asked
/// once per process. Where it is missing, steps go through the gate instead.
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a plain system call on this process's own pid; the descriptor is closed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) } as RawFd;
        if fd < 0 {
            tracing::info!(
                "steps are spawned through a gate: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        // SAFETY: the descriptor was just opened and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        true
    })
}

/// A pidfd of the child `pid`, registered with the runtime: readable once the child has ended.
fn wait_handle(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: a plain system call; the pid is our unreaped child, so it names no other process.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `pidfd_open` returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the descriptor is moved into the `AsyncFd` and stays open, the same one, until
    // the `AsyncFd` is dropped.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

impl Child {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits until the program has ended and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let mut ready = self.pidfd.readable().await?;
            match try_reap(self.pid)? {
                Some(status) => self.status = Some(status),
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Child {
    /// A child not waited for is killed and reaped on a thread of its own, as tokio's
    /// `kill_on_drop` would.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pid = self.pid;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let _ = std::thread::Builder::new()
            .name("reap".into())
            .spawn(move || reap(pid));
    }
}

/// The child's exit status once it has ended (and reaps it); `None` while it runs.
fn try_reap(pid: i32) -> std::io::Result<Option<ExitStatus>> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: a plain system call on our own child, writing to a local.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match got {
            0 => return Ok(None),
            p if p == pid => return Ok(Some(ExitStatus::from_raw(status))),
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Waits for the child to end and reaps it.
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// Every signal blocked in this thread while it lives, so that no handler of the agent runs
/// in the child between the clone and its reset of the handlers; the mask is restored after.
struct BlockedSignals {
    old: libc::sigset_t,
}

impl BlockedSignals {
    fn all() -> BlockedSignals {
        // SAFETY: the sets are locals, initialized by sigfillset / pthread_sigmask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            BlockedSignals { old }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `all`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// The child, until `execve`. Only system calls: see the module's comment.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn`, alive while the parent waits (CLONE_VFORK).
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: async-signal-safe system calls on descriptors and strings `spawn` made.
    unsafe {
        reset_signals();
        if libc::write(args.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            fail(args, Stage::Cgroup);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(args, Stage::Group);
        }
        if libc::dup2(args.stdin, 0) < 0
            || libc::dup2(args.output, 1) < 0
            || libc::dup2(args.output, 2) < 0
        {
            fail(args, Stage::Files);
        }
        if libc::chdir(args.cwd) != 0 {
            fail(args, Stage::Workdir);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.path, args.argv, args.envp);
        fail(args, Stage::Exec)
    }
}

/// Default actions for every signal with a handler, and for `SIGPIPE` (which Rust programs
/// ignore); other ignored signals stay ignored, as with `posix_spawn`.
///
/// # Safety
/// Only in the child of [`spawn`], before `execve`.
unsafe fn reset_signals() {
    // SAFETY: sigaction on locals; signals the kernel refuses (SIGKILL, SIGSTOP, glibc's own)
    // fail harmlessly.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        // Linux numbers signals from 1 to 64.
        for signal in 1..=64 {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let ignored = old.sa_sigaction == libc::SIG_IGN && signal != libc::SIGPIPE;
            if old.sa_sigaction != libc::SIG_DFL && !ignored {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Records where the child failed and why, and ends it.
///
/// # Safety
/// Only in the child of [`spawn`].
unsafe fn fail(args: &ChildArgs, stage: Stage) -> ! {
    // SAFETY: errno is read right after the failed call; _exit ends only this child.
    unsafe {
        args.errno
            .store(*libc::__errno_location(), Ordering::SeqCst);
        args.stage.store(stage as i32, Ordering::SeqCst);
        libc::_exit(127)
    }
}
