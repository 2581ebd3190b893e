//! Finds the interpreter a step asks for (`python = "3.11"`) among the agent's own.

use super::PyEnvError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// A Python interpreter on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// Its `sys.executable`, resolved once so environment keys do not depend on `PATH` order.
    pub executable: PathBuf,
    /// `major.minor`.
    pub version: String,
}

/// `base` when it has the wanted version (or none is wanted), else `python<version>` from `PATH`.
pub async fn find(base: &str, wanted: Option<&str>) -> Result<Interpreter, PyEnvError> {
    let own = probe(base).await.map_err(|e| {
        PyEnvError(format!(
            "cannot run the agent's Python '{base}': {e}; start the agent with --python PATH"
        ))
    })?;
    let Some(wanted) = wanted.filter(|w| *w != own.version) else {
        return Ok(own);
    };
    match probe(&format!("python{wanted}")).await {
        Ok(other) if other.version == wanted => Ok(other),
        _ => Err(PyEnvError(format!(
            "the step wants Python {wanted}, but this agent's '{base}' is Python {} and there is \
             no python{wanted} on PATH; install it or start the agent with --python python{wanted}",
            own.version
        ))),
    }
}

fn cache() -> &'static Mutex<HashMap<String, Interpreter>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Interpreter>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Asks an interpreter for its executable and version, once per name.
async fn probe(name: &str) -> Result<Interpreter, String> {
    if let Some(found) = cache().lock().ok().and_then(|c| c.get(name).cloned()) {
        return Ok(found);
    }
    let out = tokio::process::Command::new(name)
        .args([
            "-c",
            "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "it exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(executable), Some(version)) = (lines.next(), lines.next()) else {
        return Err(format!("unexpected answer {text:?}"));
    };
    let found = Interpreter {
        executable: PathBuf::from(executable),
        version: version.trim().to_string(),
    };
    if let Ok(mut c) = cache().lock() {
        c.insert(name.to_string(), found.clone());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_agents_python_and_refuses_a_missing_version() {
        let own = find("python3", None).await.unwrap();
        assert!(own.executable.is_absolute());
        assert!(own.version.starts_with("3."), "{own:?}");
        assert_eq!(find("python3", Some(&own.version)).await.unwrap(), own);
        let err = find("python3", Some("2.1")).await.unwrap_err().to_string();
        assert!(err.contains("wants Python 2.1"), "{err}");
    }
}
