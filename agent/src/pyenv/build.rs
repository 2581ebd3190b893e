//! Builds one virtualenv per requirements key, once, safely under concurrent jobs and crashes.
//!
//! An environment lives in `<envs>/<key>`, where the key hashes the interpreter and the sorted
//! requirements. Builders take an exclusive lock on `<envs>/<key>.lock` and build in place,
//! writing the [`READY`] mark last: a job uses an environment only once it holds the mark, so a
//! half-built one is never used, and the next builder removes what a crashed build left. In
//! place, not in a temporary directory renamed afterwards: installers write the environment's
//! path into what they install (the `#!` line of each console script, `activate`), which a
//! rename would leave pointing at a directory that no longer exists.
//!
//! Installers run with a cleared environment plus [`INSTALLER_ENV`] (what they need to reach an
//! index), in [`INSTALLER_CWD`], under a time limit, and get the requirements after `--`, so none
//! is read as an option.

use super::interpreter::Interpreter;
use super::{LogSender, PyEnvError, note};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Written last into a finished environment.
const READY: &str = ".drover-ready";

/// The agent's variables an installer sees; everything else in the agent's environment
/// (tokens, cloud credentials, the broker URL) stays out of builds.
pub const INSTALLER_ENV: &[&str] = &[
    // the basics a step sees too; HOME and XDG_CACHE_HOME keep the installers' shared caches
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    // proxies
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    // package indexes and caches
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_INDEX_STRATEGY",
    "UV_KEYRING_PROVIDER",
    "UV_CACHE_DIR",
    "UV_LINK_MODE",
    "UV_NATIVE_TLS",
    "UV_OFFLINE",
    "UV_HTTP_TIMEOUT",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_TRUSTED_HOST",
    "PIP_CACHE_DIR",
    "PIP_CERT",
    "PIP_CONFIG_FILE",
    "PIP_NO_INDEX",
    "PIP_DEFAULT_TIMEOUT",
    // certificate authorities
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// Where installers run: uv reads a `uv.toml` or `pyproject.toml` of its working directory and
/// its parents as its configuration, and the agent's own working directory (or one above its
/// work dir) may hold any project's.
pub const INSTALLER_CWD: &str = "/";

/// The environment's key: interpreter and requirements, order-insensitive.
pub fn key(base: &Interpreter, requirements: &[String]) -> String {
    let mut reqs: Vec<&str> = requirements.iter().map(|r| r.trim()).collect();
    reqs.sort_unstable();
    reqs.dedup();
    let mut hash = Sha256::new();
    hash.update(b"drover-env-v1\n");
    hash.update(base.executable.as_os_str().as_encoded_bytes());
    hash.update(format!("\n{}\n", base.version));
    for r in reqs {
        hash.update(r.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())[..16].to_string()
}

/// What creates environments and installs requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    /// `uv venv` and `uv pip install`: much faster, with a shared download cache.
    Uv(PathBuf),
    /// `python -m venv` and pip.
    Pip,
}

impl Installer {
    /// uv when it is on `PATH`, else pip.
    #[cfg(test)]
    pub fn detect() -> Self {
        std::env::var_os("PATH")
            .and_then(|path| on_path_of(&path, "uv"))
            .map_or(Installer::Pip, Installer::Uv)
    }
}

/// The interpreter of the environment for `requirements`, built first if needed.
pub async fn venv(
    envs: &Path,
    base: &Interpreter,
    requirements: &[String],
    installer: &Installer,
    compile_all: bool,
    timeout: Duration,
    log: Option<&LogSender>,
) -> Result<PathBuf, PyEnvError> {
    let key = key(base, requirements);
    let dir = envs.join(&key);
    let python = dir.join("bin").join("python");
    // A ready environment says nothing in the step's log: a step that prints nothing then
    // costs no log chunk, and the attempt's record says how it started.
    if dir.join(READY).is_file() {
        return Ok(python);
    }
    let io = |what: &str, e: std::io::Error| PyEnvError(format!("{what}: {e}"));
    std::fs::create_dir_all(envs)
        .map_err(|e| io(&format!("cannot create {}", envs.display()), e))?;
    let lock = lock_exclusive(envs.join(format!("{key}.lock")))
        .await
        .map_err(|e| io("cannot lock the environment", e))?;

    if dir.join(READY).is_file() {
        note(
            log,
            &format!("python env {key} reused (built by another job)"),
        )
        .await;
        return Ok(python);
    }
    remove_leftovers(envs, &key, &dir);
    let started = Instant::now();
    note(
        log,
        &format!(
            "building python env {key} (Python {}): {}",
            base.version,
            if requirements.is_empty() {
                "no requirements".to_string()
            } else {
                requirements.join(" ")
            }
        ),
    )
    .await;
    let built = tokio::time::timeout(
        timeout,
        install(&dir, base, requirements, installer, compile_all, log),
    )
    .await
    .unwrap_or_else(|_| {
        Err(PyEnvError(format!(
            "building the Python environment took longer than {} (--python-build-timeout); \
             check that the package index is reachable, or raise the limit",
            humantime::format_duration(timeout)
        )))
    })
    .and_then(|()| {
        std::fs::write(dir.join(READY), requirements.join("\n"))
            .map_err(|e| io("cannot mark the environment ready", e))
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    drop(lock);
    note(
        log,
        &format!(
            "python env {key} ready in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
    )
    .await;
    Ok(python)
}

/// Removes what crashed builders of `key` left behind (the unmarked environment; temporary
/// directories of earlier versions, which built elsewhere); only called with the key's lock held.
fn remove_leftovers(envs: &Path, key: &str, dir: &Path) {
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let prefix = format!(".tmp-{key}-");
    if let Ok(entries) = std::fs::read_dir(envs) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Creates the environment in `dir` and installs the requirements.
async fn install(
    dir: &Path,
    base: &Interpreter,
    requirements: &[String],
    installer: &Installer,
    compile_all: bool,
    log: Option<&LogSender>,
) -> Result<(), PyEnvError> {
    let exe = base.executable.display().to_string();
    let target = dir.display().to_string();
    let python = dir.join("bin").join("python").display().to_string();
    let mut steps: Vec<Vec<String>> = Vec::new();
    if let Installer::Uv(uv) = installer {
        let uv = uv.display().to_string();
        steps.push(vec![
            uv.clone(),
            "venv".into(),
            "--quiet".into(),
            "--python".into(),
            exe,
            target,
        ]);
        if !requirements.is_empty() {
            // Bytecode of what steps import is written when they (or a warm parent) first import
            // it; compiling every installed module up front made a first run wait for all of
            // pandas, scipy and scikit-learn. Only steps that cannot write into the environment
            // (`--run-as`) need it all compiled here.
            let mut cmd = vec![uv, "pip".into(), "install".into()];
            if compile_all {
                cmd.push("--compile-bytecode".into());
            }
            cmd.extend(["--python".into(), python, "--".into()]);
            cmd.extend(requirements.iter().map(|r| r.trim().to_string()));
            steps.push(cmd);
        }
    } else {
        let mut cmd = vec![exe, "-m".into(), "venv".into()];
        if requirements.is_empty() {
            cmd.push("--without-pip".into());
        }
        cmd.push(target);
        steps.push(cmd);
        if !requirements.is_empty() {
            let mut cmd = vec![python, "-m".into(), "pip".into(), "install".into()];
            cmd.extend(["--disable-pip-version-check".into(), "--".into()]);
            cmd.extend(requirements.iter().map(|r| r.trim().to_string()));
            steps.push(cmd);
        }
    }
    for argv in steps {
        run(&argv, log).await?;
    }
    Ok(())
}

/// `argv` as an installer runs: only the variables of [`INSTALLER_ENV`], in [`INSTALLER_CWD`],
/// no standard input, killed when dropped.
pub fn installer_command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(
            INSTALLER_ENV
                .iter()
                .filter_map(|k| Some((*k, std::env::var_os(k)?))),
        )
        .current_dir(INSTALLER_CWD)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs one build command, forwarding its output to the step's log.
async fn run(argv: &[String], log: Option<&LogSender>) -> Result<(), PyEnvError> {
    note(log, &format!("$ {}", argv.join(" "))).await;
    let mut child = installer_command(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PyEnvError(format!("cannot run {}: {e}", argv[0])))?;
    let out = forward(child.stdout.take(), log.cloned());
    let err = forward(child.stderr.take(), log.cloned());
    let status = child
        .wait()
        .await
        .map_err(|e| PyEnvError(format!("{}: {e}", argv[0])))?;
    let (_, tail) = tokio::join!(out, err);
    if status.success() {
        return Ok(());
    }
    Err(PyEnvError(format!(
        "`{}` failed ({status}): {}",
        argv.join(" "),
        String::from_utf8_lossy(&tail).trim()
    )))
}

/// Copies a pipe into the log; returns the last 2 KiB for error messages.
async fn forward<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    log: Option<LogSender>,
) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut pipe) = pipe else { return tail };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Some(log) = &log {
            let _ = log.send(buf[..n].to_vec()).await;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2048 {
            tail.drain(..tail.len() - 2048);
        }
    }
    tail
}

/// Opens `path` (created when missing) and waits, on the blocking pool, for an exclusive lock on
/// it; the lock lasts as long as the returned file is open.
pub async fn lock_exclusive(path: PathBuf) -> std::io::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| std::io::Error::other(format!("lock task failed: {e}")))?
}

