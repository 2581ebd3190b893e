//! A cgroup v2 per attempt, under the agent's own cgroup: found from `/proc/self/mountinfo`
//! and `/proc/self/cgroup` (no assumed path; hybrid layouts mount v2 beside the v1
//! controllers), checked at start by moving a probe process in and killing it, and killed
//! whole at the attempt's end through `cgroup.kill` (Linux 5.14) or by freezing it and killing
//! each process. An emptied cgroup this process made is kept for a later attempt.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The name of an attempt's cgroup starts with this, then the leader's pid.
pub const STEP_PREFIX: &str = "drover-step-";

/// The name of an attempt's cgroup made before its spawn goes on with this, then the pid of
/// the agent process that made it.
pub const OWNED_BY: &str = "by";

/// An empty attempt cgroup older than this was left by an agent that was killed.
const LEFT_AFTER: Duration = Duration::from_secs(60);

/// How long a killed cgroup may take to empty.
const EMPTY_WITHIN: Duration = Duration::from_secs(5);

/// Emptied attempt cgroups this process made ([`Parent::create`]), kept for later attempts:
/// making and removing a cgroup per attempt was 8 % of a fan-out's samples (the agent and its
/// steps; `bench/results/2026-12-05-entries.md`). An empty cgroup holds nothing of an attempt, and
/// its name is the agent process's, not the attempt's.
static SPARES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// At most this many spares are kept; more than the attempts that run at once is no use.
const SPARES_KEPT: usize = 64;

/// The agent's cgroup, where the attempts' cgroups are created.
#[derive(Debug)]
pub struct Parent {
    dir: PathBuf,
    has_kill: bool,
}

