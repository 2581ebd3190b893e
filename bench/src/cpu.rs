//! CPU time of the processes a benchmark watches, from `/proc/PID/stat`: a process's own, the
//! children it has reaped, and which process is the local RabbitMQ node.

use anyhow::{Context, Result};

/// A process's CPU time so far (user + system), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Times {
    /// Every thread of the process, ended ones included.
    pub own_ms: f64,
    /// The children it has waited for, and theirs (`cutime` + `cstime`).
    pub children_ms: f64,
}

/// [`Times`] of process `pid`.
pub fn times(pid: u32) -> Result<Times> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // `pid (comm) state ppid ...`: utime, stime, cutime and cstime are fields 14 to 17, 12 to 15
    // after comm (comm may hold spaces and parentheses).
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .with_context(|| format!("/proc/{pid}/stat reads {stat:?}"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .with_context(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|n| *n > 0)
        .context("the system reports no clock tick rate (sysconf CLK_TCK)")?;
    let ms = 1000.0 / per_second as f64;
    Ok(Times {
        own_ms: (ticks(11)? + ticks(12)?) * ms,
        children_ms: (ticks(13)? + ticks(14)?) * ms,
    })
}

/// The pid of the one Erlang VM (`beam.smp`) on this machine, taken to be the broker the bench
/// uses; `None` when there is none or more than one (private test nodes), so that no other
/// node's CPU is counted as the broker's.
pub fn broker_pid() -> Option<u32> {
    let mut found = None;
    for (pid, dir) in drover_test_support::process::all_processes() {
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == "beam.smp" {
            if found.is_some() {
                return None;
            }
            found = Some(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_cpu_ms() -> f64 {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .expect("thread CPU clock");
        t.tv_sec() as f64 * 1000.0 + t.tv_nsec() as f64 / 1e6
    }

    #[test]
    fn own_time_counts_the_time_a_process_spent_on_a_core() {
        let pid = std::process::id();
        let before = times(pid).expect("own /proc/PID/stat").own_ms;
        let start = thread_cpu_ms();
        let mut x = 0u64;
        while thread_cpu_ms() - start < 200.0 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = times(pid).expect("own /proc/PID/stat").own_ms - before;
        // Clock ticks are 10 ms on Linux: allow two of them.
        assert!(spent >= 180.0, "200 ms of CPU spent, {spent} ms read");
    }

    #[test]
    fn children_time_counts_a_reaped_child() {
        let pid = std::process::id();
        let before = times(pid).expect("own /proc/PID/stat").children_ms;
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("run sh");
        assert!(status.success());
        let after = times(pid).expect("own /proc/PID/stat");
        assert!(
            after.children_ms > before,
            "{before} ms before, {after:?} after"
        );
    }

    #[test]
    fn times_of_a_missing_process_is_an_error() {
        let err = times(u32::MAX).expect_err("no such process");
        assert!(err.to_string().contains("is gone"), "{err}");
    }
}
