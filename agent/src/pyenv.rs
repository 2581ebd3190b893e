//! Python environments for function steps: one virtualenv per (Python version, requirements).
//!
//! Interface fixed here; the implementation is being written (returns an error until then).

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

/// Prepares (or reuses) the environment for these requirements; build output goes to `log`.
pub async fn prepare(
    _config: &PyEnvConfig,
    _requirements: &[String],
    _python_version: Option<&str>,
    _log: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
) -> Result<PreparedPython, PyEnvError> {
    Err(PyEnvError(
        "python function steps are not supported by this agent build yet".to_string(),
    ))
}
