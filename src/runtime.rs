//! The async runtime each command runs on: how many worker threads it gets, and why.

use crate::cli::Command;
use tokio::runtime::{Builder, Runtime};

/// Worker threads of `drover controller`'s runtime, unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// glibc gives every thread that allocates a heap (arena) of its own, and memory freed in one
/// stays with that heap, so each worker keeps the peak of what it allocated. The controller's
/// decisions are made by one task (the scheduler's owner), its other tasks wait on the broker,
/// the disk and HTTP clients. A second worker showed no fan-out speed-up beyond the noise of a
/// shared 2-core machine and cost a second heap of about the same size
/// (`bench/results/2026-12-03-footprint.md`).
pub const CONTROLLER_WORKERS: usize = 1;

/// The variable tokio reads for its default number of worker threads.
const WORKERS_VAR: &str = "TOKIO_WORKER_THREADS";

/// A multi-threaded runtime for `command`: one worker per core (tokio's default) for everything
/// but `drover controller`, which gets [`CONTROLLER_WORKERS`]. `TOKIO_WORKER_THREADS`, when
/// set, still decides for every command.
pub fn build(command: &Command) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers(command, std::env::var_os(WORKERS_VAR).is_some()) {
        builder.worker_threads(n);
    }
    builder.build()
}

/// The worker count to set, or `None` for tokio's default.
fn workers(command: &Command, from_env: bool) -> Option<usize> {
    match command {
        Command::Controller(_) if !from_env => Some(CONTROLLER_WORKERS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> Command {
        crate::cli::Cli::try_parse_from(args).unwrap().command
    }

    #[test]
    fn only_the_controller_gets_a_fixed_worker_count_and_the_variable_wins() {
        let controller = command(&["drover", "controller"]);
        assert_eq!(workers(&controller, false), Some(CONTROLLER_WORKERS));
        assert_eq!(workers(&controller, true), None);
        assert_eq!(workers(&command(&["drover", "agent"]), false), None);
        assert_eq!(workers(&command(&["drover", "up"]), false), None);
    }
}
