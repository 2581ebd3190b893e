//! Runs one step's process in its own process group, with a timeout and cancellation, and
//! kills the whole group when it ends, then whatever left the group ([`crate::reaper`]: the
//! attempt's cgroup, or the subreaper sweep), so no child outlives its step.

use crate::reaper::{self, Contained, Reaper};
use crate::running::{Recorded, Registration};
use crate::spawn;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// The complete environment: nothing else is inherited.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    /// SIGTERM, then SIGKILL after this long.
    pub kill_grace: Duration,
    /// Where to record the process group while it runs, so that an agent restarted after a
    /// crash can kill what this one left.
    pub record: Option<Registration>,
    /// Run as this user and group (`--run-as`) instead of the agent's.
    pub user: Option<(u32, u32)>,
    /// Set to the process group once the process is spawned (the attempt's channel answers
    /// only that group's processes).
    pub started: Option<Arc<OnceLock<i32>>>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Signaled(i32),
    TimedOut,
    Cancelled,
}

/// A step's process, spawned: held at its gate (in its cgroup) until [`Started::run`] opens
/// it, or, where steps are not gated, already running its program.
pub struct Started<'r> {
    reaper: &'r Reaper,
    child: Child,
    pgid: Option<Pid>,
    contained: Option<Contained>,
    /// The gate's writing end: a line on it lets the program run.
    gate: Option<std::io::PipeWriter>,
    /// Both output streams, read once the program may run.
    reader: Option<std::io::PipeReader>,
    /// Held until the whole group is killed.
    recorded: Option<Recorded>,
}

/// The step's process: spawned through std (tokio's wrapper), or straight into its cgroup.
enum Child {
    Std(tokio::process::Child),
    InCgroup(spawn::Child),
}

impl Child {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Child::Std(child) => child.wait().await,
            Child::InCgroup(child) => child.wait().await,
        }
    }
}

/// Runs the process; stdout and stderr go, as raw bytes in arrival order, to `output`.
pub async fn run(
    spec: &ProcessSpec,
    output: Sender<Vec<u8>>,
    cancel: CancellationToken,
) -> std::io::Result<Ended> {
    run_with(reaper::current(), spec, output, cancel).await
}

/// [`run`] with the given way of killing what leaves the process group.
pub async fn run_with(
    reaper: &Reaper,
    spec: &ProcessSpec,
    output: Sender<Vec<u8>>,
    cancel: CancellationToken,
) -> std::io::Result<Ended> {
    start(reaper, spec, false)?
        .ok_or_else(|| std::io::Error::other("the step's process was not started"))?
        .run(spec, output, cancel)
        .await
}

/// Spawns the process and holds it at its gate, in its cgroup, without letting its program
/// run; `None` where it is not held that way (no cgroup per attempt, a program that is not a
/// file, or a step that starts straight inside its cgroup), so nothing of the step runs before
/// [`Started::run`].
pub fn hold(spec: &ProcessSpec) -> Option<std::io::Result<Started<'static>>> {
    start(reaper::current(), spec, true).transpose()
}

/// Spawns the process, gated where the reaper needs it; with `only_gated`, spawns nothing
/// (`Ok(None)`) unless it can be gated.
fn start<'r>(
    reaper: &'r Reaper,
    spec: &ProcessSpec,
    only_gated: bool,
) -> std::io::Result<Option<Started<'r>>> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    // With a cgroup per attempt a step starts inside it, so nothing it forks can be outside;
    // it is not spawned ahead of its claim then, since nothing would hold it (nor is its
    // program looked up on `PATH`, which is one `statx` per directory).
    if reaper.gates_spawn() && spec.user.is_none() && spawn::supported() {
        return match only_gated {
            true => Ok(None),
            false => {
                let program_path = resolve_program(program, &spec.env, &spec.cwd);
                start_in_cgroup(reaper, spec, &program_path, args).map(Some)
            }
        };
    }
    let program_path = resolve_program(program, &spec.env, &spec.cwd);
    // A step run as another user (`--run-as`), whose user std changes, or one on a kernel
    // without `pidfd_open`, waits at a gate until it is in its cgroup (a program that does not
    // exist fails to start as usual).
    let gate = match reaper.gates_spawn() && spec.cwd.join(&program_path).is_file() {
        true => Some(std::io::pipe()?),
        false if only_gated => return Ok(None),
        false => None,
    };
    // One pipe for both streams keeps their interleaving exactly as the process wrote it.
    let (reader, writer) = std::io::pipe()?;
    let mut command = match &gate {
        Some((gate_reader, _)) => {
            let mut command = Command::new(GATE_SHELL);
            command
                .arg("-c")
                .arg(gate_script(&spec.env))
                .arg(&program_path)
                .args(args)
                .stdin(gate_reader.try_clone()?);
            command
        }
        None => {
            let mut command = Command::new(&program_path);
            command.args(args).stdin(Stdio::null());
            command
        }
    };
    command
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(true);
    let spawning = reaper.spawning();
    if let Some((uid, gid)) = spec.user {
        // std also drops the agent's supplementary groups.
        command.uid(uid).gid(gid);
    }
    let spawned = command.spawn();
    // The parent's copies of the write end must close, or the reader never sees EOF.
    drop(command);
    let child = spawned
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {program:?}: {e}")))?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let (Some(cell), Some(pgid)) = (&spec.started, pgid) {
        let _ = cell.set(pgid.as_raw());
    }
    let contained = pgid.map(|pgid| reaper.enter(pgid.as_raw(), spawning));
    let recorded = pgid.and_then(|pgid| record(spec, pgid, None));
    Ok(Some(Started {
        reaper,
        child: Child::Std(child),
        pgid,
        contained,
        gate: gate.map(|(_, writer)| writer),
        reader: Some(reader),
        recorded,
    }))
}

