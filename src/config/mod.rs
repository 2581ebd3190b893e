//! Settings from flags, environment variables, a `drover.toml` file and defaults, in that order
//! of precedence, and where each effective value came from (`drover config show`).
//!
//! clap handles flags, environment and defaults; the file sits between environment and
//! defaults: a setting the file holds, and that neither a flag nor the environment gives, is
//! added to the command line before a second parse, so its value goes through the same parser.

mod file;
mod sections;
mod show;

pub use file::ConfigFile;
pub use show::show;

use crate::cli::Cli;
use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use file::Chosen;
use sections::Section;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The parsed command line with the file applied, and the file (for `config show`).
pub struct Loaded {
    pub cli: Cli,
    pub file: Option<ConfigFile>,
    /// The command line as given (`config show` parses it again).
    pub args: Vec<OsString>,
    /// Secret variables taken out of the environment at start, by name.
    pub handed: BTreeMap<String, String>,
}

/// A problem loading the configuration: clap's (help and version included) or the file's.
#[derive(Debug)]
pub enum LoadError {
    Clap(clap::Error),
    File(anyhow::Error),
}

/// Parses `args` (the program name first) and applies the configuration file. `handed` holds
/// the secret variables taken out of the environment at start (see `secrets`): they count as
/// set in the environment.
pub fn load(args: Vec<OsString>, handed: &BTreeMap<String, String>) -> Result<Loaded, LoadError> {
    let command = Cli::command();
    let given_args = args.clone();
    let mut args = args;
    if !handed.is_empty() {
        let first = command
            .clone()
            .try_get_matches_from(&args)
            .map_err(LoadError::Clap)?;
        args.extend(handed_args(&command, &first, handed));
    }
    let first = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(LoadError::Clap)?;
    let leaf = leaf(&first);
    let named = leaf.get_one::<PathBuf>("config").map(|p| {
        let chosen = match leaf.value_source("config") {
            Some(ValueSource::EnvVariable) => Chosen::Env,
            _ => Chosen::Flag,
        };
        (p.clone(), chosen)
    });
    let file = file::locate(named).map_err(LoadError::File)?;
    if let Some(file) = &file {
        let sub = chosen_subcommand(&command, &first);
        args.extend(file_args(file, leaf, sub).map_err(LoadError::File)?);
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|e| match &file {
            // The command line alone parsed: the file's values are at fault.
            Some(f) => LoadError::File(in_file(f, &e)),
            None => LoadError::Clap(e),
        })?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(LoadError::Clap)?;
    cli.global.url_given = !matches!(
        leaf.value_source("url"),
        None | Some(ValueSource::DefaultValue)
    ) || file
        .as_ref()
        .is_some_and(|f| f.get(Section::Global, "url").is_some());
    if let Some(path) = cli.global.token_file.clone() {
        if cli.global.token.is_some() {
            return Err(LoadError::File(anyhow::anyhow!(
                "both a token (--token, DROVER_TOKEN or `token` in the file) and --token-file \
                 (DROVER_TOKEN_FILE or `token-file`) are set; keep one, preferably the file"
            )));
        }
        cli.global.token = Some(read_token_file(&path).map_err(LoadError::File)?);
    }
    Ok(Loaded {
        cli,
        file,
        args: given_args,
        handed: handed.clone(),
    })
}

