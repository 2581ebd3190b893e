//! A `kill -9`ed agent leaves nothing behind: the agent restarted on its work dir kills the
//! steps it left, a second agent cannot share a work dir, and an agent cut off from the broker
//! beyond the lease stops its own steps.
//!
//! Each case names the step's processes (the shell leading its group and a child of it) by pid
//! and start time, so a pid the kernel gave to another process never counts as the step's.

use super::forward::Forwarder;
use super::step_status;
use crate::harness::{AMQP_URL, Cluster, wait_until};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One process of a step: its pid and the start time `/proc/PID/stat` gave when the test saw
/// it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    start_time: u64,
}

/// State and start time (`/proc/PID/stat` fields 3 and 22) of a process, if it exists.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

impl Process {
    /// The process whose pid the step wrote to `file`, once it did.
    fn from_file(file: &Path) -> Option<Process> {
        let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let (_, start_time) = stat(pid)?;
        Some(Process { pid, start_time })
    }

    /// Still running: the same process (same start time), and not a zombie.
    fn alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|(state, start)| start == self.start_time && !matches!(state, 'Z' | 'X'))
    }
}

/// A one-step pipeline whose step runs until killed: a shell leading the step's process group
/// and a `sleep` child of it, each writing its pid into the cluster's dir.
fn endless_step(c: &Cluster) -> std::path::PathBuf {
    let dir = c.dir.path().display();
    c.pipeline(
        "endless.toml",
        &format!(
            "[pipeline]\nname = \"endless\"\n[[step]]\nname = \"work\"\ncommand = [\"sh\", \"-c\", \"echo $$ > {dir}/leader.pid; sleep 300 & echo $! > {dir}/child.pid; wait\"]\n"
        ),
    )
}

/// Submits the endless step and returns its two processes once it runs.
fn start_endless(c: &Cluster) -> (String, [Process; 2]) {
    let run = c.submit(&endless_step(c));
    c.wait_for(&run, "the step to run", Duration::from_secs(30), |d| {
        step_status(d, "work") == "running"
    });
    let dir = c.dir.path();
    let processes = wait_until("the step's pids", Duration::from_secs(30), || {
        Some([
            Process::from_file(&dir.join("leader.pid"))?,
            Process::from_file(&dir.join("child.pid"))?,
        ])
    });
    (run, processes)
}

#[test]
fn a_restarted_agent_kills_what_its_killed_predecessor_left() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let (run, processes) = start_endless(&c);

    c.kill("a1");
    assert!(
        processes.iter().all(Process::alive),
        "the step died with its agent: {processes:?}"
    );
    let restarted = Instant::now();
    c.start_agent("a1", &["default"]);
    let log = wait_until(
        "the restarted agent to report its clean-up",
        Duration::from_secs(30),
        || {
            let log = c.process_log("a1");
            log.contains("left by a previous agent").then_some(log)
        },
    );
    assert!(
        log.contains(&format!(
            "cleaned up 2 processes left by a previous agent: run {run} step work attempt 1 (pgid {})",
            processes[0].pid
        )),
        "{log}"
    );
    let alive: Vec<&Process> = processes.iter().filter(|p| p.alive()).collect();
    assert!(alive.is_empty(), "still running: {alive:?}\n{log}");
    let jobs = c.dir.path().join("a1").join("jobs");
    let left: Vec<String> = std::fs::read_dir(&jobs)
        .expect("the jobs dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&run))
        .collect();
    assert!(left.is_empty(), "workdirs left behind: {left:?}");
    assert_eq!(
        std::fs::read_dir(jobs.join("running"))
            .expect("the running dir")
            .count(),
        0,
        "entries left behind"
    );
    eprintln!(
        "orphans: 2 processes of the killed agent's step gone {} ms after the restart",
        restarted.elapsed().as_millis()
    );
}

/// A step's `setsid` daemon left its process group, so killing the recorded group cannot reach
/// it; the restarted agent kills it through the attempt's cgroup (root only: cgroups).
#[test]
fn a_restarted_agent_kills_the_setsid_daemon_of_its_killed_predecessors_step() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() != 0) {
        eprintln!("skipped: a cgroup per attempt needs root or a delegated cgroup");
        return;
    }
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent_with("a1", &["default"], &["--step-cleanup", "cgroup"]);
    let dir = c.dir.path().display().to_string();
    let file = c.pipeline(
        "daemon.toml",
        &format!(
            "[pipeline]\nname = \"daemon\"\n[[step]]\nname = \"work\"\ncommand = [\"sh\", \"-c\", \"setsid sh -c 'echo $$ > {dir}/daemon.pid; exec sleep 300' > /dev/null 2>&1 & sleep 300\"]\n"
        ),
    );
    let run = c.submit(&file);
    c.wait_for(&run, "the step to run", Duration::from_secs(30), |d| {
        step_status(d, "work") == "running"
    });
    let daemon = wait_until("the daemon's pid", Duration::from_secs(30), || {
        Process::from_file(&c.dir.path().join("daemon.pid"))
    });
    c.kill("a1");
    assert!(daemon.alive(), "the daemon died with its agent");
    c.start_agent_with("a1", &["default"], &["--step-cleanup", "cgroup"]);
    wait_until(
        "the daemon of the killed agent's step to be killed",
        Duration::from_secs(30),
        || {
            (!daemon.alive())
                .then_some(())
                .ok_or_else(|| c.process_log("a1"))
        },
    );
}

#[test]
fn a_second_agent_on_a_locked_work_dir_is_refused() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    wait_until("a1 to serve", Duration::from_secs(30), || {
        c.process_log("a1").contains("serving").then_some(())
    });
    let work = c.dir.path().join("a1");
    let mut second = c
        .command()
        .args(["agent", "--id", "a2", "--queue", "default"])
        .args(["--python-env", "system", "--work-dir"])
        .arg(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drover agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second agent on {} kept running", work.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{status}\n{stderr}");
    let expected = format!(
        "work dir {} is in use by another agent (pid {})",
        work.join("jobs").display(),
        c.pid("a1")
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn an_agent_cut_off_beyond_the_lease_stops_its_steps() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    let port = AMQP_URL
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .expect("the broker's port");
    let link = Forwarder::start(port);
    c.start_agent_with("a1", &["default"], &["--amqp", &link.url()]);
    let (run, processes) = start_endless(&c);

    let cut = Instant::now();
    link.cut();
    let stopped = wait_until(
        "the cut-off agent to stop its step",
        Duration::from_secs(30),
        || processes.iter().all(|p| !p.alive()).then(|| cut.elapsed()),
    );
    let log = c.process_log("a1");
    assert!(
        log.contains(&format!(
            "fencing {run}/work attempt 1: cut off from the broker"
        )),
        "{log}"
    );
    eprintln!(
        "fencing (lease 3s, heartbeat 2s): the cut-off agent's step was gone {} ms after the cut",
        stopped.as_millis()
    );
}
