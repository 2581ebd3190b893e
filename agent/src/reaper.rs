//! Makes sure nothing a step started outlives its attempt, even a process that left the step's
//! process group (`setsid`): each attempt runs in a cgroup v2 of its own, killed whole when the
//! attempt ends ([`cgroup`]), or, where the agent cannot create cgroups, the agent is the child
//! subreaper of what its steps start and sweeps what an attempt left ([`sweep`]).
//!
//! The choice is made once per process ([`init`]) and applies to every agent in it.

mod cgroup;
mod sweep;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Which mechanism `--step-cleanup` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupMode {
    /// A cgroup per attempt when the agent's cgroup is writable, else the subreaper sweep.
    #[default]
    Auto,
    /// A cgroup per attempt; refuse to start without one.
    Cgroup,
    /// The subreaper sweep, even where cgroups would work.
    Subreaper,
}

/// The mechanism in use.
#[derive(Debug)]
pub enum Reaper {
    Cgroup(cgroup::Parent),
    Subreaper,
}

/// What holds one attempt's processes until [`Reaper::finish`].
#[derive(Debug)]
pub enum Contained {
    /// The attempt's own cgroup.
    Cgroup(PathBuf),
    /// The attempt's process group, spared by other attempts' sweeps while it lives.
    Group(i32),
}

/// Held around a step's spawn: sweeps wait meanwhile.
pub struct Spawning(std::sync::MutexGuard<'static, Vec<i32>>);

static REAPER: OnceLock<Reaper> = OnceLock::new();

/// Chooses the mechanism for this process (the first call decides; later calls with another
/// mode are refused) and says which is in use.
pub fn init(mode: CleanupMode) -> anyhow::Result<&'static Reaper> {
    if let Some(reaper) = REAPER.get() {
        anyhow::ensure!(
            reaper.compatible(mode),
            "--step-cleanup {mode:?} differs from the {} already in use in this process",
            reaper.describe()
        );
        return Ok(reaper);
    }
    let reaper = Reaper::choose(mode)?;
    let reaper = REAPER.get_or_init(|| reaper);
    tracing::info!(
        "steps' leftover processes are killed through {}",
        reaper.describe()
    );
    Ok(reaper)
}

/// The mechanism in use, chosen as `auto` when nothing chose it before.
pub fn current() -> &'static Reaper {
    if let Some(reaper) = REAPER.get() {
        return reaper;
    }
    REAPER.get_or_init(|| Reaper::choose(CleanupMode::Auto).unwrap_or_else(|_| Reaper::subreaper()))
}

impl Reaper {
    fn choose(mode: CleanupMode) -> anyhow::Result<Reaper> {
        if mode == CleanupMode::Subreaper {
            return Ok(Self::subreaper());
        }
        match cgroup::Parent::find() {
            Ok(parent) => Ok(Reaper::Cgroup(parent)),
            Err(e) if mode == CleanupMode::Cgroup => Err(anyhow::anyhow!(
                "--step-cleanup cgroup: {e}; under systemd set Delegate=yes on the unit, or use --step-cleanup subreaper"
            )),
            Err(e) => {
                tracing::info!("no cgroup per step: {e}");
                Ok(Self::subreaper())
            }
        }
    }

