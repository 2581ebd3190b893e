//! The configuration file (`drover.toml`): which one applies, and its settings checked against
//! the flags they stand for, so a typo is an error rather than a silently ignored setting.

use super::sections::{Section, known_keys};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file looked for in the working directory when neither `--config` nor `DROVER_CONFIG`
/// names one.
pub const DEFAULT_FILE: &str = "drover.toml";

/// How the file was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Flag,
    Env,
    WorkingDir,
}

/// A loaded configuration file: per section, flag name -> value.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub chosen: Chosen,
    pub sections: BTreeMap<Section, toml::Table>,
}

impl ConfigFile {
    /// The value the file sets for `key` in `section`, if any.
    pub fn get(&self, section: Section, key: &str) -> Option<&toml::Value> {
        self.sections.get(&section)?.get(key)
    }

    /// Reads and checks a file: top-level keys are global settings, `[controller]`, `[agent]`
    /// and `[up]` hold the settings of those commands, keyed by their flag names.
    pub fn load(path: &Path, chosen: Chosen) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let mut sections = BTreeMap::new();
        for section in [Section::Controller, Section::Agent, Section::Up] {
            match table.remove(section.name()) {
                Some(toml::Value::Table(t)) => {
                    sections.insert(section, t);
                }
                Some(_) => bail!(
                    "{}: `{}` must be a table ([{}])",
                    path.display(),
                    section.name(),
                    section.name()
                ),
                None => {}
            }
        }
        sections.insert(Section::Global, table);
        for (section, table) in &sections {
            let known = known_keys(*section);
            for key in table.keys() {
                if !known.contains(key) {
                    let place = match section {
                        Section::Global => "at the top level".to_string(),
                        s => format!("in [{}]", s.name()),
                    };
                    bail!(
                        "{}: unknown setting `{key}` {place}; known there: {}{}",
                        path.display(),
                        known.join(", "),
                        if *section == Section::Global {
                            " and the tables [controller], [agent], [up]"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        let file = Self {
            path: path.to_path_buf(),
            chosen,
            sections,
        };
        file.warn_if_readable_secret();
        Ok(file)
    }

    /// A token or password in a file others can read is worth a warning.
    fn warn_if_readable_secret(&self) {
        use std::os::unix::fs::PermissionsExt;
        let secret = self.get(Section::Global, "token").is_some()
            || self.get(Section::Controller, "read-token").is_some()
            || self.get(Section::Global, "amqp").is_some_and(|v| {
                let urls = match v {
                    toml::Value::Array(items) => items.iter().filter_map(|i| i.as_str()).collect(),
                    other => other.as_str().into_iter().collect::<Vec<_>>(),
                };
                urls.iter().any(|u| drover_amqp::redact(u) != *u)
            });
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if secret && mode & 0o077 != 0 {
            eprintln!(
                "warning: {} holds a secret (token or AMQP password) and others can read it: chmod 600 it",
                self.path.display()
            );
        }
    }
}

/// The file named by `--config` / `DROVER_CONFIG`, else `./drover.toml` when it exists.
pub fn locate(named: Option<(PathBuf, Chosen)>) -> Result<Option<ConfigFile>> {
    match named {
        Some((path, chosen)) => ConfigFile::load(&path, chosen).map(Some),
        None => {
            let path = Path::new(DEFAULT_FILE);
            if path.is_file() {
                ConfigFile::load(path, Chosen::WorkingDir).map(Some)
            } else {
                Ok(None)
            }
        }
    }
}
