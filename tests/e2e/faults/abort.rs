//! Abort a run whose step spawned children: no process of that step survives.

use super::{ended, step_status};
use crate::harness::{Cluster, text, wait_until};
use std::time::{Duration, Instant};

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn abort_kills_the_whole_process_group() {
    let c = Cluster::up(1, &["default"]);
    let pids = c.dir.path().join("pids");
    let script = format!(
        "sleep 1000 & echo $! >> {p}; sleep 1000 & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let file = c.pipeline(
        "spawner.toml",
        &format!(
            "[pipeline]\nname = \"spawner\"\n[[step]]\nname = \"spawn\"\ncommand = [\"sh\", \"-c\", {script:?}]\n"
        ),
    );
    let run = c.submit(&file);
    let pids: Vec<i32> = wait_until("the step's three pids", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&pids).ok()?;
        let list: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (list.len() == 3).then_some(list)
    });
    assert!(pids.iter().all(|p| alive(*p)));

    let out = c.drover(&["abort", &run]);
    assert!(out.status.success(), "{}", text(&out));
    let aborted = Instant::now();
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(30), ended);
    assert_eq!(doc["status"], "aborted", "{doc}");
    assert_eq!(step_status(&doc, "spawn"), "aborted", "{doc}");
    wait_until(
        "every process of the step to be gone",
        Duration::from_secs(10),
        || (!pids.iter().any(|p| alive(*p))).then_some(()),
    );
    eprintln!(
        "recovery (abort): {} processes gone {} ms after `drover abort`",
        pids.len(),
        aborted.elapsed().as_millis()
    );
}
