//! Bytecode written ahead of a warm parent's preload: `python drover_compile.py MODULE...` beside
//! the parent, on the CPUs the parent leaves idle, stopped when the preload ends.
//!
//! A parent compiles each module it imports for the first time, one after another on one CPU;
//! a new environment's first preload (pandas, scikit-learn) spends most of its time there. The
//! script, at a low priority (`os.nice`), compiles the files the preload is likely to reach from
//! the far end of their list, so the parent finds them compiled. It changes nothing the parent
//! does: the bytecode is what the parent's own import would write, renamed into place whole.
//!
//! With the machine's bytecode cache ([`BytecodeCache`], `drover_bytecache.py`), the script
//! first copies the cached bytecode of those files into place, and [`harvest`], started after a
//! preload, stores what the environment then has into the cache for the next environment.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

/// The script inside the bundle, beside the warm parent's.
pub const SCRIPT: &str = "drover_compile.py";

/// A bytecode cache shared by the environments of a machine (`--python-bytecode-cache`):
/// checked-hash pycs keyed by the interpreter's cache tag and the source's sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytecodeCache {
    pub dir: PathBuf,
    /// Past this many bytes the least recently used entries are removed.
    pub limit: u64,
}

impl BytecodeCache {
    /// The cache `--python-bytecode-cache` names: `off`, `auto` or a directory. `auto` is
    /// `drover/bytecode` in the user's cache directory (`$XDG_CACHE_HOME`, else
    /// `$HOME/.cache`), beside uv's; without either it is off, which is logged.
    pub fn from_setting(setting: &str, limit: u64) -> Option<BytecodeCache> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = Self::dir_of(setting, var("XDG_CACHE_HOME"), var("HOME"));
        if dir.is_none() && setting == "auto" {
            tracing::warn!(
                "no bytecode cache: neither XDG_CACHE_HOME nor HOME is set (--python-bytecode-cache DIR names one)"
            );
        }
        dir.map(|dir| BytecodeCache { dir, limit })
    }

    fn dir_of(
        setting: &str,
        xdg_cache: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Option<PathBuf> {
        match setting {
            "off" | "" => None,
            "auto" => xdg_cache
                .map(PathBuf::from)
                .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("drover").join("bytecode")),
            dir => Some(PathBuf::from(dir)),
        }
    }
}

/// A running compiler, ended when dropped.
pub struct Ahead {
    process: tokio::process::Child,
}

impl Ahead {
    /// Starts compiling what importing `modules` reaches, with the environment's `python`, the
    /// bundle's script, and `env` and `home` as the parent has them, placing what `cache` holds
    /// first; `None` (logged at debug level) when it cannot start, which only leaves the
    /// compiling to the parent.
    pub fn start(
        launch: &super::parent::Launch<'_>,
        modules: &BTreeSet<String>,
        cache: Option<&BytecodeCache>,
    ) -> Option<Ahead> {
        match command(launch, cache).args(modules).spawn() {
            Ok(process) => Some(Ahead { process }),
            Err(e) => {
                tracing::debug!(
                    "cannot compile bytecode ahead of a preload with {:?}: {e}",
                    launch.python
                );
                None
            }
        }
    }
}

/// Stores in `cache`, in the background at the lowest priority, the bytecode the environment
/// has for what importing `modules` reaches (the modules a preload just imported). The process
/// is left to end by itself: it runs one at a time per cache and stops at its size limit.
pub fn harvest(
    launch: &super::parent::Launch<'_>,
    modules: &BTreeSet<String>,
    cache: &BytecodeCache,
) {
    let started = command(launch, Some(cache))
        .arg("--harvest")
        .args(modules)
        .spawn();
    if let Err(e) = started {
        tracing::debug!(
            "cannot store bytecode in {} with {:?}: {e}",
            cache.dir.display(),
            launch.python
        );
    }
}