/// Spawns the program straight into a new cgroup of its attempt ([`spawn`]), running.
fn start_in_cgroup<'r>(
    reaper: &'r Reaper,
    spec: &ProcessSpec,
    program_path: &Path,
    args: &[String],
) -> std::io::Result<Started<'r>> {
    let cannot = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot start {:?}: {e}", spec.argv[0]))
    };
    let path_text = program_path.to_string_lossy();
    let argv: Vec<&str> = std::iter::once(path_text.as_ref())
        .chain(args.iter().map(String::as_str))
        .collect();
    let program = spawn::Program::new(program_path, &argv, &spec.env, &spec.cwd).map_err(cannot)?;
    // One pipe for both streams keeps their interleaving exactly as the process wrote it.
    let (reader, writer) = std::io::pipe()?;
    let stdin = std::fs::File::open("/dev/null")?;
    let spawning = reaper.spawning();
    let Some(made) = reaper.new_cgroup() else {
        return Err(std::io::Error::other("no cgroup per attempt"));
    };
    let (dir, procs) = made.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create the attempt's cgroup: {e}"))
    })?;
    let spawned = spawn::spawn(&program, stdin.as_fd(), writer.as_fd(), procs.as_fd());
    // The parent's copy of the write end must close, or the reader never sees EOF.
    drop(writer);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            reaper.discard(&dir);
            return Err(cannot(e));
        }
    };
    let pgid = Pid::from_raw(child.id());
    if let Some(cell) = &spec.started {
        let _ = cell.set(pgid.as_raw());
    }
    drop(spawning);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(Started {
        reaper,
        child: Child::InCgroup(child),
        pgid: Some(pgid),
        recorded: record(spec, pgid, name.as_deref()),
        contained: Some(Contained::Cgroup(dir)),
        gate: None,
        reader: Some(reader),
    })
}

/// Records the process group (and the attempt's cgroup, when made before the spawn) where the
/// spec asks, so that an agent restarted after a crash can kill what this one left.
fn record(spec: &ProcessSpec, pgid: Pid, cgroup: Option<&str>) -> Option<Recorded> {
    let registration = spec.record.as_ref()?;
    match registration.record(pgid.as_raw(), cgroup) {
        Ok(recorded) => Some(recorded),
        Err(e) => {
            tracing::warn!(
                "cannot record process group {pgid} in {}: {e}",
                registration.dir().display()
            );
            None
        }
    }
}

