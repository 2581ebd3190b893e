//! Chooses what builds environments: the `uv` on `PATH`, else a pinned `uv` release installed
//! once under the agent's Python root from the package index pip is configured with (the
//! wheel's sha256 checked against [`WHEELS`]), else venv and pip, which is much slower.
//!
//! The wheel is fetched with `pip download` of the agent's base interpreter, so the index,
//! proxies and certificates of pip's own configuration apply; the install lives in
//! `<root>/tools/uv-<VERSION>/bin/uv`, built in a temporary directory under a lock and renamed
//! into place, so concurrent agents on one root install it once and a crash leaves nothing used.

use super::build::{Installer, installer_command, lock_exclusive, on_path_of};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `uv` release installed when none is on `PATH`.
pub const VERSION: &str = "0.13.9";

/// The sha256 of every Linux wheel of [`VERSION`] pip may choose on the platforms agents run
/// on (x86-64 and arm64, glibc and musl), as published on PyPI.
const WHEELS: &[(&str, &str)] = &[
    (
        "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    (
        "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
        "2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25",
    ),
    (
        "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
        "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375",
    ),
    (
        "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
];

/// How long fetching and unpacking the wheel may take.
const INSTALL_PATIENCE: Duration = Duration::from_secs(300);

/// What builds environments, and a sentence saying why (for the agent's log).
#[derive(Debug, Clone)]
pub struct Choice {
    pub installer: Installer,
    pub why: String,
    /// The choice in a few words, then why: `uv on PATH: /usr/bin/uv` (the agent's
    /// registration and `drover agents` show it).
    pub summary: String,
}

fn on_path(uv: PathBuf) -> Choice {
    Choice {
        why: format!("environments are built with {} (on PATH)", uv.display()),
        summary: format!("uv on PATH: {}", uv.display()),
        installer: Installer::Uv(uv),
    }
}

/// The pinned `uv` at `uv`, installed `when` (`earlier`, `now`).
fn pinned(uv: PathBuf, when: &str) -> Choice {
    Choice {
        why: format!(
            "environments are built with uv {VERSION} installed at {} {when} from the package index (no uv on PATH)",
            uv.display()
        ),
        summary: format!(
            "uv {VERSION} installed: no uv on PATH, so {} was installed {when} from the package index",
            uv.display()
        ),
        installer: Installer::Uv(uv),
    }
}

/// What [`choose`] would choose under `root` with `search` as `PATH`, without installing
/// anything (for `drover config show`).
pub fn foresee(root: &Path, search: Option<&std::ffi::OsStr>) -> String {
    if let Some(uv) = search.and_then(|p| on_path_of(p, "uv")) {
        return on_path(uv).summary;
    }
    let target = installed_path(root);
    if target.is_file() {
        return pinned(target, "earlier").summary;
    }
    format!(
        "uv {VERSION} to be installed: no uv on PATH, so the agent installs {} from the package index when it starts (venv and pip if that fails)",
        target.display()
    )
}

/// Where the pinned `uv` is installed under `root`.
pub fn installed_path(root: &Path) -> PathBuf {
    root.join("tools")
        .join(format!("uv-{VERSION}"))
        .join("bin")
        .join("uv")
}

/// `uv` from `search` (a `PATH` value), else the pinned one under `root` (installed now when
/// missing, with `base_python`'s pip), else pip.
pub async fn choose(root: &Path, base_python: &str, search: Option<OsString>) -> Choice {
    if let Some(uv) = search.as_deref().and_then(|p| on_path_of(p, "uv")) {
        return on_path(uv);
    }
    let target = installed_path(root);
    if target.is_file() {
        return pinned(target, "earlier");
    }
    match tokio::time::timeout(INSTALL_PATIENCE, install(root, base_python)).await {
        Ok(Ok(uv)) => pinned(uv, "now"),
        Ok(Err(e)) => pip(&e),
        Err(_) => pip(&format!(
            "it took longer than {}",
            humantime::format_duration(INSTALL_PATIENCE)
        )),
    }
}

fn pip(why: &str) -> Choice {
    Choice {
        installer: Installer::Pip,
        summary: format!(
            "pip: no uv on PATH and uv {VERSION} could not be installed from the package index ({why})"
        ),
        why: format!(
            "environments are built with venv and pip, which is much slower than uv: there is no \
             uv on PATH and uv {VERSION} could not be installed ({why}); put uv on the agent's \
             PATH or make the package index reachable"
        ),
    }
}

/// Installs the pinned `uv` under `root` unless another agent did meanwhile.
async fn install(root: &Path, base_python: &str) -> Result<PathBuf, String> {
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools)
        .map_err(|e| format!("cannot create {}: {e}", tools.display()))?;
    let lock = lock_exclusive(tools.join(format!("uv-{VERSION}.lock")))
        .await
        .map_err(|e| format!("cannot lock {}: {e}", tools.display()))?;
    let target = installed_path(root);
    if target.is_file() {
        return Ok(target);
    }
    // What a crashed install left: a partial directory, temporary directories.
    let dir = tools.join(format!("uv-{VERSION}"));
    let _ = std::fs::remove_dir_all(&dir);
    let leftover = format!(".tmp-uv-{VERSION}-");
    for entry in std::fs::read_dir(&tools).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&leftover) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-uv-{VERSION}-"))
        .tempdir_in(&tools)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory in {}: {e}",
                tools.display()
            )
        })?;
    let wheel = download(base_python, tmp.path()).await?;
    check_hash(&wheel)?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    let uv = bin.join("uv");
    unpack(base_python, &wheel, &uv).await?;
    let _ = std::fs::remove_file(&wheel);
    let version = output(&[uv.display().to_string(), "--version".into()]).await?;
    if !version.contains(VERSION) {
        return Err(format!(
            "the unpacked uv reports {version:?}, not {VERSION}"
        ));
    }
    let built = tmp.keep();
    std::fs::rename(&built, &dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&built);
        format!("cannot move uv into {}: {e}", dir.display())
    })?;
    drop(lock);
    Ok(target)
}

