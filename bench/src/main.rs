//! `drover-bench`: runs the benchmark suite (see `bench/run`), or one scale worker.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "drover-bench",
    about = "drover's benchmarks against limits measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the benchmarks and writes the table.
    Run(drover_bench::suite::Options),
    /// Internal: pushes one generated DAG through the scheduler, printing progress as JSON.
    ScaleWorker {
        #[arg(long)]
        steps: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(options) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(drover_bench::suite::run(options))),
        Command::ScaleWorker { steps } => drover_bench::scale::worker(steps),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