/// The first file called `name` in the directories of `path` (a `PATH` value).
pub fn on_path_of(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp() -> Interpreter {
        Interpreter {
            executable: "/usr/bin/python3".into(),
            version: "3.11".into(),
        }
    }

    #[test]
    fn key_ignores_order_and_duplicates() {
        let a = key(&interp(), &["b==1".into(), "a==2".into()]);
        let b = key(&interp(), &["a==2".into(), "b==1".into(), "a==2".into()]);
        assert_eq!(a, b);
        assert_ne!(a, key(&interp(), &["a==2".into()]));
    }

    /// An installer standing in for uv: records its arguments and environment, makes the
    /// environment's directory, and sleeps `pause` seconds in `pip install`.
    fn fake_uv(dir: &Path, pause: u32) -> Installer {
        let uv = dir.join("uv");
        let script = format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$@\" > {dir}/args-$1\n\
             env > {dir}/env-$1\n\
             pwd > {dir}/cwd-$1\n\
             if [ \"$1\" = venv ]; then for a; do t=$a; done; mkdir -p \"$t/bin\"; fi\n\
             if [ \"$1\" = pip ]; then sleep {pause}; fi\n",
            dir = dir.display()
        );
        std::fs::write(&uv, script).unwrap();
        std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Installer::Uv(uv)
    }

    #[tokio::test]
    async fn installers_see_the_allow_list_only_and_requirements_after_the_options() {
        let root = tempfile::tempdir().unwrap();
        let installer = fake_uv(root.path(), 0);
        let reqs = vec!["six==1.17.0".to_string(), " pandas ".to_string()];
        venv(
            &root.path().join("envs"),
            &interp(),
            &reqs,
            &installer,
            false,
            Duration::from_secs(60),
            None,
        )
        .await
        .unwrap();
        let args = std::fs::read_to_string(root.path().join("args-pip")).unwrap();
        let args: Vec<&str> = args.lines().collect();
        let dashes = args.iter().position(|a| *a == "--").expect("no --");
        assert_eq!(args[dashes + 1..], ["six==1.17.0", "pandas"], "{args:?}");
        // The test runner's environment holds more than the allow-list (CARGO_*, at least).
        assert!(std::env::vars().any(|(k, _)| !INSTALLER_ENV.contains(&k.as_str())));
        for phase in ["venv", "pip"] {
            let env = std::fs::read_to_string(root.path().join(format!("env-{phase}"))).unwrap();
            for line in env.lines().filter(|l| l.contains('=')) {
                let name = line.split('=').next().unwrap();
                // sh adds PWD, SHLVL and _ of its own.
                assert!(
                    INSTALLER_ENV.contains(&name)
                        || ["PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
                    "{phase} saw {name}"
                );
            }
            // Not the agent's working directory, whose uv.toml or pyproject.toml uv would read.
            let cwd = std::fs::read_to_string(root.path().join(format!("cwd-{phase}"))).unwrap();
            assert_eq!(cwd.trim(), INSTALLER_CWD, "{phase}");
        }
    }

    #[tokio::test]
    async fn a_build_past_its_time_limit_fails_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let installer = fake_uv(root.path(), 30);
        let envs = root.path().join("envs");
        let started = Instant::now();
        let reqs = ["six".to_string()];
        let err = venv(
            &envs,
            &interp(),
            &reqs,
            &installer,
            false,
            Duration::from_secs(1),
            None,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.0.contains("--python-build-timeout"), "{err}");
        assert!(!envs.join(key(&interp(), &reqs)).exists());
    }

    /// `--run-as`: steps of another user can enter and read a built environment, not change it.
    #[tokio::test]
    async fn another_user_cannot_write_into_a_built_environment() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use std::os::unix::process::CommandExt;
        if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
            eprintln!("not root: environments were not tried as another user");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let envs = root.path().join("envs");
        let base = super::super::interpreter::find("python3", None)
            .await
            .unwrap();
        let python = venv(&envs, &base, &[], &Installer::Pip, false, DAY, None)
            .await
            .unwrap();
        let dir = python.parent().unwrap().parent().unwrap();
        let script = format!(
            "ls {d}/bin > /dev/null && echo read; \
             touch {d}/x 2>/dev/null || echo top; \
             touch {d}/bin/x 2>/dev/null || echo bin; \
             touch {d}/pyvenv.cfg 2>/dev/null || echo cfg",
            d = dir.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "read\ntop\nbin\ncfg\n"
        );
    }

    #[tokio::test]
    async fn builds_once_and_reuses_under_concurrent_jobs_with_pip() {
        builds_once_and_reuses(Installer::Pip).await;
    }

    #[tokio::test]
    async fn builds_once_and_reuses_under_concurrent_jobs_with_uv() {
        match Installer::detect() {
            Installer::Uv(uv) => builds_once_and_reuses(Installer::Uv(uv)).await,
            // scripts/test.sh puts uv on PATH; a bare `cargo test` may not have it.
            Installer::Pip => eprintln!("uv is not on PATH: only the pip path was tested"),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    async fn builds_once_and_reuses(installer: Installer) {
        let root = tempfile::tempdir().unwrap();
        let base = super::super::interpreter::find("python3", None)
            .await
            .unwrap();
        let envs = root.path().join("envs");
        // A crashed builder's leftovers are cleaned up.
        let k = key(&base, &[]);
        std::fs::create_dir_all(envs.join(format!(".tmp-{k}-crashed"))).unwrap();
        std::fs::create_dir_all(envs.join(&k).join("bin")).unwrap();
        std::fs::write(envs.join(&k).join("half-built"), "").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(crate::logstream::CHANNEL_DEPTH);
        // Read while building: the log channel is bounded.
        let reader = tokio::spawn(async move {
            let mut log = Vec::new();
            while let Some(chunk) = rx.recv().await {
                log.extend(chunk);
            }
            log
        });
        let (a, b) = tokio::join!(
            venv(&envs, &base, &[], &installer, false, DAY, Some(&tx)),
            venv(&envs, &base, &[], &installer, false, DAY, Some(&tx))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        drop(tx);
        let log = reader.await.unwrap();
        let log = String::from_utf8_lossy(&log);
        assert_eq!(log.matches("building python env").count(), 1, "{log}");
        assert!(log.contains("reused (built by another job)"), "{log}");
        // A ready environment adds nothing to the log of the step that uses it.
        let (tx, mut rx) = tokio::sync::mpsc::channel(crate::logstream::CHANNEL_DEPTH);
        let again = venv(&envs, &base, &[], &installer, false, DAY, Some(&tx)).await;
        assert_eq!(again.unwrap(), a);
        drop(tx);
        assert_eq!(
            rx.recv().await,
            None,
            "a reused environment wrote to the log"
        );
        assert!(!envs.join(format!(".tmp-{k}-crashed")).exists());
        assert!(!envs.join(&k).join("half-built").exists());
        // What the installer wrote with the environment's path names where it is.
        let activate = std::fs::read_to_string(envs.join(&k).join("bin/activate")).unwrap();
        assert!(
            activate.contains(&envs.join(&k).display().to_string()),
            "{activate}"
        );
        let out = std::process::Command::new(envs.join(&k).join("bin/python"))
            .args(["-c", "import sys; print(sys.prefix != sys.base_prefix)"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True");
    }
}
