//! Steps as another user (`--run-as`): the agent's privileges for it, the directories that user
//! must reach, and handing each workdir over to it.
//!
//! The agent stays the owner of everything shared between steps (the Python environments, the
//! bundled SDK): the step's user can read and run them but not change what later steps import.

use crate::config::RunAs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Capabilities the agent needs (bits of `CapEff`): to chown workdirs to the user
/// (`CAP_CHOWN`), to read and remove what the step wrote (`CAP_DAC_OVERRIDE`), and to start the
/// step as the user (`CAP_SETGID`, `CAP_SETUID`).
const NEEDED: [(u32, &str); 4] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
];

/// Refuses `--run-as` without the privileges for it, for root, or when the user cannot reach
/// the agent's directories.
pub fn check(user: &RunAs, dirs: &[&Path]) -> anyhow::Result<()> {
    anyhow::ensure!(
        user.uid != 0,
        "--run-as {}: steps would run as root; name an unprivileged user",
        user.name
    );
    let status = std::fs::read_to_string("/proc/self/status")?;
    let missing = missing_capabilities(&status);
    anyhow::ensure!(
        missing.is_empty(),
        "--run-as {} needs the agent to run as root or with {}; it lacks {}",
        user.name,
        NEEDED.map(|(_, n)| n).join(", "),
        missing.join(", ")
    );
    for dir in dirs {
        if let Some(blocked) = unreachable_ancestor(dir, user) {
            anyhow::bail!(
                "--run-as {}: {} cannot reach {} ({} is mode {:o}); use a directory every \
                 parent of which others may enter (mode o+x)",
                user.name,
                user.name,
                dir.display(),
                blocked.0,
                blocked.1
            );
        }
    }
    Ok(())
}

/// The capabilities of [`NEEDED`] that `CapEff` in a `/proc/PID/status` text lacks.
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The first existing directory on the way to `dir` that `user` may not enter, with its mode.
fn unreachable_ancestor(dir: &Path, user: &RunAs) -> Option<(String, u32)> {
    let mut path = std::path::PathBuf::new();
    for part in dir.components() {
        path.push(part);
        let Ok(meta) = std::fs::metadata(&path) else {
            break;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let enters = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !enters {
            return Some((path.display().to_string(), mode));
        }
    }
    None
}

/// Makes `dir` and everything in it (inputs, the job file) the user's, so the step can write
/// there; symbolic links are changed themselves, never followed.
pub fn hand_over(dir: &Path, user: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            hand_over(&entry?.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> RunAs {
        RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        }
    }

    #[test]
    fn capabilities_are_read_from_cap_eff() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing_capabilities(root).is_empty());
        let plain = "CapEff:\t0000000000000000\n";
        assert_eq!(missing_capabilities(plain).len(), 4);
        let setuid_only = "CapEff:\t00000000000000c0\n";
        assert_eq!(
            missing_capabilities(setuid_only),
            ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]
        );
    }

    #[test]
    fn a_private_parent_blocks_the_user() {
        let root = tempfile::tempdir().unwrap();
        let inner = root.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o700)).unwrap();
        let (blocked, mode) = unreachable_ancestor(&inner, &nobody()).unwrap();
        assert_eq!(blocked, root.path().display().to_string());
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o711)).unwrap();
        // The temporary directory's own parents (/tmp) let others in.
        assert_eq!(
            unreachable_ancestor(root.path().parent().unwrap(), &nobody()),
            None
        );
        assert_eq!(unreachable_ancestor(&inner, &nobody()), None);
        assert!(check(&RunAs { uid: 0, ..nobody() }, &[]).is_err());
    }
}
