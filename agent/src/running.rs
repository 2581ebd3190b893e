//! The process groups of running attempts, recorded in the work dir (`running/<n>.json`) so
//! that an agent started after a `kill -9` of the previous one on the same work dir finds the
//! steps it left and kills them before taking jobs.
//!
//! An entry is written right after the step's process is spawned and blanked once its whole
//! group has been killed. It names the attempt's cgroup when the step was spawned into one, or
//! else holds the leader's start time (`/proc/PID/stat` field 22), so a pid the kernel has
//! since given to another process is never signalled.

use drover_protocol::message::AttemptRef;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What is recorded of one running attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub attempt: AttemptRef,
    /// The process group; the leader's pid (each step leads its own group).
    pub pgid: i32,
    /// The leader's start time, in clock ticks after boot; 0 when `cgroup` names the attempt's
    /// cgroup, which tells the leader from a later process with its pid instead (reading the
    /// start time cost a fan-out of short steps 3 % of the agent's CPU).
    pub start_time: u64,
    /// The attempt's workdir, removed with the group.
    pub workdir: PathBuf,
    /// The name of the attempt's cgroup when it was made before the spawn (it is not named for
    /// the leader then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// The entry files of one work dir. A file is kept open and used again: an attempt's entry is
/// written over a blank one and blanked (overwritten with spaces) when its group is gone, so
/// an attempt costs two writes to an open file. A file created, renamed and removed per attempt
/// cost more: its creation alone was 7 % of the samples of a fan-out's agent and steps, as ext4
/// searches long for a free inode when many were freed just before
/// (`bench/results/2026-12-05-entries.md`).
///
/// Each write is one `pwrite` at offset 0 of an entry of a few hundred bytes, within one page,
/// so a killed agent leaves a whole entry or a blank, never half of one.
#[derive(Debug)]
pub struct Entries {
    dir: PathBuf,
    blank: Mutex<Vec<EntryFile>>,
    made: AtomicUsize,
}

#[derive(Debug)]
struct EntryFile {
    file: File,
    path: PathBuf,
    /// Bytes written at the start of the file (the rest of an older, longer entry is blanked
    /// with it).
    len: usize,
}

impl Entries {
    pub fn new(work_dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            dir: dir(work_dir),
            blank: Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
        })
    }

    /// A blank entry file: one given back, or a new one.
    fn take(&self) -> std::io::Result<EntryFile> {
        if let Some(file) = self.blank.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(file);
        }
        std::fs::create_dir_all(&self.dir)?;
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{n}.json"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(EntryFile { file, path, len: 0 })
    }

    /// Blanks `file` and keeps it for the next attempt; one that cannot be written is removed.
    fn give_back(&self, mut file: EntryFile) {
        let spaces = vec![b' '; file.len];
        match file.file.write_all_at(&spaces, 0) {
            Ok(()) => {
                file.len = 0;
                self.blank
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(file);
            }
            Err(e) => {
                tracing::warn!("cannot blank {}: {e}", file.path.display());
                if let Err(e) = std::fs::remove_file(&file.path) {
                    tracing::warn!("cannot remove {}: {e}", file.path.display());
                }
            }
        }
    }
}

/// Where one attempt's entry goes, known before its process starts.
#[derive(Debug, Clone)]
pub struct Registration {
    pub entries: Arc<Entries>,
    pub attempt: AttemptRef,
    pub workdir: PathBuf,
}

/// The written entry; dropping it blanks the file.
#[derive(Debug)]
pub struct Recorded {
    file: Option<EntryFile>,
    entries: Arc<Entries>,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.entries.give_back(file);
        }
    }
}

/// The directory of entries under an agent's work dir.
pub fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join("running")
}

impl Registration {
    pub fn new(entries: &Arc<Entries>, attempt: AttemptRef, workdir: &Path) -> Self {
        Self {
            entries: entries.clone(),
            attempt,
            workdir: workdir.to_path_buf(),
        }
    }

    /// The directory the entry goes to.
    pub fn dir(&self) -> &Path {
        &self.entries.dir
    }