impl Started<'_> {
    /// Lets the program run (opens its gate) and runs it to its end; stdout and stderr go, as
    /// raw bytes in arrival order, to `output`.
    pub async fn run(
        mut self,
        spec: &ProcessSpec,
        output: Sender<Vec<u8>>,
        cancel: CancellationToken,
    ) -> std::io::Result<Ended> {
        if let Some(mut gate) = self.gate.take() {
            // Open the gate (in its cgroup or not: entering failed is handled by the sweep). A
            // step killed meanwhile cannot read it; that is fine.
            let _ = std::io::Write::write_all(&mut gate, b"\n");
        }
        let reader = self
            .reader
            .take()
            .map(|reader| tokio::spawn(forward(reader, output)));
        let timeout = async {
            match spec.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let child = &mut self.child;
        let ended = tokio::select! {
            status = child.wait() => {
                let status = status?;
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => Ended::Exited(code),
                    (None, Some(sig)) => Ended::Signaled(sig),
                    (None, None) => Ended::Exited(-1),
                }
            }
            _ = timeout => {
                terminate(child, self.pgid, spec.kill_grace).await;
                Ended::TimedOut
            }
            _ = cancel.cancelled() => {
                terminate(child, self.pgid, spec.kill_grace).await;
                Ended::Cancelled
            }
        };
        self.kill_all().await;
        // Should something still hold the pipe open, don't wait on it forever.
        if let Some(reader) = reader {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        Ok(ended)
    }

    /// Kills the held process without letting its program run (its gate stays closed).
    pub async fn abandon(mut self) {
        drop(self.gate.take());
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = self.child.wait().await;
        self.kill_all().await;
    }

    /// Kills the whole group, then what left it; the record goes last.
    async fn kill_all(&mut self) {
        // Children left behind (`cmd &`) would keep the pipes open and outlive the step.
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        // Then what left the group (setsid): the attempt's cgroup, or the sweep.
        if let (Some(contained), Some(pgid)) = (self.contained.take(), self.pgid) {
            self.reaper.finish_group(contained, pgid.as_raw()).await;
        }
        self.recorded.take();
    }
}

/// The shell that runs the gate ([`gate_script`]).
const GATE_SHELL: &str = "/bin/sh";
/// Variables the shell adds to the environment it passes on; removed unless the step declares
/// them (bash keeps `SHLVL` regardless).
const SHELL_ADDS: [&str; 3] = ["PWD", "OLDPWD", "SHLVL"];

/// The gate: waits for the agent's go (a line on stdin) once the process is in its cgroup, then
/// becomes the step's program (`$0`, already resolved) with its arguments, no stdin, and the
/// step's environment only. Without the go (the agent died, which closes the pipe) it exits:
/// a held step runs only once its claim is confirmed.
fn gate_script(env: &BTreeMap<String, String>) -> String {
    let added: Vec<&str> = SHELL_ADDS
        .into_iter()
        .filter(|k| !env.contains_key(*k))
        .collect();
    let unset = match added.is_empty() {
        true => String::new(),
        false => format!("unset {}; ", added.join(" ")),
    };
    format!("read -r _ || exit 1; {unset}exec \"$0\" \"$@\" </dev/null")
}

