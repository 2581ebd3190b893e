//! Child processes a test or benchmark starts: each in a process group of its own, its stdout
//! and stderr in a log file (read for readiness lines and failure messages), killed with its
//! whole group on drop so that nothing outlives the test. [`Processes`] keeps several by label.

use crate::ready;
use crate::wait::{Check, Deadline, Observation, WaitError, eventually};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long a stopped process may take to exit after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(10);

/// A started process, killed with its process group on drop.
pub struct ChildProcess {
    label: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `cmd` in a new process group, stdin from `/dev/null`, stdout and stderr into the
    /// file `log` (created or truncated).
    pub fn spawn(label: impl Into<String>, mut cmd: Command, log: &Path) -> io::Result<Self> {
        let out = File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", cmd.get_program().display()),
            )
        })?;
        Ok(Self {
            label: label.into(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the process wrote so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the process itself (not its group), e.g. SIGTERM to drain an agent.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        kill(self.nix_pid(), signal)
    }

    /// Its exit status once it has exited; `None` while it runs.
    pub fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// `observation` while the process runs; once it has exited, a [`Check::Failed`] with its
    /// status and output, so a wait for its readiness stops at once.
    pub fn alive_and<O: Observation>(&mut self, observation: O) -> Check<O::Value> {
        match self.exit_status() {
            Ok(None) => observation.check(),
            Ok(Some(status)) => Check::Failed(format!(
                "{} exited ({status}); its output:\n{}",
                self.label,
                self.output()
            )),
            Err(e) => Check::Failed(format!("cannot tell whether {} runs: {e}", self.label)),
        }
    }

    /// Waits until a line of its output is accepted by `pick`; fails early if it exits.
    pub fn wait_for_line<T>(
        &mut self,
        deadline: Deadline,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, WaitError> {
        let log = self.log.clone();
        eventually(deadline, || {
            let seen = ready::line_in(&log, &mut pick);
            self.alive_and(seen)
        })
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, WaitError> {
        let what = format!("{} to exit", self.label);
        eventually(
            Deadline::new(what, within).every(Duration::from_millis(20)),
            || match self.exit_status() {
                Ok(Some(status)) => Check::Ready(status),
                Ok(None) => Check::NotYet("still running".into()),
                Err(e) => Check::Failed(e.to_string()),
            },
        )
    }

    /// SIGKILL to its whole group, then reaps it. Once it has been reaped its pid may belong to
    /// another process, so a process seen exited is left alone.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = killpg(self.nix_pid(), Signal::SIGKILL);
            self.exited = self.child.wait().ok();
        }
    }

    /// SIGTERM to its whole group, then SIGKILL after `grace` if it still runs.
    pub fn stop(&mut self, grace: Duration) {
        stop_all(std::slice::from_mut(self), grace);
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops several processes at once: SIGTERM to every group, up to `grace` for all of them to
/// exit, then SIGKILL to what is left.
pub fn stop_all(children: &mut [ChildProcess], grace: Duration) {
    for child in children.iter_mut() {
        if matches!(child.exit_status(), Ok(None)) {
            let _ = killpg(child.nix_pid(), Signal::SIGTERM);
        }
    }
    let deadline = Deadline::new("every process to exit", grace).every(Duration::from_millis(20));
    let _ = eventually(deadline, || {
        let running: Vec<String> = children
            .iter_mut()
            .filter_map(|c| matches!(c.exit_status(), Ok(None)).then(|| c.label().to_string()))
            .collect();
        if running.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {}", running.join(", ")))
        }
    });
    for child in children.iter_mut() {
        child.kill();
    }
}

/// Processes started in one directory, by label: `<dir>/<label>.log` holds each one's output,
/// and stays readable after the process is gone. Stopped (SIGTERM, then SIGKILL after
/// [`GRACE`]) on drop.
pub struct Processes {
    dir: PathBuf,
    children: Vec<ChildProcess>,
}

impl Processes {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            children: Vec::new(),
        }
    }

    /// Where the output of the process `label` goes.
    pub fn log_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.log"))
    }

    /// Starts `cmd` as `label` (see [`ChildProcess::spawn`]).
    pub fn spawn(&mut self, label: &str, cmd: Command) -> io::Result<&mut ChildProcess> {
        let child = ChildProcess::spawn(label, cmd, &self.log_path(label))?;
        self.children.push(child);
        let last = self.children.len() - 1;
        Ok(&mut self.children[last])
    }

    pub fn get(&self, label: &str) -> Option<&ChildProcess> {
        self.children.iter().find(|c| c.label == label)
    }

    pub fn get_mut(&mut self, label: &str) -> Option<&mut ChildProcess> {
        self.children.iter_mut().find(|c| c.label == label)
    }

    /// Takes a process out (it is killed when the value is dropped).
    pub fn remove(&mut self, label: &str) -> Option<ChildProcess> {
        let pos = self.children.iter().position(|c| c.label == label)?;
        Some(self.children.remove(pos))
    }

    /// What the process `label` wrote, whether or not it still runs.
    pub fn output(&self, label: &str) -> String {
        std::fs::read_to_string(self.log_path(label)).unwrap_or_default()
    }

    /// The last `lines` lines each process wrote, under its label: what a test that timed out
    /// shows, so a failure seen once can be read after its directory is gone.
    pub fn tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for child in &self.children {
            let text = self.output(&child.label);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "--- {} (last {} of {} lines)\n",
                child.label,
                all.len() - from,
                all.len()
            ));
            for line in &all[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops every process (see [`stop_all`]) and forgets them; then kills what they left
    /// behind in this directory (see [`kill_strays`]).
    pub fn stop_all(&mut self, grace: Duration) {
        stop_all(&mut self.children, grace);
        self.children.clear();
        kill_strays(&self.dir);
    }
}