    /// Records the group led by `pid`, in the cgroup named `cgroup` when that was made before
    /// the spawn.
    pub fn record(&self, pid: i32, cgroup: Option<&str>) -> std::io::Result<Recorded> {
        let start_time = match cgroup {
            Some(_) => 0,
            None => start_time(pid).ok_or_else(|| {
                std::io::Error::other(format!("cannot read the start time of pid {pid}"))
            })?,
        };
        let entry = Entry {
            attempt: self.attempt.clone(),
            pgid: pid,
            start_time,
            workdir: self.workdir.clone(),
            cgroup: cgroup.map(str::to_string),
        };
        let mut bytes = serde_json::to_vec(&entry)?;
        let mut file = self.entries.take()?;
        // Spaces after the entry cover what is left of a longer one (JSON allows them).
        bytes.resize(bytes.len().max(file.len), b' ');
        let written = file.file.write_all_at(&bytes, 0);
        file.len = bytes.len();
        let recorded = Recorded {
            file: Some(file),
            entries: self.entries.clone(),
        };
        written.map(|()| recorded)
    }
}

/// What one entry left by a previous agent came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub entry: Entry,
    /// Processes of its group that were still alive and were killed.
    pub killed: usize,
}

/// Kills what a previous agent on this work dir left running and removes the entries and the
/// attempts' workdirs (kept when `keep_workdirs`). The caller holds the work dir's lock, so no
/// live agent owns these entries.
pub fn clean_up(work_dir: &Path, grace: Duration, keep_workdirs: bool) -> Vec<Cleaned> {
    let dir = dir(work_dir);
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut cleaned = Vec::new();
    for file in listing.flatten() {
        let path = file.path();
        match std::fs::read(&path).map(|text| parse(&text)) {
            Ok(Ok(Some(entry))) => {
                let killed = kill_group(&entry, grace);
                // Only a directory of this work dir: an entry is data, not an order.
                let ours = work_dir
                    .canonicalize()
                    .is_ok_and(|root| entry.workdir.starts_with(root));
                if !keep_workdirs
                    && ours
                    && let Err(e) = std::fs::remove_dir_all(&entry.workdir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!("cannot remove {}: {e}", entry.workdir.display());
                }
                cleaned.push(Cleaned { entry, killed });
            }
            // A blank entry file: its attempt's group was gone before the agent was.
            Ok(Ok(None)) => {}
            // A temporary file an older agent left, or an unreadable entry: nothing to go by.
            _ => tracing::warn!("removing {}: not a running-attempt entry", path.display()),
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    cleaned
}

/// An entry file's entry, `None` when it is blank.
fn parse(text: &[u8]) -> serde_json::Result<Option<Entry>> {
    if text.trim_ascii().is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(text).map(Some)
}

/// "cleaned up 2 processes left by a previous agent: run R step S attempt 1 (pgid 1234)".
pub fn describe(cleaned: &[Cleaned]) -> Option<String> {
    let killed: usize = cleaned.iter().map(|c| c.killed).sum();
    if killed == 0 {
        return None;
    }
    let what: Vec<String> = cleaned
        .iter()
        .filter(|c| c.killed > 0)
        .map(|c| {
            let a = &c.entry.attempt;
            format!(
                "run {} step {} attempt {} (pgid {})",
                a.run_id, a.step, a.attempt, c.entry.pgid
            )
        })
        .collect();
    Some(format!(
        "cleaned up {killed} process{} left by a previous agent: {}",
        if killed == 1 { "" } else { "es" },
        what.join(", ")
    ))
}

/// Kills the entry's group if it is still the one recorded: SIGTERM, then SIGKILL after
/// `grace`. Returns how many of its processes were alive.
fn kill_group(entry: &Entry, grace: Duration) -> usize {
    let alive = members(entry).len();
    if alive == 0 {
        return 0;
    }
    let pgid = Pid::from_raw(entry.pgid);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !members(entry).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !members(entry).is_empty() {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    alive
}

/// Live (not zombie) processes of the entry's group. When the leader's pid now belongs to
/// another process (started at another time, or outside the attempt's cgroup), the recorded
/// group is gone (Linux gives out a pid only once no process uses it as its group id) and the
/// pid is someone else's: none.
fn members(entry: &Entry) -> Vec<i32> {
    if let Some(stat) = Stat::read(entry.pgid) {
        let same = match (&entry.cgroup, entry.start_time) {
            (Some(name), 0) => in_cgroup(entry.pgid, name),
            (_, start_time) => stat.start_time == start_time,
        };
        if !same {
            return Vec::new();
        }
    }
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            Stat::read(*pid).is_some_and(|s| s.pgrp == entry.pgid && !matches!(s.state, 'Z' | 'X'))
        })
        .collect()
}

/// Whether process `pid` is in the cgroup v2 named `name` (the last part of its path).
fn in_cgroup(pid: i32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines()
            .filter_map(|l| l.strip_prefix("0::"))
            .any(|path| path.rsplit('/').next() == Some(name))
    })
}