/// The token in `path`: its text without surrounding whitespace.
fn read_token_file(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the token file {} (--token-file): {e}",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!(
            "the token file {} must hold the token alone, on one line",
            path.display()
        );
    }
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        eprintln!(
            "warning: the token file {} can be read by others: chmod 600 it",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// `--name=value` for each handed-over variable that stands for an argument of the chosen
/// command and was not given as a flag, as if clap had read it from the environment.
fn handed_args(
    command: &clap::Command,
    first: &ArgMatches,
    handed: &BTreeMap<String, String>,
) -> Vec<OsString> {
    let leaf = leaf(first);
    let sub = first
        .subcommand_name()
        .and_then(|name| command.find_subcommand(name));
    let own = sub.into_iter().flat_map(|s| s.get_arguments());
    command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .chain(own)
        .filter(|a| !given(leaf, a.get_id().as_str()))
        .filter_map(|a| {
            let value = handed.get(a.get_env()?.to_str()?)?;
            Some(OsString::from(format!("--{}={value}", a.get_long()?)))
        })
        .collect()
}

/// A clap error caused by a value from the file, said so.
fn in_file(file: &ConfigFile, e: &clap::Error) -> anyhow::Error {
    let message = e.kind().as_str().map(str::to_string).unwrap_or_default();
    let detail = e.to_string();
    let first_line = detail.lines().next().unwrap_or(&message);
    anyhow::anyhow!(
        "{}: {}",
        file.path.display(),
        first_line.trim_start_matches("error: ")
    )
}

/// Checks that the file's settings for `section`'s command parse, as that command would.
pub(crate) fn check_section(file: &ConfigFile, section: Section) -> Result<()> {
    let base = ["drover", section.name()].map(OsString::from).to_vec();
    let command = Cli::command();
    let first = command
        .clone()
        .try_get_matches_from(&base)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
    let mut args = base;
    args.extend(file_args(
        file,
        leaf(&first),
        chosen_subcommand(&command, &first),
    )?);
    Cli::command()
        .try_get_matches_from(&args)
        .map(|_| ())
        .map_err(|e| in_file(file, &e))
}

/// The section and clap definition of the subcommand `matches` chose, when that subcommand
/// has a section of the file.
fn chosen_subcommand<'c>(
    command: &'c clap::Command,
    matches: &ArgMatches,
) -> Option<(Section, &'c clap::Command)> {
    let name = matches.subcommand_name()?;
    Some((Section::for_command(name)?, command.find_subcommand(name)?))
}

/// The innermost subcommand's matches (global arguments propagate down to it).
pub(crate) fn leaf(matches: &ArgMatches) -> &ArgMatches {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m
}

/// Whether a flag or an environment variable gave the argument: then the file does not count.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The command-line arguments standing for the file's settings that apply to this command.
fn file_args(
    file: &ConfigFile,
    leaf: &ArgMatches,
    sub: Option<(Section, &clap::Command)>,
) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    let mut wanted: Vec<(Section, clap::Arg)> = sections::args(Section::Global)
        .into_iter()
        .map(|a| (Section::Global, a))
        .collect();
    if let Some((sub, sub_cmd)) = sub {
        for arg in sub_cmd.get_arguments() {
            if let Some(section) = sections::section_of(sub, arg.get_id().as_str()) {
                wanted.push((section, arg.clone()));
            }
        }
    }
    for (section, arg) in wanted {
        let Some(long) = arg.get_long() else { continue };
        let Some(value) = file.get(section, long) else {
            continue;
        };
        if given(leaf, arg.get_id().as_str()) {
            continue;
        }
        out.extend(as_args(&file.path, section, &arg, value)?);
    }
    Ok(out)
}