/// The program to execute: as given when it names a path, else the first executable file of
/// that name on the step's own `PATH` (as `execvp` would find it).
///
/// A bare name with `PATH` set in a cleared environment makes std fork instead of using
/// posix_spawn (it cannot let the parent's `PATH` do the lookup), and fork copies the page
/// tables of the whole agent process for every step: under `drover up` that includes the
/// controller's memory, which made a 10,000-step fan-out spend half its CPU in the kernel's
/// `copy_page_range`. An absolute path lets std use posix_spawn (a vfork-like clone).
fn resolve_program(program: &str, env: &BTreeMap<String, String>, cwd: &Path) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let Some(path) = env.get("PATH") else {
        return PathBuf::from(program);
    };
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cwd.join(dir).join(program)
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// SIGTERM to the group, SIGKILL after the grace period.
async fn terminate(child: &mut Child, pgid: Option<Pid>, grace: Duration) {
    let Some(pgid) = pgid else { return };
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Copies the pipe to `output` in chunks until EOF, on the runtime's reactor (no thread per
/// step). A full `output` holds the reader back, and with it the process once the pipe's buffer
/// is full.
pub(crate) async fn forward(reader: std::io::PipeReader, output: Sender<Vec<u8>>) {
    let fd = std::os::fd::OwnedFd::from(reader);
    let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(reader) => reader,
        Err(e) => {
            tracing::warn!("cannot read the step's output: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if output.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_test_support::{Deadline, eventually_async};
    use tokio::sync::mpsc;

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("PATH".into(), std::env::var("PATH").unwrap_or_default())]),
            cwd: std::env::temp_dir(),
            timeout: None,
            kill_grace: Duration::from_millis(500),
            record: None,
            user: None,
            started: None,
        }
    }

    #[tokio::test]
    async fn a_step_runs_as_the_user_given() {
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
            eprintln!("not root: running as another user was not tested");
            return;
        }
        let mut s = spec("id -u; id -g; id -G");
        s.user = Some((65534, 65534));
        let (ended, out) = collect(&s, CancellationToken::new()).await;
        assert_eq!(ended, Ended::Exited(0));
        // No supplementary group of the agent's is left.
        assert_eq!(String::from_utf8_lossy(&out), "65534\n65534\n65534\n");
    }

    async fn collect(spec: &ProcessSpec, cancel: CancellationToken) -> (Ended, Vec<u8>) {
        let (tx, mut rx) = mpsc::channel(4);
        // Read while it runs: the output channel is bounded.
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend(chunk);
            }
            out
        });
        let ended = run(spec, tx, cancel).await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the output pipe stayed open: a process of the step survived")
            .unwrap();
        (ended, out)
    }

    fn alive(marker: &str) -> bool {
        count(marker) > 0
    }

    /// How many processes have `marker` in their command line.
    fn count(marker: &str) -> usize {
        std::process::Command::new("pgrep")
            .args(["-c", "-f", marker])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn programs_are_found_on_the_steps_own_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::write(bin.join("data"), "not executable").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = BTreeMap::from([(
            "PATH".to_string(),
            format!("/nonexistent:{}", bin.display()),
        )]);
        let cwd = dir.path();
        assert_eq!(resolve_program("tool", &env, cwd), tool);
        // Not executable, unknown, or already a path: left for exec to judge.
        assert_eq!(resolve_program("data", &env, cwd), PathBuf::from("data"));
        assert_eq!(resolve_program("nope", &env, cwd), PathBuf::from("nope"));
        assert_eq!(resolve_program("./x", &env, cwd), PathBuf::from("./x"));
        assert_eq!(
            resolve_program("tool", &BTreeMap::new(), cwd),
            PathBuf::from("tool")
        );
        // An empty PATH entry means the working directory, as for execvp.
        let env = BTreeMap::from([("PATH".to_string(), ":/nonexistent".to_string())]);
        assert_eq!(
            resolve_program("bin/tool", &env, cwd),
            PathBuf::from("bin/tool")
        );
        std::fs::copy(&tool, cwd.join("here")).unwrap();
        std::fs::set_permissions(cwd.join("here"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            resolve_program("here", &env, cwd),
            cwd.join(".").join("here")
        );
    }

    #[tokio::test]
    async fn raw_output_and_exit_code() {
        let (ended, out) = collect(
            &spec("printf 'a\\rb\\377\\n'; exit 3"),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ended, Ended::Exited(3));
        assert_eq!(out, b"a\rb\xff\n");
    }

    #[tokio::test]
    async fn the_group_is_recorded_while_it_runs() {
        let work = tempfile::tempdir().unwrap();
        let attempt = drover_protocol::message::AttemptRef {
            run_id: drover_protocol::RunId::generate(),
            step: drover_protocol::StepName::new("s").unwrap(),
            attempt: drover_protocol::AttemptNo(2),
        };
        let mut s = spec("echo $$; sleep 0.5");
        let files = crate::running::Entries::new(work.path());
        s.record = Some(Registration::new(&files, attempt.clone(), work.path()));
        let entries = crate::running::dir(work.path());
        let seen = tokio::spawn({
            let entries = entries.clone();
            async move {
                loop {
                    let found = std::fs::read_dir(&entries)
                        .ok()
                        .and_then(|mut d| d.next())
                        .and_then(|f| std::fs::read(f.ok()?.path()).ok());
                    if let Some(bytes) = found.filter(|b| !b.trim_ascii().is_empty()) {
                        return serde_json::from_slice::<crate::running::Entry>(&bytes).unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        let (ended, out) = collect(&s, CancellationToken::new()).await;
        assert_eq!(ended, Ended::Exited(0));
        let entry = tokio::time::timeout(Duration::from_secs(5), seen)
            .await
            .expect("no entry was written")
            .unwrap();
        let pid: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
        assert_eq!((entry.pgid, &entry.attempt), (pid, &attempt));
        let left: Vec<Vec<u8>> = std::fs::read_dir(&entries)
            .unwrap()
            .map(|f| std::fs::read(f.unwrap().path()).unwrap())
            .collect();
        assert!(
            left.iter().all(|b| b.trim_ascii().is_empty()),
            "the entry is blanked once the group is gone"
        );
    }

    #[tokio::test]
    async fn only_declared_environment_is_visible() {
        let mut s = spec("echo \"[$HOME][$PATH]\"");
        s.env.insert("X".into(), "1".into());
        let (_, out) = collect(&s, CancellationToken::new()).await;
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("[]["), "{text}");
        // Exactly the declared variables reach the program, through the cgroup gate too.
        let mut s = spec("unused");
        s.argv = vec!["env".into()];
        s.env.insert("X".into(), "1".into());
        for reaper in [reaper::current(), &Reaper::subreaper()] {
            let (tx, mut rx) = mpsc::channel(4);
            let reader = tokio::spawn(async move {
                let mut out = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    out.extend(chunk);
                }
                out
            });
            run_with(reaper, &s, tx, CancellationToken::new())
                .await
                .unwrap();
            let out = String::from_utf8(reader.await.unwrap()).unwrap();
            let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
            names.sort();
            assert_eq!(names, ["PATH", "X"], "{} : {out}", reaper.describe());
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let marker = format!("sleep 100{}", std::process::id());
        let mut s = spec(&format!("{marker} & {marker}"));
        s.timeout = Some(Duration::from_millis(300));
        let (ended, _) = collect(&s, CancellationToken::new()).await;
        assert_eq!(ended, Ended::TimedOut);
        assert!(!alive(&marker), "a child of the step survived");
    }

    #[tokio::test]
    async fn cancel_kills_background_children_too() {
        let marker = format!("sleep 200{}", std::process::id());
        let s = spec(&format!("{marker} & {marker} & wait"));
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let m = marker.clone();
        // Cancel once the shell and both its children run, so the cancel has children to kill.
        let started = tokio::spawn(async move {
            let children = Deadline::new("the step and its two children", Duration::from_secs(10));
            let seen = eventually_async(children, || {
                let n = count(&m);
                std::future::ready(if n >= 3 { Ok(n) } else { Err(n) })
            })
            .await;
            c2.cancel();
            seen
        });
        let (ended, _) = collect(&s, cancel).await;
        started.await.unwrap().unwrap();
        assert_eq!(ended, Ended::Cancelled);
        assert!(!alive(&marker), "a child of the step survived");
    }

    #[tokio::test]
    async fn leftover_children_are_killed_when_the_main_process_exits() {
        let marker = format!("sleep 300{}", std::process::id());
        let (ended, _) = collect(
            &spec(&format!("{marker} & echo started")),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ended, Ended::Exited(0));
        assert!(!alive(&marker), "a background child outlived its step");
    }

    /// Runs a step that starts a `setsid` daemon and checks that nothing of it is left.
    async fn setsid_daemon_is_gone(reaper: &Reaper, tag: &str) {
        let marker = format!("sleep 1000{tag}{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        // The step ends only once the daemon has left its session, so the group kill at the
        // end cannot catch it first.
        let mut s = spec(&format!(
            "setsid sh -c 'touch ready; exec {marker}' & until [ -e ready ]; do sleep 0.01; done"
        ));
        s.cwd = dir.path().to_path_buf();
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let ended = run_with(reaper, &s, tx, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(ended, Ended::Exited(0));
        let gone = Deadline::new("the setsid daemon to be gone", Duration::from_secs(5));
        eventually_async(gone, || {
            let n = count(&marker);
            std::future::ready(if n == 0 { Ok(()) } else { Err(n) })
        })
        .await
        .expect("a setsid daemon outlived its attempt");
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the output pipe stayed open")
            .unwrap();
    }

    #[tokio::test]
    async fn the_subreaper_sweep_kills_a_setsid_daemon() {
        setsid_daemon_is_gone(&Reaper::subreaper(), "1").await;
    }

    #[tokio::test]
    async fn the_attempts_cgroup_kills_a_setsid_daemon() {
        let Some(reaper) = cgroup_reaper() else {
            return;
        };
        assert!(matches!(reaper, Reaper::Cgroup(_)), "{}", reaper.describe());
        setsid_daemon_is_gone(reaper, "2").await;
    }

    /// The cgroup reaper; `None` (the test skipped) where this process cannot create cgroups.
    /// Creating cgroups needs root or a delegated cgroup; as root it must work.
    fn cgroup_reaper() -> Option<&'static Reaper> {
        match reaper::init(reaper::CleanupMode::Cgroup) {
            Ok(reaper) => Some(reaper),
            Err(e) if !is_root() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A step that leaves `ran` in its working directory, held at its gate in a cgroup (run as
    /// a user of its own: this process's); `None` where this process cannot create cgroups.
    fn held_step(dir: &Path) -> Option<(Started<'static>, ProcessSpec)> {
        let reaper = cgroup_reaper()?;
        let mut s = spec("touch ran");
        s.cwd = dir.to_path_buf();
        s.argv[0] = "/bin/sh".into();
        let me = std::fs::metadata("/proc/self").unwrap();
        s.user = Some((
            std::os::unix::fs::MetadataExt::uid(&me),
            std::os::unix::fs::MetadataExt::gid(&me),
        ));
        let started = start(reaper, &s, true)
            .unwrap()
            .expect("not held at a gate");
        Some((started, s))
    }

    /// The cgroup v2 path of a live process.
    fn cgroup_of(pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_held_step_runs_in_its_cgroup_only_once_its_gate_opens() {
        let dir = tempfile::tempdir().unwrap();
        let Some((started, s)) = held_step(dir.path()) else {
            return;
        };
        let pid = started.pgid.unwrap().as_raw();
        assert!(
            cgroup_of(pid).contains("/drover-step-"),
            "{}",
            cgroup_of(pid)
        );
        assert!(!dir.path().join("ran").exists());
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let ended = started.run(&s, tx, CancellationToken::new()).await.unwrap();
        assert_eq!(ended, Ended::Exited(0));
        assert!(dir.path().join("ran").exists());
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_step_starts_inside_its_cgroup() {
        let Some(reaper) = cgroup_reaper() else {
            return;
        };
        // The shell's own builtins read where it is: from its first instruction on, anything
        // it forks would be inside too.
        let s = spec(
            "while read -r line; do case $line in 0::*) echo \"$line $$\";; esac; done < /proc/self/cgroup",
        );
        assert!(start(reaper, &s, true).unwrap().is_none(), "held at a gate");
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend(chunk);
            }
            String::from_utf8(out).unwrap()
        });
        let ended = run_with(reaper, &s, tx, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(ended, Ended::Exited(0));
        let out = reader.await.unwrap();
        let cgroup = out.trim().rsplit_once(' ').unwrap().0;
        let made_by = format!("/drover-step-by{}-", std::process::id());
        assert!(cgroup.contains(&made_by), "{out}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_be_executed_is_an_error_saying_so() {
        let Some(reaper) = cgroup_reaper() else {
            return;
        };
        let mut s = spec("");
        s.argv = vec!["/nonexistent/program".into()];
        let (tx, _rx) = mpsc::channel(4);
        let Err(e) = run_with(reaper, &s, tx, CancellationToken::new()).await else {
            panic!("it ran");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot start \"/nonexistent/program\": cannot execute it"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_abandoned_step_never_runs_its_program() {
        let dir = tempfile::tempdir().unwrap();
        let Some((started, _)) = held_step(dir.path()) else {
            return;
        };
        let pid = started.pgid.unwrap().as_raw();
        started.abandon().await;
        assert!(
            crate::running::start_time(pid).is_none(),
            "the gate is alive"
        );
        assert!(!dir.path().join("ran").exists(), "the program ran");
    }

    #[tokio::test]
    async fn a_gate_whose_agent_is_gone_exits_without_running_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut started, _)) = held_step(dir.path()) else {
            return;
        };
        // What an agent's death does: the gate's pipe closes without a go.
        drop(started.gate.take());
        let status = started.child.wait().await.unwrap();
        assert_eq!(status.code(), Some(1));
        assert!(!dir.path().join("ran").exists(), "the program ran");
        started.kill_all().await;
    }

    #[tokio::test]
    async fn an_adopted_setsid_child_is_reaped_after_its_attempt() {
        let Some(reaper) = cgroup_reaper() else {
            return;
        };
        // As under warm starts: what a step orphans is adopted by the agent, killed with the
        // attempt's cgroup and left for the agent to reap.
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(
            "setsid sh -c 'echo $$ > pid; exec sleep 30' & until [ -s pid ]; do sleep 0.01; done",
        );
        s.cwd = dir.path().to_path_buf();
        let mut next = spec("true");
        next.cwd = dir.path().to_path_buf();
        // A process still exiting when its attempt's reaping looks is reaped after a later one.
        for step in [&s, &next] {
            let (tx, mut rx) = mpsc::channel(4);
            let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let ended = run_with(reaper, step, tx, CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(ended, Ended::Exited(0));
            reader.await.unwrap();
        }
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
        let proc = format!("/proc/{}", pid.trim());
        assert!(
            !Path::new(&proc).exists(),
            "{proc}: {:?}",
            std::fs::read_to_string(format!("{proc}/stat"))
        );
    }

    /// Whether the tests run as root (the owner of their own `/proc/self`).
    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