/// Kills every process working under `dir` (its current directory there): what a process
/// killed on purpose left behind, such as the steps of an agent a test killed with SIGKILL,
/// which live on in process groups of their own until an agent on the same work dir reaps them.
pub fn kill_strays(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id();
    for (pid, proc_dir) in all_processes() {
        let working_here =
            std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        if pid != me && working_here {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Every process on the machine now: its pid and its `/proc/PID` directory (none when `/proc`
/// cannot be read).
pub fn all_processes() -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all(GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    /// Alive and not a zombie.
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    }

    fn within(secs: u64, what: &str) -> Deadline {
        Deadline::new(what, Duration::from_secs(secs))
    }

    #[test]
    fn output_lines_signal_readiness_and_the_process_has_its_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ChildProcess::spawn(
            "printer",
            sh("echo warming up; echo port 4711; exec sleep 60"),
            &dir.path().join("printer.log"),
        )
        .unwrap();
        let port = p
            .wait_for_line(within(10, "the port line"), |l| {
                l.strip_prefix("port ")?.parse::<u16>().ok()
            })
            .unwrap();
        assert_eq!(port, 4711);
        assert!(p.output().starts_with("warming up\n"));
        let pgid = nix::unistd::getpgid(Some(p.nix_pid())).unwrap();
        assert_eq!(pgid, p.nix_pid());
        assert_ne!(pgid, nix::unistd::getpgrp());
    }

    #[test]
    fn a_wait_for_readiness_stops_when_the_process_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ChildProcess::spawn(
            "quitter",
            sh("echo bad flag >&2; exit 3"),
            &dir.path().join("q.log"),
        )
        .unwrap();
        let started = Instant::now();
        let err = p
            .wait_for_line(within(60, "a line that never comes"), |l| {
                l.starts_with("ready").then_some(())
            })
            .unwrap_err();
        assert!(err.gave_up, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{err}");
        assert!(
            err.last.contains("quitter exited (exit status: 3)"),
            "{err}"
        );
        assert!(err.last.ends_with("bad flag\n"), "{err}");
    }

    #[test]
    fn drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ChildProcess::spawn(
            "spawner",
            sh("sleep 60 & echo child $!; wait"),
            &dir.path().join("s.log"),
        )
        .unwrap();
        let grandchild: u32 = p
            .wait_for_line(within(10, "the child's pid"), |l| {
                l.strip_prefix("child ")?.parse().ok()
            })
            .unwrap();
        let leader = p.pid();
        assert!(alive(grandchild) && alive(leader));
        drop(p);
        eventually(within(10, "the background child to die"), || {
            !alive(grandchild)
        })
        .unwrap();
        assert!(!alive(leader));
    }

    #[test]
    fn stop_all_kills_what_a_killed_process_left_working_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let mut procs = Processes::new(dir.path());
        // A process group of its own, like a step's: killing its parent's group misses it.
        let mut cmd = sh("setsid sh -c 'echo stray $$; exec sleep 60' & wait");
        cmd.current_dir(&work);
        let parent = procs.spawn("parent", cmd).unwrap();
        let stray: u32 = parent
            .wait_for_line(within(10, "the stray's pid"), |l| {
                l.strip_prefix("stray ")?.parse().ok()
            })
            .unwrap();
        procs.get_mut("parent").unwrap().kill();
        assert!(alive(stray), "the stray outlives its parent's group");
        procs.stop_all(Duration::from_secs(1));
        eventually(within(10, "the stray to die"), || !alive(stray)).unwrap();
    }

    #[test]
    fn stop_all_terminates_then_kills_what_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Processes::new(dir.path());
        procs.spawn("polite", sh("exec sleep 60")).unwrap();
        let stubborn = procs
            .spawn(
                "stubborn",
                sh("trap '' TERM; echo trapped; while :; do sleep 1; done"),
            )
            .unwrap();
        stubborn
            .wait_for_line(within(10, "the trap"), |l| (l == "trapped").then_some(()))
            .unwrap();
        let started = Instant::now();
        procs.stop_all(Duration::from_millis(500));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(procs.get("polite").is_none());
        assert_eq!(procs.output("stubborn"), "trapped\n");
    }

    #[test]
    fn processes_are_found_by_label_and_their_exit_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Processes::new(dir.path());
        procs.spawn("short", sh("echo done; exit 4")).unwrap();
        procs.spawn("long", sh("exec sleep 60")).unwrap();
        let status = procs
            .get_mut("short")
            .unwrap()
            .wait_exit(Duration::from_secs(10))
            .unwrap();
        assert_eq!(status.code(), Some(4));
        let err = procs
            .get_mut("long")
            .unwrap()
            .wait_exit(Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err.last, "still running");
        assert_eq!(err.what, "long to exit");
        let mut long = procs.remove("long").unwrap();
        long.signal(Signal::SIGTERM).unwrap();
        let status = long.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), None, "ended by a signal");
        assert_eq!(procs.output("short"), "done\n");
        assert!(procs.get("long").is_none());
    }

    #[test]
    fn tails_show_the_end_of_each_log_under_its_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Processes::new(dir.path());
        procs.spawn("counter", sh("seq 1 100")).unwrap();
        procs.spawn("quiet", sh("true")).unwrap();
        for label in ["counter", "quiet"] {
            let child = procs.get_mut(label).unwrap();
            child.wait_exit(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(
            procs.tails(3),
            "--- counter (last 3 of 100 lines)\n98\n99\n100\n--- quiet (last 0 of 0 lines)\n"
        );
    }
}