/// The wheel `pip download` chose for this machine, in `dir`.
async fn download(base_python: &str, dir: &Path) -> Result<PathBuf, String> {
    output(&[
        base_python.to_string(),
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--quiet".into(),
        "--disable-pip-version-check".into(),
        "--no-deps".into(),
        "--only-binary=:all:".into(),
        "--dest".into(),
        dir.display().to_string(),
        format!("uv=={VERSION}"),
    ])
    .await?;
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "pip download left {} wheels instead of one",
            wheels.len()
        )),
    }
}

/// Refuses a wheel whose name or sha256 is not pinned in [`WHEELS`].
fn check_hash(wheel: &Path) -> Result<(), String> {
    let name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((_, pinned)) = WHEELS.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "the package index offered {name}, which has no pinned sha256 (this platform has no pinned uv wheel)"
        ));
    };
    let bytes = std::fs::read(wheel).map_err(|e| format!("cannot read {name}: {e}"))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != *pinned {
        return Err(format!(
            "{name} from the package index has sha256 {got}, not the pinned {pinned}"
        ));
    }
    Ok(())
}

/// Copies the `uv` executable out of the wheel (a zip) to `to`, executable.
async fn unpack(base_python: &str, wheel: &Path, to: &Path) -> Result<(), String> {
    const UNZIP: &str = "import sys, zipfile\n\
        data = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2])\n\
        open(sys.argv[3], 'wb').write(data)\n";
    output(&[
        base_python.to_string(),
        "-c".into(),
        UNZIP.into(),
        wheel.display().to_string(),
        format!("uv-{VERSION}.data/scripts/uv"),
        to.display().to_string(),
    ])
    .await?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", to.display()))
}

/// Runs a command with the installers' environment; its standard output, or an error with its
/// standard error.
async fn output(argv: &[String]) -> Result<String, String> {
    let out = installer_command(argv)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv[..argv.len().min(4)].join(" "),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last few hundred bytes of a command's error output.
fn tail(text: &str) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(600);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_with_another_hash_or_no_pinned_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = dir.path().join(WHEELS[0].0);
        std::fs::write(&pinned, b"not the wheel").unwrap();
        let err = check_hash(&pinned).unwrap_err();
        assert!(err.contains("not the pinned"), "{err}");
        let unknown = dir.path().join("uv-0.13.9-py3-none-win_amd64.whl");
        std::fs::write(&unknown, b"x").unwrap();
        let err = check_hash(&unknown).unwrap_err();
        assert!(err.contains("no pinned sha256"), "{err}");
    }

    #[test]
    fn every_pinned_wheel_is_of_the_pinned_version() {
        for (name, hash) in WHEELS {
            assert!(name.starts_with(&format!("uv-{VERSION}-")), "{name}");
            assert_eq!(hash.len(), 64, "{name}");
        }
    }

    #[tokio::test]
    async fn uv_on_the_search_path_is_chosen_without_installing() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("uv"), b"#!/bin/sh\n").unwrap();
        let root = dir.path().join("root");
        let chosen = choose(&root, "python3", Some(bin.clone().into_os_string())).await;
        assert_eq!(chosen.installer, Installer::Uv(bin.join("uv")));
        assert_eq!(
            chosen.summary,
            format!("uv on PATH: {}", bin.join("uv").display())
        );
        assert_eq!(foresee(&root, Some(bin.as_os_str())), chosen.summary);
        assert!(!root.exists(), "something was installed");
    }

    #[tokio::test]
    async fn without_uv_nor_a_working_pip_environments_use_pip_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let chosen = choose(dir.path(), "/nonexistent/python3", Some(OsString::new())).await;
        assert_eq!(chosen.installer, Installer::Pip);
        assert!(
            chosen.why.contains("cannot run /nonexistent/python3"),
            "{}",
            chosen.why
        );
        assert!(
            chosen.summary.starts_with("pip: no uv on PATH")
                && chosen.summary.contains("cannot run /nonexistent/python3"),
            "{}",
            chosen.summary
        );
        assert!(!installed_path(dir.path()).exists());
        let foreseen = foresee(dir.path(), Some(std::ffi::OsStr::new("")));
        assert!(
            foreseen.starts_with("uv 0.13.9 to be installed"),
            "{foreseen}"
        );
        std::fs::create_dir_all(installed_path(dir.path()).parent().unwrap()).unwrap();
        std::fs::write(installed_path(dir.path()), b"").unwrap();
        let foreseen = foresee(dir.path(), Some(std::ffi::OsStr::new("")));
        assert!(foreseen.starts_with("uv 0.13.9 installed: "), "{foreseen}");
    }
}