/// A process's start time in clock ticks after boot, `None` when it does not exist.
pub fn start_time(pid: i32) -> Option<u64> {
    Stat::read(pid).map(|s| s.start_time)
}

/// A process's process group, `None` when it does not exist.
pub fn process_group(pid: i32) -> Option<i32> {
    Stat::read(pid).map(|s| s.pgrp)
}

/// The fields of `/proc/PID/stat` this module needs.
#[derive(Debug, Clone, Copy)]
struct Stat {
    state: char,
    pgrp: i32,
    start_time: u64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// Fields after the command name, which is in parentheses and may itself hold spaces and
    /// parentheses: state (3), ppid, pgrp (5), ..., starttime (22).
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Stat {
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::{AttemptNo, RunId, StepName};
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    fn attempt() -> AttemptRef {
        AttemptRef {
            run_id: RunId::generate(),
            step: StepName::new("s").unwrap(),
            attempt: AttemptNo(1),
        }
    }

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "4242 (a b) c)) S 1 4240 4240 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!((s.state, s.pgrp, s.start_time), ('S', 4240, 987654));
        let own = Stat::read(std::process::id() as i32).unwrap();
        assert!(own.start_time > 0 && own.pgrp > 0);
    }

    #[test]
    fn a_recorded_group_is_killed_and_its_workdir_removed() {
        let work = tempfile::tempdir().unwrap();
        let workdir = work.path().join("job");
        std::fs::create_dir(&workdir).unwrap();
        // A leader and a child of its own, both in the leader's new group.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id() as i32;
        let recorded = Registration::new(&Entries::new(work.path()), attempt(), &workdir)
            .record(pid, None)
            .unwrap();
        std::mem::forget(recorded); // as if the agent had been killed
        let entry: Entry = {
            let file = std::fs::read_dir(dir(work.path()))
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while members(&entry).len() < 2 {
            assert!(Instant::now() < deadline, "the child did not start");
            std::thread::sleep(Duration::from_millis(10));
        }

        let cleaned = clean_up(work.path(), Duration::from_secs(2), false);
        assert_eq!(cleaned.len(), 1);
        assert_eq!(cleaned[0].killed, 2);
        let _ = leader.wait();
        assert!(members(&entry).is_empty());
        assert!(!workdir.exists());
        assert_eq!(std::fs::read_dir(dir(work.path())).unwrap().count(), 0);
        let text = describe(&cleaned).unwrap();
        assert!(
            text.starts_with("cleaned up 2 processes left by a previous agent: run ")
                && text.ends_with(&format!("step s attempt 1 (pgid {pid})")),
            "{text}"
        );
    }

    #[test]
    fn an_entry_file_is_blanked_when_its_group_is_gone_and_used_again() {
        let work = tempfile::tempdir().unwrap();
        let entries = Entries::new(work.path());
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let read_all = || -> Vec<Vec<u8>> {
            std::fs::read_dir(dir(work.path()))
                .unwrap()
                .map(|f| std::fs::read(f.unwrap().path()).unwrap())
                .collect()
        };
        let long = work.path().join("a-workdir-with-a-long-name-".repeat(4));
        let first = Registration::new(&entries, attempt(), &long)
            .record(pid, Some("drover-step-1"))
            .unwrap();
        let [text] = &read_all()[..] else {
            panic!("one entry file")
        };
        assert_eq!(parse(text).unwrap().unwrap().workdir, long);
        drop(first);
        let [text] = &read_all()[..] else {
            panic!("one entry file")
        };
        assert!(
            parse(text).unwrap().is_none(),
            "blank after its group is gone"
        );

        // The same file again, now holding a shorter entry; a second at once gets its own.
        let short = work.path().join("w");
        let again = Registration::new(&entries, attempt(), &short)
            .record(pid, None)
            .unwrap();
        let beside = Registration::new(&entries, attempt(), &short)
            .record(pid, None)
            .unwrap();
        let texts = read_all();
        assert_eq!(texts.len(), 2);
        for text in &texts {
            let entry = parse(text).unwrap().unwrap();
            assert_eq!((entry.workdir, entry.cgroup), (short.clone(), None));
        }
        std::mem::forget(again); // as if the agent had been killed
        drop(beside);
        let cleaned = clean_up(work.path(), Duration::from_secs(1), true);
        assert_eq!(cleaned.len(), 1, "the blank file is no entry");
        assert_eq!(cleaned[0].killed, 1);
        let _ = child.wait();
        assert_eq!(std::fs::read_dir(dir(work.path())).unwrap().count(), 0);
    }

    #[test]
    fn a_group_spawned_into_a_cgroup_is_known_by_its_cgroup() {
        let reaper = match crate::reaper::init(crate::reaper::CleanupMode::Cgroup) {
            Ok(reaper) => reaper,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let (cgroup, mut procs) = reaper.new_cgroup().unwrap().unwrap();
        let name = cgroup.file_name().unwrap().to_str().unwrap().to_string();
        let sleeper = || {
            std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let (mut inside, mut outside) = (sleeper(), sleeper());
        std::io::Write::write_all(&mut procs, inside.id().to_string().as_bytes()).unwrap();
        let work = tempfile::tempdir().unwrap();
        let entries = Entries::new(work.path());
        for child in [&inside, &outside] {
            let recorded = Registration::new(&entries, attempt(), &work.path().join("w"))
                .record(child.id() as i32, Some(&name))
                .unwrap();
            std::mem::forget(recorded); // as if the agent had been killed
        }
        let cleaned = clean_up(work.path(), Duration::from_secs(2), true);
        let killed: Vec<(i32, u64, usize)> = cleaned
            .iter()
            .map(|c| (c.entry.pgid, c.entry.start_time, c.killed))
            .collect();
        assert!(
            killed.contains(&(inside.id() as i32, 0, 1)),
            "the step in its cgroup: {killed:?}"
        );
        assert!(
            killed.contains(&(outside.id() as i32, 0, 0)),
            "a process with the pid outside the cgroup: {killed:?}"
        );
        assert!(inside.wait().unwrap().signal().is_some());
        assert!(
            outside.try_wait().unwrap().is_none(),
            "the other was killed"
        );
        outside.kill().unwrap();
        let _ = outside.wait();
        reaper.discard(&cgroup);
    }

    #[test]
    fn a_reused_pid_is_left_alone() {
        let work = tempfile::tempdir().unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = other.id() as i32;
        let entry = Entry {
            attempt: attempt(),
            pgid: pid,
            start_time: start_time(pid).unwrap() - 1,
            workdir: work.path().join("job"),
            cgroup: None,
        };
        std::fs::create_dir_all(dir(work.path())).unwrap();
        std::fs::write(
            dir(work.path()).join("x.json"),
            serde_json::to_vec(&entry).unwrap(),
        )
        .unwrap();
        let cleaned = clean_up(work.path(), Duration::from_secs(1), false);
        assert_eq!(cleaned[0].killed, 0);
        assert_eq!(describe(&cleaned), None);
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other process was killed"
        );
        other.kill().unwrap();
        let _ = other.wait();
    }
}