    /// The sweep, with this process made the subreaper of its descendants.
    pub fn subreaper() -> Reaper {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "cannot become the child subreaper ({e}): a step's setsid children may outlive it"
            );
        }
        Reaper::Subreaper
    }

    fn compatible(&self, mode: CleanupMode) -> bool {
        matches!(
            (self, mode),
            (_, CleanupMode::Auto)
                | (Reaper::Cgroup(_), CleanupMode::Cgroup)
                | (Reaper::Subreaper, CleanupMode::Subreaper)
        )
    }

    /// For the agent's start-up line.
    pub fn describe(&self) -> String {
        match self {
            Reaper::Cgroup(parent) => format!(
                "a cgroup per attempt under {} ({})",
                parent.dir().display(),
                if parent.has_kill() {
                    "cgroup.kill"
                } else {
                    "freeze and kill"
                }
            ),
            Reaper::Subreaper => {
                "the subreaper sweep (no writable cgroup v2 for steps)".to_string()
            }
        }
    }

    /// Whether a step must wait after it is spawned until [`Reaper::enter`] has put it in its
    /// cgroup: a process can only be moved from outside once it runs, and one forked before
    /// the move would stay outside. Steps spawned by [`crate::spawn`] start inside it instead
    /// ([`Reaper::new_cgroup`]).
    pub fn gates_spawn(&self) -> bool {
        matches!(self, Reaper::Cgroup(_))
    }

    /// With a cgroup per attempt, a new cgroup for an attempt about to be spawned into it, and
    /// its `cgroup.procs` open for writing; `None` with the subreaper sweep.
    pub fn new_cgroup(&self) -> Option<std::io::Result<(PathBuf, std::fs::File)>> {
        match self {
            Reaper::Cgroup(parent) => Some(parent.create()),
            Reaper::Subreaper => None,
        }
    }

    /// Kills what is left in the attempt cgroups of agent processes that are gone, once the
    /// steps their `running/` entries name are dealt with; returns how many cgroups it emptied.
    pub fn kill_orphaned(&self) -> usize {
        match self {
            Reaper::Cgroup(parent) => parent.kill_orphaned(),
            Reaper::Subreaper => 0,
        }
    }

    /// Removes the emptied attempt cgroups kept for later attempts (an agent is stopping).
    pub fn remove_spares(&self) {
        if let Reaper::Cgroup(_) = self {
            cgroup::remove_spares();
        }
    }

    /// Removes a cgroup from [`Reaper::new_cgroup`] that nothing was spawned into.
    pub fn discard(&self, dir: &std::path::Path) {
        let _ = std::fs::remove_dir(dir);
    }

    /// To hold while a step is spawned and until [`Reaper::enter`] has it.
    pub fn spawning(&self) -> Spawning {
        Spawning(sweep::lock_live())
    }

    /// Takes the attempt whose process group `pgid` leads (just spawned) into keeping.
    pub fn enter(&self, pgid: i32, mut spawning: Spawning) -> Contained {
        match self {
            Reaper::Cgroup(parent) => match parent.enter(pgid) {
                Ok(dir) => return Contained::Cgroup(dir),
                Err(e) => {
                    tracing::warn!(
                        "cannot put step process {pgid} into a cgroup of its own: {e}; sweeping after it instead"
                    );
                }
            },
            Reaper::Subreaper => {}
        }
        spawning.0.push(pgid);
        Contained::Group(pgid)
    }

    /// Kills what is left in the cgroups of an attempt a killed predecessor ran with its
    /// leader `pgid` (started at `start_time`), and removes them: the cgroup its entry names
    /// (`cgroup`, made before the spawn), else those named for that leader, unless that pid now
    /// belongs to another process. Returns how many cgroups it emptied.
    pub fn kill_left(&self, pgid: i32, start_time: u64, cgroup: Option<&str>) -> usize {
        let Reaper::Cgroup(parent) = self else {
            return 0;
        };
        let dirs = match cgroup {
            // A name of its own (a file name, no path), so it names no other attempt's.
            Some(name) if !name.contains('/') && name.starts_with(cgroup::STEP_PREFIX) => {
                let dir = parent.dir().join(name);
                dir.exists().then_some(dir).into_iter().collect()
            }
            Some(_) => Vec::new(),
            None if crate::running::start_time(pgid).is_some_and(|t| t != start_time) => {
                return 0;
            }
            None => parent.attempt_dirs(pgid),
        };
        let mut emptied = 0;
        for dir in dirs {
            match cgroup::kill_and_remove(&dir) {
                Ok(()) => emptied += 1,
                Err(e) => tracing::warn!(
                    "cannot kill what a previous agent left in {}: {e}",
                    dir.display()
                ),
            }
        }
        emptied
    }

    /// Kills whatever is left of the attempt whose group `pgid` led (the group is killed
    /// already), waits until it is gone, and reaps what of it the agent adopted: one trip to
    /// the blocking pool for all of it.
    pub async fn finish_group(&self, contained: Contained, pgid: i32) {
        report_cleanup(
            tokio::task::spawn_blocking(move || {
                let cleaned = clean_up(contained);
                reap_adopted(pgid);
                cleaned
            })
            .await,
        );
    }

    /// Kills whatever is left of the attempt (its process group is killed already) and waits
    /// until it is gone.
    pub async fn finish(&self, contained: Contained) {
        report_cleanup(tokio::task::spawn_blocking(move || clean_up(contained)).await);
    }
}

fn clean_up(contained: Contained) -> Result<(), String> {
    match contained {
        Contained::Cgroup(dir) => cgroup::finish(&dir),
        Contained::Group(pgid) => {
            sweep::live_remove(pgid);
            sweep::sweep();
            Ok(())
        }
    }
}

fn report_cleanup(result: Result<Result<(), String>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot kill what is left of a step: {e}"),
        Err(e) => tracing::warn!("the cleanup of a step failed: {e}"),
    }
}

