//! Python environments for function steps: one virtualenv per (interpreter, requirements).

mod build;
pub(crate) mod bundle;
pub(crate) mod interpreter;
mod uv;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use build::{INSTALLER_ENV, Installer};
pub use uv::{Choice, VERSION as UV_VERSION, foresee, installed_path as uv_installed_path};

/// How long building one environment may take by default.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How function steps get their interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonEnvMode {
    /// One cached virtualenv per requirements key (uv when available or installable, venv +
    /// pip otherwise).
    #[default]
    Venv,
    /// The agent's own interpreter, requirements not installed.
    System,
}

/// Where and how environments are built.
#[derive(Debug, Clone)]
pub struct PyEnvConfig {
    pub mode: PythonEnvMode,
    /// Root directory for cached environments, the bundled SDK and harness.
    pub env_root: PathBuf,
    /// Interpreter that environments are based on (`python3` by default).
    pub base_python: String,
    /// The longest one environment build may take; the step fails with an error past it.
    pub build_timeout: Duration,
    /// Compile every installed module's bytecode when an environment is built (uv), for steps
    /// that cannot write it into the environment themselves (`--run-as`).
    pub compile_all: bool,
    /// What builds environments, chosen once (see [`installer`]).
    pub installer: InstallerCell,
}

/// The installer chosen for one agent's environments, shared by its clones of the config.
#[derive(Debug, Clone, Default)]
pub struct InstallerCell(Arc<tokio::sync::OnceCell<Choice>>);

impl InstallerCell {
    /// The choice in a few words and why, once made.
    pub fn summary(&self) -> Option<String> {
        self.0.get().map(|c| c.summary.clone())
    }
}

/// What builds this configuration's environments: chosen on the first call (the agent makes it
/// at start, logging the choice), which may install `uv` under the environments' root.
pub async fn installer(config: &PyEnvConfig) -> &Choice {
    config
        .installer
        .0
        .get_or_init(|| async {
            let choice = uv::choose(
                &config.env_root,
                &config.base_python,
                std::env::var_os("PATH"),
            )
            .await;
            match choice.installer {
                Installer::Uv(_) => tracing::info!("{}", choice.why),
                Installer::Pip => tracing::warn!("{}", choice.why),
            }
            choice
        })
        .await
}

/// What a function step runs with.
#[derive(Debug, Clone)]
pub struct PreparedPython {
    /// The interpreter to run.
    pub python: PathBuf,
    /// A directory to put on `PYTHONPATH`: it holds the `drover` SDK package.
    pub pythonpath: PathBuf,
    /// The harness script.
    pub harness: PathBuf,
}

/// An environment could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PyEnvError(pub String);

/// Where build output and the agent's notes about the environment go (the step's log).
pub type LogSender = crate::logstream::LogSender;

pub(crate) async fn note(log: Option<&LogSender>, line: &str) {
    if let Some(log) = log {
        let _ = log.send(format!("drover: {line}\n").into_bytes()).await;
    }
}

/// Prepares (or reuses) the environment for these requirements; build output goes to `log`.
pub async fn prepare(
    config: &PyEnvConfig,
    requirements: &[String],
    python_version: Option<&str>,
    log: Option<LogSender>,
) -> Result<PreparedPython, PyEnvError> {
    // Checked at submit too; a job from the broker is checked again before anything runs.
    for r in requirements {
        drover_protocol::validate::check_requirement(r).map_err(|why| {
            PyEnvError(format!(
                "requirement {r:?} {why}; only PEP 508 specifiers are installed"
            ))
        })?;
    }
    let root = config.env_root.clone();
    let bundle = tokio::task::spawn_blocking(move || bundle::materialize(&root))
        .await
        .map_err(|e| PyEnvError(format!("bundle task failed: {e}")))?
        .map_err(|e| {
            PyEnvError(format!(
                "cannot write the drover SDK under {}: {e}",
                config.env_root.display()
            ))
        })?;
    let base = interpreter::find(&config.base_python, python_version).await?;
    let python = match config.mode {
        PythonEnvMode::System => {
            if !requirements.is_empty() {
                note(
                    log.as_ref(),
                    &format!(
                        "--python-env system: running on {} without installing {}",
                        base.executable.display(),
                        requirements.join(" ")
                    ),
                )
                .await;
            }
            base.executable
        }
        PythonEnvMode::Venv => {
            let envs = config.env_root.join("envs");
            build::venv(
                &envs,
                &base,
                requirements,
                &installer(config).await.installer,
                config.compile_all,
                config.build_timeout,
                log.as_ref(),
            )
            .await?
        }
    };
    Ok(PreparedPython {
        python,
        harness: bundle.join(bundle::HARNESS),
        pythonpath: bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_with_an_option_for_a_requirement_is_refused_before_any_build() {
        let root = tempfile::tempdir().unwrap();
        let config = PyEnvConfig {
            mode: PythonEnvMode::Venv,
            env_root: root.path().join("py"),
            base_python: "python3".into(),
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            compile_all: false,
            installer: InstallerCell::default(),
        };
        let reqs = [
            "six".to_string(),
            "--index-url=https://evil.example".to_string(),
        ];
        let err = prepare(&config, &reqs, None, None).await.unwrap_err();
        assert!(
            err.0.contains("\"--index-url=https://evil.example\""),
            "{err}"
        );
        assert!(!root.path().join("py").exists(), "something was built");
    }
}
