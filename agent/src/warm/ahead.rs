//! Bytecode written ahead of a warm parent's preload: `python drover_compile.py MODULE...` beside
//! the parent, on the CPUs the parent leaves idle, stopped when the preload ends.
//!
//! A parent compiles each module it imports for the first time, one after another on one CPU;
//! a new environment's first preload (pandas, scikit-learn) spends most of its time there. The
//! script, at a low priority (`os.nice`), compiles the files the preload is likely to reach from
//! the far end of their list, so the parent finds them compiled. It changes nothing the parent
//! does: the bytecode is what the parent's own import would write, renamed into place whole.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;

/// The script inside the bundle, beside the warm parent's.
pub const SCRIPT: &str = "drover_compile.py";

/// A running compiler, ended when dropped.
pub struct Ahead {
    process: tokio::process::Child,
}

impl Ahead {
    /// Starts compiling what importing `modules` reaches, with the environment's `python`, the
    /// bundle's script, and `env` and `home` as the parent has them; `None` (logged at debug
    /// level) when it cannot start, which only leaves the compiling to the parent.
    pub fn start(
        python: &Path,
        bundle: &Path,
        env: &BTreeMap<String, String>,
        home: &Path,
        modules: &BTreeSet<String>,
    ) -> Option<Ahead> {
        let started = tokio::process::Command::new(python)
            .arg(bundle.join(SCRIPT))
            .args(modules)
            .env_clear()
            .envs(env)
            .env("HOME", home)
            .env("TMPDIR", home)
            .current_dir(home)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match started {
            Ok(process) => Some(Ahead { process }),
            Err(e) => {
                tracing::debug!("cannot compile bytecode ahead of a preload with {python:?}: {e}");
                None
            }
        }
    }
}

impl Drop for Ahead {
    /// Ends it with SIGTERM, which it takes between two files (a file is never left
    /// half-written, as SIGKILL could); tokio reaps it in the background.
    fn drop(&mut self) {
        if let Some(pid) = self.process.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The bundled script, started as a preload starts it, writes the bytecode of the modules a
    /// package's import reaches, from the package's environment (`PYTHONPATH` here).
    #[tokio::test]
    async fn the_bundled_compiler_writes_what_an_import_of_the_modules_reaches() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("one CPU: the compiler leaves everything to the parent there");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let bundle = crate::pyenv::bundle::materialize(root.path()).unwrap();
        let (home, lib) = (root.path().join("home"), root.path().join("lib"));
        std::fs::create_dir_all(lib.join("pkg")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(lib.join("pkg/__init__.py"), "from . import a\n").unwrap();
        std::fs::write(lib.join("pkg/a.py"), "X = 1\n").unwrap();
        std::fs::write(lib.join("pkg/unused.py"), "Y = 1\n").unwrap();
        let python = crate::pyenv::interpreter::find("python3", None)
            .await
            .unwrap()
            .executable;
        let env = BTreeMap::from([("PYTHONPATH".to_string(), lib.display().to_string())]);
        let modules = BTreeSet::from(["pkg".to_string()]);
        let ahead = Ahead::start(&python, &bundle, &env, &home, &modules).expect("not started");
        let compiled = |name: &str| {
            std::fs::read_dir(lib.join("pkg/__pycache__"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(name))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(compiled("__init__.") && compiled("a.")) {
            assert!(Instant::now() < deadline, "no bytecode written in 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(ahead);
        assert!(!compiled("unused."));
    }
}