/// Reaps what the agent adopted as child subreaper from the killed group `pgid` (but its
/// leader, which its own parent has waited for already; they were sent SIGKILL with their
/// group, so each wait ends at once) and the dead processes that had left the agent's session
/// (`setsid`), which only an attempt can have started. Looks at the agent's own children only,
/// never the whole process table: this runs after every attempt.
fn reap_adopted(pgid: i32) {
    use nix::sys::wait::waitpid;
    use nix::unistd::Pid;
    // Any child in the group, until none is left (ECHILD); the leader was reaped before.
    while waitpid(Pid::from_raw(-pgid), None).is_ok() {}
    // Reading every thread's list of children costs a few syscalls per agent thread after each
    // attempt; with no dead child at all there is nothing to reap.
    if !any_dead_child() {
        return;
    }
    let me = std::process::id().to_string();
    let Some(my_session) = stat_fields(&me).and_then(|f| f.get(3).cloned()) else {
        return;
    };
    for pid in children(std::process::id() as i32).unwrap_or_default() {
        let Some(fields) = stat_fields(&pid.to_string()) else {
            continue;
        };
        // After the command name: state, ppid, pgrp, session.
        let [state, _, _, session, ..] = fields.as_slice() else {
            continue;
        };
        if state == "Z" && *session != my_session {
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}

/// Whether some child of the agent is dead and not reaped yet; looking reaps nothing, so the
/// children that others wait for (steps' leaders, warm parents) are left to them.
fn any_dead_child() -> bool {
    use nix::errno::Errno;
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(
        waitid(Id::All, flags),
        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD)
    )
}

/// The children of process `pid`, from each of its threads' `children` list (a child is listed
/// under the thread that forked it or adopted it); `None` where the kernel has no such lists.
/// A child forked or ended while the lists are read may be missed: callers look again later.
fn children(pid: i32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let list = match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => list,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match task.path().exists() {
                // The thread ended meanwhile.
                false => continue,
                true => return None,
            },
            Err(_) => continue,
        };
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(out)
}

/// The fields of `/proc/PID/stat` after the command name (in parentheses, which it may hold).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn an_emptied_cgroup_is_kept_for_a_later_attempt_until_the_agent_stops() {
        let parent = match init(CleanupMode::Cgroup) {
            Ok(Reaper::Cgroup(parent)) => parent,
            Ok(Reaper::Subreaper) => unreachable!("asked for cgroups"),
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let sleeper = || {
            std::process::Command::new("sleep")
                .arg("300")
                .spawn()
                .unwrap()
        };
        // An attempt whose process ended: its cgroup is kept and used again.
        let (dir, _) = parent.create().unwrap();
        cgroup::finish(&dir).unwrap();
        assert!(dir.exists(), "the empty cgroup was removed");
        let (again, _) = parent.create().unwrap();
        assert_eq!(again, dir, "the spare was not used");
        // One that left a process, in a cgroup it made below its own (where `cgroup.procs` of
        // the attempt's own lists nothing): the process is killed and the cgroup not kept.
        let below = dir.join("made-by-the-step");
        std::fs::create_dir(&below).unwrap();
        let mut left = sleeper();
        std::fs::write(below.join("cgroup.procs"), left.id().to_string()).unwrap();
        // Not removed either while the step's own cgroup is in it (an error, as before).
        let _ = cgroup::finish(&dir);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ended = loop {
            if let Some(status) = left.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process left below was not killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(ended.signal(), Some(9));
        let _ = std::fs::remove_dir(&below);
        let _ = std::fs::remove_dir(&dir);
        let (next, _) = parent.create().unwrap();
        assert_ne!(next, dir, "a cgroup a process was left in was used again");
        // A frozen one is not kept either.
        std::fs::write(next.join("cgroup.freeze"), "1").unwrap();
        cgroup::finish(&next).unwrap();
        assert!(!next.exists(), "the frozen cgroup was kept");
        let (last, _) = parent.create().unwrap();
        cgroup::finish(&last).unwrap();
        current().remove_spares();
        assert!(!last.exists(), "{} is left", last.display());
    }

    /// An attempt cgroup made by an agent process that is gone is killed and removed; one made
    /// by a live agent process is left as it is.
    #[test]
    fn the_cgroups_of_an_agent_process_that_is_gone_are_killed() {
        let parent = match init(CleanupMode::Cgroup) {
            Ok(Reaper::Cgroup(parent)) => parent,
            Ok(Reaper::Subreaper) => unreachable!("asked for cgroups"),
            Err(e)
                if std::os::unix::fs::MetadataExt::uid(
                    &std::fs::metadata("/proc/self").unwrap(),
                ) != 0 =>
            {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let gone = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let mut made = Vec::new();
        for owner in [gone, std::process::id()] {
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
            let name = format!(
                "{}{}{owner}-{suffix}",
                cgroup::STEP_PREFIX,
                cgroup::OWNED_BY
            );
            let dir = parent.dir().join(name);
            std::fs::create_dir(&dir).unwrap();
            let sleeper = std::process::Command::new("sleep")
                .arg("300")
                .spawn()
                .unwrap();
            std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
            made.push((dir, sleeper));
        }
        assert!(parent.kill_orphaned() >= 1);
        let (dir, mut sleeper) = made.remove(0);
        assert!(!dir.exists(), "{} is left", dir.display());
        assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
        let (dir, mut sleeper) = made.remove(0);
        assert!(dir.exists(), "a live agent's cgroup was removed");
        assert!(
            sleeper.try_wait().unwrap().is_none(),
            "a live agent's step was killed"
        );
        cgroup::kill_and_remove(&dir).unwrap();
        let _ = sleeper.wait();
    }
}
