//! `drover config show`: every setting's effective value and where it came from, secrets masked.

use super::file::Chosen;
use super::sections::{self, SHOWN, Section};
use super::{ConfigFile, leaf};

use crate::cli::Cli;
use anyhow::Result;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

/// Settings whose values are never printed.
const SECRET_KEYS: [&str; 2] = ["token", "read-token"];

/// One setting as shown.
struct Shown {
    key: String,
    value: Value,
    source: &'static str,
    env: Option<String>,
}

/// Prints the effective configuration of every section (as text, or one JSON object).
/// `args` is the command line as given and `handed` the secret variables taken out of the
/// environment at start: this process's own arguments and environment no longer hold them.
pub fn show(
    file: Option<&ConfigFile>,
    json_out: bool,
    args: &[OsString],
    handed: &BTreeMap<String, String>,
) -> Result<ExitCode> {
    let actual = Cli::command().try_get_matches_from(args)?;
    let mut doc = Map::new();
    doc.insert(
        "file".into(),
        match file {
            Some(f) => json!({
                "path": f.path.display().to_string(),
                "chosen": match f.chosen {
                    Chosen::Flag => "flag",
                    Chosen::Env => "env",
                    Chosen::WorkingDir => "working_dir",
                },
            }),
            None => Value::Null,
        },
    );
    if let Some(file) = file {
        for section in [Section::Controller, Section::Agent, Section::Up] {
            super::check_section(file, section)?;
        }
    }
    if !json_out {
        match file {
            Some(f) => println!("# config file: {}", f.path.display()),
            None => println!(
                "# config file: none (--config, DROVER_CONFIG or ./{})",
                super::file::DEFAULT_FILE
            ),
        }
    }
    let (mut data_dir, mut python_env) = (None, None);
    for section in SHOWN {
        let view = match section {
            Section::Global => actual.clone(),
            s => Cli::command().try_get_matches_from(["drover", s.name()])?,
        };
        let matches = match section {
            Section::Global => leaf(&view),
            _ => view.subcommand().map(|(_, m)| m).unwrap_or(&view),
        };
        let mut shown: Vec<Shown> = sections::args(section)
            .iter()
            .map(|arg| setting(arg, matches, file, section, handed))
            .collect();
        match section {
            Section::Controller => data_dir = value_of(&shown, "data-dir"),
            Section::Agent => {
                python_env = value_of(&shown, "python-env");
                let row = installer(python_env.as_deref(), value_of(&shown, "work-dir"));
                shown.push(row);
            }
            // `up` builds environments under its data dir, with the agent settings.
            Section::Up => shown.push(installer(python_env.as_deref(), data_dir.clone())),
            Section::Global => {}
        }
        doc.insert(section.name().into(), to_json(&shown));
        if !json_out {
            print_section(section, &shown);
        }
    }
    if json_out {
        println!("{}", Value::Object(doc));
    }
    Ok(ExitCode::SUCCESS)
}

fn setting(
    arg: &Arg,
    m: &ArgMatches,
    file: Option<&ConfigFile>,
    section: Section,
    handed: &BTreeMap<String, String>,
) -> Shown {
    let id = arg.get_id().as_str();
    let key = arg.get_long().unwrap_or(id).to_string();
    let from_file = file.and_then(|f| f.get(section, &key));
    let from_env = arg
        .get_env()
        .and_then(|name| handed.get(name.to_str()?))
        .map(|v| Value::from(v.clone()));
    let (value, source) = match (m.value_source(id), from_file) {
        (Some(ValueSource::CommandLine), _) => (matched(arg, m), "flag"),
        (Some(ValueSource::EnvVariable), _) => (matched(arg, m), "env"),
        (_, _) if from_env.is_some() => (from_env.unwrap_or_default(), "env"),
        (_, Some(v)) => (toml_to_json(v), "file"),
        (Some(ValueSource::DefaultValue), None) => (matched(arg, m), "default"),
        _ => (Value::Null, "unset"),
    };
    Shown {
        value: resolved(&key, mask(&key, value)),
        key,
        source,
        env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
    }
}

fn value_of(shown: &[Shown], key: &str) -> Option<String> {
    let s = shown.iter().find(|s| s.key == key)?;
    s.value.as_str().map(str::to_string)
}

/// What an agent with `--python-env` and its directory would build its Python environments with, under
/// `<dir>/pyenv` (found without installing anything).
fn installer(python_env: Option<&str>, dir: Option<String>) -> Shown {
    let value = match (python_env, dir) {
        (Some("system"), _) => "none: --python-env system installs no requirements".to_string(),
        (_, Some(dir)) => drover_agent::pyenv::foresee(
            &std::path::Path::new(&dir).join("pyenv"),
            std::env::var_os("PATH").as_deref(),
        ),
        (_, None) => "unknown: no directory to build environments in".to_string(),
    };
    Shown {
        key: "python-installer".into(),
        value: Value::from(value),
        source: "detected",
        env: None,
    }
}

fn matched(arg: &Arg, m: &ArgMatches) -> Value {
    let id = arg.get_id().as_str();
    match arg.get_action() {
        ArgAction::SetTrue => Value::Bool(m.get_flag(id)),
        ArgAction::Count => Value::from(m.get_count(id)),
        action => {
            let raw: Vec<String> = m
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            match (action, raw.as_slice()) {
                (ArgAction::Append, _) => Value::from(raw),
                (_, [one]) => Value::from(one.clone()),
                _ => Value::Null,
            }
        }
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        other => Value::from(other.to_string()),
    }
}

/// Tokens become `***`; URLs lose their password.
fn mask(key: &str, value: Value) -> Value {
    match value {
        Value::Null => Value::Null,
        _ if SECRET_KEYS.contains(&key) => Value::from("***"),
        Value::String(s) if s.contains("://") => Value::from(drover_amqp::redact(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| mask(key, v)).collect()),
        other => other,
    }
}

/// `auto` settings with the value they come to: `--concurrency auto` shows as `auto (N)`.
fn resolved(key: &str, value: Value) -> Value {
    match value {
        Value::String(s) if key == "concurrency" && s.eq_ignore_ascii_case("auto") => {
            Value::from(format!("auto ({})", crate::cli::cpu_count()))
        }
        other => other,
    }
}

fn to_json(shown: &[Shown]) -> Value {
    let mut section = Map::new();
    for s in shown {
        section.insert(
            s.key.clone(),
            json!({"value": s.value, "source": s.source, "env": s.env}),
        );
    }
    Value::Object(section)
}

fn print_section(section: Section, shown: &[Shown]) {
    println!("[{}]", section.name());
    for s in shown {
        let value = match &s.value {
            Value::Null => "(unset)".to_string(),
            Value::String(v) => v.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let source = match (s.source, &s.env) {
            ("env", Some(name)) => format!("env {name}"),
            (source, _) => source.to_string(),
        };
        println!("  {:<24} {:<44} {source}", s.key, value);
    }
}
