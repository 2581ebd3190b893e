//! The drover SDK and the step harness, bundled into the binary and written out once per content.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod files {
    include!(concat!(env!("OUT_DIR"), "/bundle.rs"));
}

/// The harness's file name inside a bundle directory.
pub const HARNESS: &str = "drover_harness.py";

/// A short digest of everything bundled: bundles of different builds never overwrite each other.
/// Computed once per process (the files are part of the binary), not for every Python step.
fn digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let mut hash = Sha256::new();
        for (name, text) in files::FILES {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(text.as_bytes());
            hash.update([0]);
        }
        hex::encode(hash.finalize())[..16].to_string()
    })
}

/// Writes the bundle under `<root>/bundle/<digest>` unless it is there, and returns that directory.
///
/// It is written to a temporary directory and renamed into place, so a reader never sees half of
/// it; when two writers race, the loser's copy is discarded.
pub fn materialize(root: &Path) -> std::io::Result<PathBuf> {
    let parent = root.join("bundle");
    let dir = parent.join(digest());
    if dir.join(HARNESS).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&parent)?;
    for (name, text) in files::FILES {
        let path = tmp.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, text)?;
    }
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join(HARNESS).is_file() {
            return Err(e);
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_harness_and_the_sdk_package() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialize(root.path()).unwrap();
        assert!(dir.join(HARNESS).is_file());
        assert!(dir.join("drover/__init__.py").is_file());
        assert!(dir.join("drover/automation/controller.py").is_file());
        assert_eq!(materialize(root.path()).unwrap(), dir, "written once");
    }
}
