//! The `drover` command line: parses flags and hands off to a command; no business logic here.

mod cli;
mod client;
mod commands;
mod config;
mod controllers;
mod output;
mod runtime;
mod secrets;
mod signals;
mod sse;

use std::process::ExitCode;

fn main() -> ExitCode {
    // First: no secret may stay readable in /proc while anything else runs.
    let restored = match secrets::protect() {
        Ok(restored) => restored,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let loaded = match config::load(restored.args, &restored.env) {
        Ok(loaded) => loaded,
        Err(config::LoadError::Clap(e)) => e.exit(),
        Err(config::LoadError::File(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(loaded.cli.global.verbose);
    let runtime = match runtime::build(&loaded.cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(loaded)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,drover=info,drover_controller=info,drover_agent=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
