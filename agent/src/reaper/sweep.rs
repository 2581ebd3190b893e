//! The subreaper sweep, where no cgroup per attempt is possible: the agent process is the
//! child subreaper (`PR_SET_CHILD_SUBREAPER`), so what a step's processes leave behind is
//! reparented to it instead of to init. When an attempt ends, after its process group was
//! killed, every descendant of the agent that left the agent's session (`setsid`) and does not
//! descend from a live attempt's leader is killed and reaped.
//!
//! Steps start in the agent's session and only `setsid` leaves it, so processes the agent
//! starts itself (environment builds, probes) are never touched. A process that left both its
//! attempt's group and its parent while its attempt still runs cannot be told apart from one
//! of an ended attempt, and is killed when any attempt on the machine's agent process ends.

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Rounds of kill-and-look: a killed process's children are reparented to the agent and
/// seen in the next round.
const ROUNDS: usize = 20;

/// Leaders of the attempts running in this process, whose descendants a sweep spares.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The live leaders, locked: held from before a step is spawned until its leader is added, so
/// no sweep sees the new step's processes unprotected.
pub fn lock_live() -> MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn live_remove(pgid: i32) {
    let mut live = lock_live();
    if let Some(i) = live.iter().position(|p| *p == pgid) {
        live.swap_remove(i);
    }
}

/// What the sweep reads of a process.
#[derive(Debug, Clone, Copy)]
struct Proc {
    ppid: i32,
    session: i32,
    zombie: bool,
}

/// Kills and reaps the escaped descendants of this process (see the module's description).
pub fn sweep() {
    let me = std::process::id() as i32;
    let Some(my_session) = read(me).map(|p| p.session) else {
        return;
    };
    for _ in 0..ROUNDS {
        let table = table();
        let live: HashSet<i32> = lock_live().iter().copied().collect();
        let found = escaped(&table, me, my_session, &live);
        if found.is_empty() {
            return;
        }
        for (pid, proc) in &found {
            if !proc.zombie {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        for (pid, proc) in &found {
            if proc.ppid == me {
                // Killed just now, or already dead: either way it becomes our zombie.
                let _ = waitpid(Pid::from_raw(*pid), None::<WaitPidFlag>);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!("processes that left a step's session keep appearing; giving up on them");
}

/// The descendants of `me` outside `my_session` that do not descend from a `live` leader.
fn escaped(
    table: &HashMap<i32, Proc>,
    me: i32,
    my_session: i32,
    live: &HashSet<i32>,
) -> Vec<(i32, Proc)> {
    let mut found = Vec::new();
    for (pid, proc) in table {
        if proc.session == my_session || *pid == me {
            continue;
        }
        let mut at = proc.ppid;
        let mut spared = live.contains(pid);
        let mut hops = 0;
        let mut mine = false;
        while !spared && hops < 4096 {
            if at == me {
                mine = true;
                break;
            }
            if live.contains(&at) {
                spared = true;
                break;
            }
            match table.get(&at) {
                Some(parent) if at > 1 => at = parent.ppid,
                _ => break,
            }
            hops += 1;
        }
        if mine && !spared {
            found.push((*pid, *proc));
        }
    }
    found
}

/// This process and its descendants, found through the `children` lists, which spares reading
/// every process on the machine after every attempt; the whole table where there are no such
/// lists. A process missed while it forks or ends is found by the next round or sweep.
fn table() -> HashMap<i32, Proc> {
    let me = std::process::id() as i32;
    let mut table = HashMap::new();
    let mut next = vec![me];
    while let Some(pid) = next.pop() {
        let Some(children) = super::children(pid) else {
            if pid == me {
                return whole_table();
            }
            continue;
        };
        if let Some(proc) = read(pid) {
            table.insert(pid, proc);
        }
        next.extend(children.into_iter().filter(|c| !table.contains_key(c)));
    }
    table
}

/// Every process on the machine.
fn whole_table() -> HashMap<i32, Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read(pid)?)))
        .collect()
}

fn read(pid: i32) -> Option<Proc> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/PID/stat` after the command name (which may hold spaces and parentheses): state (3),
/// ppid (4), pgrp (5), session (6).
fn parse(text: &str) -> Option<Proc> {
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp: i32 = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Proc {
        ppid,
        session,
        zombie: state == "Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ppid: i32, session: i32) -> Proc {
        Proc {
            ppid,
            session,
            zombie: false,
        }
    }

    #[test]
    fn only_escaped_descendants_outside_live_attempts_are_found() {
        let me = 100;
        let table = HashMap::from([
            (1, p(0, 1)),
            (100, p(1, 50)),
            // An environment build the agent started: same session.
            (101, p(100, 50)),
            // A live attempt's leader and its setsid child.
            (200, p(100, 50)),
            (201, p(200, 201)),
            // An orphan of an ended attempt, reparented to the agent, and its child.
            (300, p(100, 300)),
            (301, p(300, 300)),
            // Someone else's daemon.
            (400, p(1, 400)),
        ]);
        let live = HashSet::from([200]);
        let mut found: Vec<i32> = escaped(&table, me, 50, &live)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        found.sort();
        assert_eq!(found, [300, 301]);
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let proc = parse("42 (a) b (c) S 7 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!((proc.ppid, proc.session, proc.zombie), (7, 42, false));
        assert!(parse("42 (x) Z 1 2 3 4").unwrap().zombie);
        assert!(parse("garbage").is_none());
    }
}
