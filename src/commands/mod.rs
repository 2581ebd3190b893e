//! One module per group of commands; `dispatch` routes the parsed command line.

mod automation;
mod inspect;
mod keygen;
mod run;
mod scalars;
mod serve;
mod tasks;

use crate::cli::{Command, ConfigCommand, Global};
use crate::config::Loaded;
use anyhow::{Context, Result};
use drover_protocol::Names;
use std::process::ExitCode;

pub async fn dispatch(loaded: Loaded) -> Result<ExitCode> {
    let Loaded {
        cli,
        file,
        args: loaded_args,
        handed,
    } = loaded;
    let g = cli.global;
    match cli.command {
        Command::Up(args) => serve::up(&g, *args).await,
        Command::Controller(args) => serve::controller(&g, args).await,
        Command::Agent(args) => serve::agent(&g, args).await,
        Command::Run(args) => run::run(&g, args).await,
        Command::Rerun(args) => run::rerun(&g, args).await,
        Command::Abort(args) => run::abort(&g, args).await,
        Command::Wait(args) => run::wait(&g, args).await,
        Command::Runs(args) => inspect::runs(&g, args).await,
        Command::Status(args) => inspect::status(&g, args).await,
        Command::Logs(args) => inspect::logs(&g, args).await,
        Command::Artifacts { command } => inspect::artifacts(&g, command).await,
        Command::Schedule { command } => automation::schedule(&g, command).await,
        Command::Trigger { command } => automation::trigger(&g, command).await,
        Command::Scalars(args) => scalars::scalars(&g, args).await,
        Command::Tasks(args) => tasks::tasks(&g, args).await,
        Command::Agents(args) => inspect::agents(&g, args).await,
        Command::Queues(args) => inspect::queues(&g, args).await,
        Command::Keygen(args) => keygen::keygen(&args),
        Command::Config {
            command: ConfigCommand::Show(args),
        } => crate::config::show(file.as_ref(), args.json, &loaded_args, &handed),
    }
}

/// The namespace's AMQP names, or a clear error.
fn names(g: &Global) -> Result<Names> {
    Names::new(&g.namespace).with_context(|| format!("bad --namespace {:?}", g.namespace))
}
