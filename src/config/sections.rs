//! Which settings exist and where they live: global flags at the top of the file,
//! `drover controller`'s in `[controller]`, `drover agent`'s in `[agent]`, `drover up`'s own in
//! `[up]` (`up` also reads `[controller]` and `[agent]`). A setting's key is its long flag name.

use crate::cli::{AgentArgs, ControllerArgs, Global, UpArgs};
use clap::{Arg, Args, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Global,
    Controller,
    Agent,
    Up,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Global => "global",
            Section::Controller => "controller",
            Section::Agent => "agent",
            Section::Up => "up",
        }
    }

    /// The subcommand whose settings this section holds.
    pub fn for_command(name: &str) -> Option<Section> {
        match name {
            "controller" => Some(Section::Controller),
            "agent" => Some(Section::Agent),
            "up" => Some(Section::Up),
            _ => None,
        }
    }
}

/// The settings of one section, as clap arguments (help and `--config` left out).
pub fn args(section: Section) -> Vec<Arg> {
    let cmd = match section {
        Section::Global => Global::augment_args(Command::new("x")),
        Section::Controller => ControllerArgs::augment_args(Command::new("x")),
        Section::Agent => AgentArgs::augment_args(Command::new("x")),
        Section::Up => Command::new("x").args(up_only()),
    };
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some() && a.get_id() != "config")
        .cloned()
        .collect()
}

/// The flags of `drover up` that are neither controller nor agent flags (`--agents`).
fn up_only() -> Vec<Arg> {
    let shared: Vec<Arg> = [Section::Controller, Section::Agent]
        .into_iter()
        .flat_map(args)
        .collect();
    UpArgs::augment_args(Command::new("x"))
        .get_arguments()
        .filter(|a| !shared.iter().any(|s| s.get_id() == a.get_id()))
        .cloned()
        .collect()
}

/// The keys a section of the file accepts.
pub fn known_keys(section: Section) -> Vec<String> {
    args(section)
        .iter()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// Where a non-global argument of `command` is read from in the file.
pub fn section_of(command: Section, id: &str) -> Option<Section> {
    let has = |s: Section| args(s).iter().any(|a| a.get_id() == id);
    match command {
        Section::Up => [Section::Controller, Section::Agent, Section::Up]
            .into_iter()
            .find(|s| has(*s)),
        s if has(s) => Some(s),
        _ => None,
    }
}

/// The sections `drover config show` reports, with the command whose view each takes.
pub const SHOWN: [Section; 4] = [
    Section::Global,
    Section::Controller,
    Section::Agent,
    Section::Up,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    /// Every flag of the services and every global flag has a variable and a file key, so a
    /// flag added later without `env = ...` fails here.
    #[test]
    fn every_service_flag_has_an_environment_variable_and_a_file_key() {
        let cli = Cli::command();
        let mut checked = 0;
        for name in ["controller", "agent", "up"] {
            let command = Section::for_command(name).unwrap();
            let sub = cli.find_subcommand(name).unwrap();
            for arg in sub.get_arguments().filter(|a| a.get_long().is_some()) {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_env().is_some(), "--{} of {name} has no env", id);
                let section = if arg.is_global_set() {
                    Some(Section::Global)
                } else {
                    section_of(command, id)
                };
                let section = section.unwrap_or_else(|| panic!("--{id} of {name}: no section"));
                let long = arg.get_long().unwrap_or_default().to_string();
                assert!(
                    id == "config" || known_keys(section).contains(&long),
                    "--{long} of {name} is not a key of [{}]",
                    section.name()
                );
                checked += 1;
            }
        }
        for arg in cli.get_arguments().filter(|a| a.get_long().is_some()) {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(arg.get_env().is_some(), "global --{id} has no env");
            let long = arg.get_long().unwrap_or_default().to_string();
            assert!(
                id == "config" || known_keys(Section::Global).contains(&long),
                "--{long}"
            );
            checked += 1;
        }
        // Every flag of controller, agent and up, and the global ones (a flag of the controller,
        // such as --read-token, counts twice: `up` has it too).
        assert_eq!(checked, 87);
    }

    #[test]
    fn the_up_section_holds_only_the_flags_of_up_alone() {
        assert_eq!(known_keys(Section::Up), ["agents"]);
    }
}
