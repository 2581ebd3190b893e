//! Python environments for function steps: one virtualenv per (interpreter, requirements).

mod build;
mod bundle;
mod interpreter;

use std::path::PathBuf;

/// How function steps get their interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonEnvMode {
    /// One cached virtualenv per requirements key (uv when available, venv + pip otherwise).
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
            let installer = build::Installer::detect();
            build::venv(&envs, &base, requirements, &installer, log.as_ref()).await?
        }
    };
    Ok(PreparedPython {
        python,
        harness: bundle.join(bundle::HARNESS),
        pythonpath: bundle,
    })
}