impl Parent {
    /// The agent's cgroup v2 directory, once a probe child was created in it, given a process
    /// and killed.
    pub fn find() -> Result<Parent, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let (root, mount) = unified_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("this process is in no cgroup v2")?;
        let dir = join_below(&mount, &root, path).ok_or_else(|| {
            format!(
                "the agent's cgroup {path} is outside the mount at {}",
                mount.display()
            )
        })?;
        let parent = Parent {
            has_kill: false,
            dir,
        };
        let parent = parent.probe()?;
        parent.remove_left_behind();
        Ok(parent)
    }

    /// Removes the empty attempt cgroups that agents killed with SIGKILL left (their processes
    /// are killed by the next agent on their work dir). A cgroup in use is never empty for
    /// long, and `rmdir` refuses one with processes.
    fn remove_left_behind(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > LEFT_AFTER));
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(STEP_PREFIX);
            // An empty cgroup of a live agent process is its spare.
            let spare = owner(&name).is_some_and(alive);
            if ours && old && !spare && procs(&entry.path()).is_ok_and(|p| p.is_empty()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }

    /// Kills and removes the attempt cgroups made by agent processes that are gone (their
    /// steps can no longer report; one spawned just before its agent died has no `running/`
    /// entry that would name it); returns how many. A pid the kernel gave to another process
    /// since keeps its cgroups alive: they are left, not wrongly killed.
    pub fn kill_orphaned(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = owner(&name) else {
                continue;
            };
            if alive(owner) {
                continue;
            }
            match kill_and_remove(&entry.path()) {
                Ok(()) => killed += 1,
                Err(e) => tracing::warn!("cannot kill what a gone agent left: {e}"),
            }
        }
        killed
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn has_kill(&self) -> bool {
        self.has_kill
    }

    /// Creates a child, moves a `sleep` into it and kills it there. The child is named for
    /// this process and the probe's number in it: a process probes once ([`super::current`]),
    /// but tests probe from several threads at once, and those must not share one.
    fn probe(mut self) -> Result<Parent, String> {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let probe = self
            .dir
            .join(format!("drover-probe-{}-{n}", std::process::id()));
        std::fs::create_dir(&probe).map_err(|e| {
            format!(
                "cannot create a cgroup in the agent's own {} ({e})",
                self.dir.display()
            )
        })?;
        self.has_kill = probe.join("cgroup.kill").exists();
        let tried = (|| {
            let mut sleeper = std::process::Command::new("sleep")
                .arg("30")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a probe process: {e}"))?;
            let moved = move_into(&probe, sleeper.id() as i32)
                .map_err(|e| format!("cannot move a process into {} ({e})", probe.display()));
            let killed = moved.and_then(|()| kill_and_wait(&probe, self.has_kill));
            let _ = sleeper.kill();
            let _ = sleeper.wait();
            killed
        })();
        let _ = remove(&probe);
        tried.map(|()| self)
    }

    /// The attempt cgroups made for a leader with this pid.
    pub fn attempt_dirs(&self, pid: i32) -> Vec<PathBuf> {
        let prefix = format!("{STEP_PREFIX}{pid}-");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// A new cgroup for an attempt whose process is not spawned yet, and its `cgroup.procs`
    /// open for writing (the process moves itself in: [`crate::spawn`]). Cgroup v2 cannot
    /// rename a cgroup, so it is named for this agent's process, not the step's leader: its
    /// name goes into the attempt's `running/` entry instead, and an agent starting later kills
    /// what is left in those of an agent process that is gone ([`Parent::kill_orphaned`]).
    pub fn create(&self) -> std::io::Result<(PathBuf, std::fs::File)> {
        while let Some(dir) = take_spare(&self.dir) {
            match open_procs(&dir) {
                Ok(procs) => return Ok((dir, procs)),
                Err(e) => {
                    tracing::debug!("a spare cgroup {} is gone: {e}", dir.display());
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("{STEP_PREFIX}{OWNED_BY}{}-{suffix}", std::process::id());
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir)?;
        match open_procs(&dir) {
            Ok(procs) => Ok((dir, procs)),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// A new cgroup for the attempt led by `pid`, with that process moved into it.
    pub fn enter(&self, pid: i32) -> std::io::Result<PathBuf> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let dir = self.dir.join(format!("{STEP_PREFIX}{pid}-{suffix}"));
        std::fs::create_dir(&dir)?;
        if let Err(e) = move_into(&dir, pid) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(dir)
    }
}

/// The agent process an attempt cgroup's name says made it (`drover-step-by<pid>-...`).
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(STEP_PREFIX)?
        .strip_prefix(OWNED_BY)?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn open_procs(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
}

fn take_spare(parent: &Path) -> Option<PathBuf> {
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    let at = spares.iter().rposition(|d| d.parent() == Some(parent))?;
    Some(spares.swap_remove(at))
}

/// Removes the spare cgroups (the agent is stopping).
pub fn remove_spares() {
    let spares = std::mem::take(&mut *SPARES.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in spares {
        if let Err(e) = remove(&dir) {
            tracing::debug!("cannot remove the spare cgroup {}: {e}", dir.display());
        }
    }
}

/// The root and mount point of the cgroup2 mount in `mountinfo`.
fn unified_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = fields.split(' ');
        let root = fields.nth(3)?;
        let mount = fields.next()?;
        Some((unescape(root), PathBuf::from(unescape(mount))))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\'
            && digits.len() == 3
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let code = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(code as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` (a cgroup as `/proc/self/cgroup` names it) inside the mount of `root` at `mount`.
fn join_below(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rest = if root == "/" {
        path
    } else {
        path.strip_prefix(root)?
    };
    let rest = rest.trim_start_matches('/');
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rest.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rest)
    })
}

fn move_into(dir: &Path, pid: i32) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// The pids in a cgroup.
fn procs(dir: &Path) -> std::io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills every process of the cgroup and waits until it is empty.
fn kill_and_wait(dir: &Path, has_kill: bool) -> Result<(), String> {
    if has_kill {
        std::fs::write(dir.join("cgroup.kill"), "1")
            .map_err(|e| format!("cannot write {}/cgroup.kill: {e}", dir.display()))?;
    } else {
        freeze_and_kill(dir)?;
    }
    let until = Instant::now() + EMPTY_WITHIN;
    loop {
        match procs(dir) {
            Ok(pids) if pids.is_empty() => return Ok(()),
            Ok(pids) if Instant::now() >= until => {
                return Err(format!(
                    "{} still holds {pids:?} after it was killed",
                    dir.display()
                ));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot read {}/cgroup.procs: {e}", dir.display())),
        }
    }
}

/// Before `cgroup.kill`: freezes the cgroup so nothing forks, kills each process, thaws it
/// so the signals are delivered.
fn freeze_and_kill(dir: &Path) -> Result<(), String> {
    let freeze = dir.join("cgroup.freeze");
    std::fs::write(&freeze, "1").map_err(|e| format!("cannot freeze {}: {e}", dir.display()))?;
    let until = Instant::now() + EMPTY_WITHIN;
    while Instant::now() < until {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == "frozen 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for pid in procs(dir).map_err(|e| e.to_string())? {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    std::fs::write(&freeze, "0").map_err(|e| format!("cannot thaw {}: {e}", dir.display()))
}

fn remove(dir: &Path) -> std::io::Result<()> {
    let until = Instant::now() + EMPTY_WITHIN;
    loop {
        match std::fs::remove_dir(dir) {
            // Busy for a moment after the last process went.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Ends an attempt's cgroup: keeps it as a spare when this process made it for an attempt not
/// spawned yet ([`Parent::create`]), nothing is left in it or below it, it is not frozen and
/// fewer than [`SPARES_KEPT`] are kept; otherwise kills what is left and removes it.
pub fn finish(dir: &Path) -> Result<(), String> {
    let made_here = dir
        .file_name()
        .and_then(|n| owner(&n.to_string_lossy()))
        .is_some_and(|pid| pid == std::process::id());
    if !made_here || !untouched(dir) {
        return kill_and_remove(dir);
    }
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    if spares.len() < SPARES_KEPT {
        spares.push(dir.to_path_buf());
        return Ok(());
    }
    drop(spares);
    remove(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// Whether a cgroup is as a new one is, by its `cgroup.events`: no process in it or in a cgroup
/// a step made below it (`populated 0`), and not frozen by a step.
fn untouched(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|events| {
        events.lines().any(|l| l == "populated 0") && !events.lines().any(|l| l == "frozen 1")
    })
}

/// Kills what is left in an attempt's cgroup and removes it.
pub fn kill_and_remove(dir: &Path) -> Result<(), String> {
    let has_kill = dir.join("cgroup.kill").exists();
    let killed = kill_and_wait(dir, has_kill);
    let removed = remove(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()));
    killed.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_mount_is_found_in_a_hybrid_layout() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let (root, mount) = unified_mount(info).unwrap();
        assert_eq!(
            (root.as_str(), mount.as_path()),
            ("/", Path::new("/sys/fs/cgroup/unified"))
        );
        let only_v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(unified_mount(only_v1).is_none());
        let spaced = "41 31 0:38 /a\\040b /mnt/c\\040g rw shared:1 - cgroup2 cgroup2 rw\n";
        let (root, mount) = unified_mount(spaced).unwrap();
        assert_eq!(
            (root.as_str(), mount.as_path()),
            ("/a b", Path::new("/mnt/c g"))
        );
    }

    #[test]
    fn the_agents_cgroup_is_joined_below_the_mount() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(join_below(mount, "/", "/").unwrap(), mount);
        assert_eq!(
            join_below(mount, "/", "/system.slice/drover.service").unwrap(),
            mount.join("system.slice/drover.service")
        );
        // A namespaced mount whose root is the agent's own cgroup.
        assert_eq!(
            join_below(mount, "/pod", "/pod/c1").unwrap(),
            mount.join("c1")
        );
        assert!(join_below(mount, "/pod", "/other").is_none());
        assert!(join_below(mount, "/", "/a/../b").is_none());
    }
}