/// `--name=value` arguments for one setting, checking its TOML type against the flag's kind.
fn as_args(
    path: &std::path::Path,
    section: Section,
    arg: &clap::Arg,
    value: &toml::Value,
) -> Result<Vec<OsString>> {
    let long = arg.get_long().unwrap_or_default();
    let flag = format!("--{long}");
    let place = match section {
        Section::Global => format!("`{long}`"),
        s => format!("`{long}` in [{}]", s.name()),
    };
    let scalar = |v: &toml::Value| -> Result<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            other => bail!(
                "{}: {place} must be a string or a whole number, not {}",
                path.display(),
                other.type_str()
            ),
        }
    };
    Ok(match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
            if *b {
                vec![flag.into()]
            } else {
                vec![]
            }
        }
        (ArgAction::SetTrue, other) => bail!(
            "{}: {place} must be true or false, not {}",
            path.display(),
            other.type_str()
        ),
        (ArgAction::Count, toml::Value::Integer(n)) if (0..=8).contains(n) => {
            (0..*n).map(|_| OsString::from(&flag)).collect()
        }
        (ArgAction::Count, _) => {
            bail!(
                "{}: {place} must be a whole number from 0 to 8",
                path.display()
            )
        }
        (ArgAction::Append, toml::Value::Array(items)) => items
            .iter()
            .map(|v| scalar(v).map(|s| OsString::from(format!("{flag}={s}"))))
            .collect::<Result<_>>()?,
        (_, v) => vec![OsString::from(format!("{flag}={}", scalar(v)?))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_args(args: &[&str], handed: &[(&str, &str)]) -> Result<Loaded, LoadError> {
        let handed = handed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(args.iter().map(OsString::from).collect(), &handed)
    }

    fn error(result: Result<Loaded, LoadError>) -> String {
        match result {
            Ok(_) => panic!("loaded"),
            Err(LoadError::Clap(e)) => e.to_string(),
            Err(LoadError::File(e)) => format!("{e:#}"),
        }
    }

    #[test]
    fn the_token_comes_from_its_file_and_not_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "file-token-3c1\n").unwrap();
        let path = path.to_str().unwrap();
        let loaded = load_args(&["drover", "--token-file", path, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.token.as_deref(), Some("file-token-3c1"));
        let both = error(load_args(
            &["drover", "runs", "--token-file", path],
            &[("DROVER_TOKEN", "env-token")],
        ));
        assert!(both.contains("keep one"), "{both}");
        std::fs::write(dir.path().join("two"), "a b\n").unwrap();
        let two = dir.path().join("two");
        let bad = error(load_args(
            &["drover", "runs", "--token-file", two.to_str().unwrap()],
            &[],
        ));
        assert!(bad.contains("must hold the token alone"), "{bad}");
    }

    #[test]
    fn several_brokers_come_from_repeated_flags_a_list_in_the_file_or_one_variable() {
        let (a, b) = ("amqp://u:p,1@a:5672/%2f", "amqp://u:p@b:5672/%2f");
        let loaded = load_args(&["drover", "--amqp", a, "--amqp", b, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.amqp(), format!("{a} {b}"));
        let handed = [(
            "DROVER_AMQP_URL",
            "amqp://u:p,1@a:5672/%2f\n\tamqp://u:p@b:5672/%2f",
        )];
        let loaded = load_args(&["drover", "runs"], &handed).unwrap();
        assert_eq!(loaded.cli.global.amqp(), format!("{a} {b}"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drover.toml");
        std::fs::write(&file, format!("amqp = [{a:?}, {b:?}]\n")).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let path = file.to_str().unwrap();
        let loaded = load_args(&["drover", "--config", path, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.amqp(), format!("{a} {b}"));
    }

    #[test]
    fn several_controllers_come_from_repeated_flags_a_list_in_the_file_or_one_variable() {
        let (a, b) = ("http://a:8470", "https://b.example/drover");
        let loaded = load_args(
            &["drover", "--url", a, "--url", &format!("{b}/"), "runs"],
            &[],
        );
        let loaded = loaded.unwrap();
        assert_eq!(loaded.cli.global.urls(), [a, b]);
        assert!(loaded.cli.global.url_given);
        let handed = [("DROVER_URL", "http://a:8470/ \n\thttps://b.example/drover")];
        let loaded = load_args(&["drover", "runs"], &handed).unwrap();
        assert_eq!(loaded.cli.global.urls(), [a, b]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drover.toml");
        std::fs::write(&file, format!("url = [{a:?}, {b:?}]\n")).unwrap();
        let path = file.to_str().unwrap();
        let loaded = load_args(&["drover", "--config", path, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.urls(), [a, b]);
        assert!(loaded.cli.global.url_given);
        // One string stays valid, and a flag still overrides the file.
        std::fs::write(&file, format!("url = {a:?}\n")).unwrap();
        let loaded = load_args(&["drover", "--config", path, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.urls(), [a]);
        let loaded = load_args(&["drover", "--config", path, "--url", b, "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.urls(), [b]);
        let loaded = load_args(&["drover", "runs"], &[]).unwrap();
        assert_eq!(loaded.cli.global.urls(), [crate::cli::DEFAULT_URL]);
        assert!(!loaded.cli.global.url_given);
    }

    #[test]
    fn handed_variables_count_as_environment_below_flags() {
        let handed = [
            ("DROVER_TOKEN", "env-token"),
            ("DROVER_READ_TOKEN", "r-token"),
        ];
        let loaded = load_args(&["drover", "runs"], &handed).unwrap();
        assert_eq!(loaded.cli.global.token.as_deref(), Some("env-token"));
        let loaded = load_args(&["drover", "--token", "flag-token", "runs"], &handed).unwrap();
        assert_eq!(loaded.cli.global.token.as_deref(), Some("flag-token"));
        // A variable for a flag the command does not have is left out, as clap would.
        let loaded = load_args(&["drover", "controller"], &handed).unwrap();
        match loaded.cli.command {
            crate::cli::Command::Controller(c) => {
                assert_eq!(c.read_token.as_deref(), Some("r-token"));
            }
            _ => panic!("not controller"),
        }
    }
}