/// `python drover_compile.py` in the parent's environment and home, told of `cache`.
fn command(
    launch: &super::parent::Launch<'_>,
    cache: Option<&BytecodeCache>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(launch.python);
    command
        .arg(launch.bundle.join(SCRIPT))
        .env_clear()
        .envs(launch.env)
        .env("HOME", launch.home)
        .env("TMPDIR", launch.home)
        .current_dir(launch.home)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(cache) = cache {
        command
            .env("DROVER_BYTECODE_CACHE", &cache.dir)
            .env("DROVER_BYTECODE_CACHE_SIZE", cache.limit.to_string());
    }
    command
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
    use std::collections::BTreeMap;
    use std::path::Path;
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
        let launch = super::super::parent::Launch {
            python: &python,
            bundle: &bundle,
            env: &env,
            home: &home,
        };
        let ahead = Ahead::start(&launch, &modules, None).expect("not started");
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

    #[test]
    fn the_setting_names_the_cache_or_turns_it_off() {
        let dir = |s: &str, xdg: Option<&str>, home: Option<&str>| {
            BytecodeCache::dir_of(s, xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(dir("off", Some("/x"), Some("/h")), None);
        assert_eq!(
            dir("auto", Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/drover/bytecode"))
        );
        assert_eq!(
            dir("auto", None, Some("/h")),
            Some(PathBuf::from("/h/.cache/drover/bytecode"))
        );
        assert_eq!(dir("auto", None, None), None);
        assert_eq!(dir("/c", None, None), Some(PathBuf::from("/c")));
    }

    /// The flags word of `source`'s bytecode in its `__pycache__` (3: a checked-hash pyc, as
    /// only the cache writes them), for each of its pycs.
    fn pyc_flags(dir: &Path, stem: &str) -> Vec<u32> {
        std::fs::read_dir(dir.join("__pycache__"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{stem}."))
            })
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter(|b| b.len() >= 8)
            .map(|b| u32::from_le_bytes(b[4..8].try_into().unwrap()))
            .collect()
    }

    /// An environment's bytecode, harvested after its preload, is placed into a second
    /// environment with the same package before its preload; with no cache it is not.
    #[tokio::test]
    async fn environments_share_bytecode_through_the_cache_unless_it_is_off() {
        let root = tempfile::tempdir().unwrap();
        let bundle = crate::pyenv::bundle::materialize(root.path()).unwrap();
        let home = root.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let python = crate::pyenv::interpreter::find("python3", None)
            .await
            .unwrap()
            .executable;
        let make = |name: &str| {
            let lib = root.path().join(name);
            std::fs::create_dir_all(lib.join("pkg")).unwrap();
            std::fs::write(lib.join("pkg/__init__.py"), "from . import a\n").unwrap();
            std::fs::write(lib.join("pkg/a.py"), "X = 1\n").unwrap();
            let env = BTreeMap::from([("PYTHONPATH".to_string(), lib.display().to_string())]);
            (lib, env)
        };
        let cache = BytecodeCache {
            dir: root.path().join("cache"),
            limit: 1 << 20,
        };
        let modules = BTreeSet::from(["pkg".to_string()]);
        let (a, a_env) = make("a");
        let imported = std::process::Command::new(&python)
            .args(["-c", "import pkg"])
            .env_clear()
            .envs(&a_env)
            .status()
            .unwrap();
        assert!(imported.success());
        let launch = |env| super::super::parent::Launch {
            python: &python,
            bundle: &bundle,
            env,
            home: &home,
        };
        harvest(&launch(&a_env), &modules, &cache);
        let entries = || {
            walk(&cache.dir)
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "pyc"))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while entries() < 2 {
            assert!(Instant::now() < deadline, "nothing harvested in 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pyc_flags(&a.join("pkg"), "a").iter().all(|f| *f == 0));

        let (b, b_env) = make("b");
        let mut ahead = Ahead::start(&launch(&b_env), &modules, Some(&cache)).unwrap();
        assert!(ahead.process.wait().await.unwrap().success());
        assert_eq!(pyc_flags(&b.join("pkg"), "a"), vec![3]);
        assert_eq!(pyc_flags(&b.join("pkg"), "__init__"), vec![3]);

        let (c, c_env) = make("c");
        let mut ahead = Ahead::start(&launch(&c_env), &modules, None).unwrap();
        assert!(ahead.process.wait().await.unwrap().success());
        assert!(!pyc_flags(&c.join("pkg"), "a").contains(&3));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
        found
    }
}
