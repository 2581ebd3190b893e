//! Per-job work directories, removed when the job is done unless the agent keeps them.
//!
//! An emptied workdir is kept as a spare and renamed for the next job instead of creating two
//! directories per job and removing them after: on ext4 without a journal every new inode scans
//! the recently freed ones (`recently_deleted`), which made the two `mkdir`s of a `true` step
//! cost more CPU than anything else the agent did for it.

use drover_protocol::message::StepJob;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Spare workdirs kept at most: enough for the slots of a busy agent.
const MAX_SPARES: usize = 64;

/// A fresh directory for one attempt; removed on drop unless `keep`.
pub struct Workdir {
    path: PathBuf,
    keep: bool,
    spares: Arc<Spares>,
}

/// Emptied workdirs of one work dir (`<work dir>/_spare/`), each holding an empty `_tmp`.
pub struct Spares {
    dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    /// The agent's user: only its own directories are reused.
    uid: Option<u32>,
    /// The directory workdirs are made in, as given and resolved: resolved once, not for every
    /// job (a `readlink` a path component).
    parent: Mutex<Option<(PathBuf, PathBuf)>>,
}

impl Spares {
    /// Spares under `work_dir`; what a previous agent left there is removed.
    pub fn new(work_dir: &Path) -> Self {
        let dir = work_dir.join("_spare");
        let _ = std::fs::remove_dir_all(&dir);
        // Made once here; should it be missing, a spare cannot be kept and is removed instead.
        let _ = std::fs::create_dir_all(&dir);
        Spares {
            dir,
            free: Mutex::new(Vec::new()),
            uid: std::fs::metadata("/proc/self").ok().map(|m| m.uid()),
            parent: Mutex::new(None),
        }
    }

    /// `parent` with its symbolic links resolved, made first when missing.
    fn resolve(&self, parent: &Path) -> std::io::Result<PathBuf> {
        let mut known = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((given, resolved)) = &*known
            && given == parent
        {
            return Ok(resolved.clone());
        }
        std::fs::create_dir_all(parent)?;
        let resolved = parent.canonicalize()?;
        *known = Some((parent.to_path_buf(), resolved.clone()));
        Ok(resolved)
    }

    fn take(&self) -> Option<PathBuf> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keeps `path`, emptied, as a spare; false when it cannot (it is removed then).
    fn keep(&self, path: &Path) -> bool {
        if self.free.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_SPARES {
            return false;
        }
        let spare = self
            .dir
            .join(&uuid::Uuid::new_v4().simple().to_string()[..12]);
        let Some(uid) = self.uid else {
            return false;
        };
        let kept = empty(path, uid).and_then(|()| std::fs::rename(path, &spare));
        match kept {
            Ok(()) => {
                self.free
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(spare);
                true
            }
            Err(_) => false,
        }
    }
}

/// Empties a workdir as a new one is: nothing in it but an empty `_tmp`, both owned by the
/// agent with the modes they were made with. Fails for anything else (another owner, `_tmp`
/// not a directory), so that the workdir is removed instead.
fn empty(path: &Path, uid: u32) -> std::io::Result<()> {
    let tmp = path.join("_tmp");
    for dir in [path, tmp.as_path()] {
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() || meta.uid() != uid {
            return Err(std::io::Error::other("not the agent's directory"));
        }
        // A step may have taken the permission to list or write it away.
        if meta.mode() & 0o7777 != DIR_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if dir == path && entry.file_name() == "_tmp" {
                continue;
            }
            match entry.file_type()?.is_dir() {
                true => std::fs::remove_dir_all(entry.path())?,
                false => std::fs::remove_file(entry.path())?,
            }
        }
    }
    Ok(())
}

/// The mode a spare workdir and its `_tmp` are given back, as `mkdir` makes them under the
/// usual umask.
const DIR_MODE: u32 = 0o755;

impl Workdir {
    pub fn create(
        parent: &Path,
        job: &StepJob,
        keep: bool,
        spares: &Arc<Spares>,
    ) -> std::io::Result<Self> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let path = spares.resolve(parent)?.join(format!(
            "{}-{}-{}-{suffix}",
            job.run_id, job.step, job.attempt
        ));
        let reused = spares
            .take()
            .is_some_and(|spare| std::fs::rename(&spare, &path).is_ok());
        if !reused {
            match std::fs::create_dir(&path) {
                // The work dir was removed after it was resolved.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&path)?
                }
                made => made?,
            }
            std::fs::create_dir(path.join("_tmp"))?;
        }
        Ok(Self {
            path,
            keep,
            spares: spares.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves a declared output path, refusing anything that leaves the workdir.
    pub fn output_path(&self, relative: &str) -> Result<PathBuf, String> {
        let candidate = self.path.join(relative);
        let resolved = candidate
            .canonicalize()
            .map_err(|_| format!("not found at {relative:?}"))?;
        if !resolved.starts_with(&self.path) {
            return Err(format!("{relative:?} points outside the step's workdir"));
        }
        let meta = std::fs::metadata(&resolved).map_err(|e| format!("{relative:?}: {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "{relative:?} is not a regular file (archive a directory first)"
            ));
        }
        Ok(resolved)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            tracing::info!("keeping workdir {}", self.path.display());
        } else if !self.spares.keep(&self.path)
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!("cannot remove workdir {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use drover_protocol::message::{JobKind, JobSpec};
    use drover_protocol::{AttemptNo, RunId, StepName};
    use std::fs::Permissions;

    /// A minimal job, for tests of other modules too.
    pub(crate) fn job() -> StepJob {
        StepJob {
            run_id: RunId::generate(),
            step: StepName::new("s").unwrap(),
            attempt: AttemptNo(1),
            job: JobSpec {
                kind: JobKind::Command {
                    argv: vec!["true".into()],
                },
                env: Default::default(),
                inputs: vec![],
                outputs: Default::default(),
                timeout_ms: None,
                priority: 0,
            },
            controller_url: String::new(),
            lease_ms: 1000,
            artifact_store: None,
            epoch: 0,
            inline_outputs: 0,
            event_batches: false,
        }
    }

    fn spares(parent: &Path) -> Arc<Spares> {
        Arc::new(Spares::new(parent))
    }

    #[test]
    fn removed_on_drop_unless_kept() {
        let parent = tempfile::tempdir().unwrap();
        let spares = spares(parent.path());
        let w = Workdir::create(parent.path(), &job(), false, &spares).unwrap();
        let p = w.path().to_path_buf();
        drop(w);
        assert!(!p.exists());
        let w = Workdir::create(parent.path(), &job(), true, &spares).unwrap();
        let p = w.path().to_path_buf();
        drop(w);
        assert!(p.exists());
    }

    /// A workdir's path has no symbolic links (outputs are checked against it), and a work dir
    /// removed while the agent runs is made again.
    #[test]
    fn a_workdir_is_made_at_its_resolved_path() {
        let top = tempfile::tempdir().unwrap();
        let real = top.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let parent = link.join("work");
        let spares = spares(top.path());
        let w = Workdir::create(&parent, &job(), false, &spares).unwrap();
        let resolved = real.canonicalize().unwrap().join("work");
        assert_eq!(w.path().parent(), Some(resolved.as_path()));
        assert!(w.path().join("_tmp").is_dir());
        drop(w);
        std::fs::remove_dir_all(&real).unwrap();
        let w = Workdir::create(&parent, &job(), false, &spares).unwrap();
        assert_eq!(w.path().parent(), Some(resolved.as_path()));
        assert!(w.path().join("_tmp").is_dir());
    }

    #[test]
    fn outputs_cannot_escape() {
        let parent = tempfile::tempdir().unwrap();
        let w = Workdir::create(parent.path(), &job(), false, &spares(parent.path())).unwrap();
        std::fs::write(parent.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(parent.path().join("secret"), w.path().join("link")).unwrap();
        std::fs::write(w.path().join("ok.txt"), "x").unwrap();
        assert!(w.output_path("ok.txt").is_ok());
        assert!(w.output_path("link").unwrap_err().contains("outside"));
        assert!(
            w.output_path("missing.txt")
                .unwrap_err()
                .contains("not found")
        );
        assert!(
            w.output_path("_tmp")
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(w.output_path("../secret").unwrap_err().contains("outside"));
    }

    /// What a step leaves in its workdir is gone before the next job gets it, whatever it did
    /// to the directories' modes; a workdir that is not the agent's is removed, not reused.
    #[test]
    fn a_reused_workdir_is_as_empty_as_a_new_one() {
        let parent = tempfile::tempdir().unwrap();
        let spares = spares(parent.path());
        let w = Workdir::create(parent.path(), &job(), false, &spares).unwrap();
        let first = std::fs::metadata(w.path()).unwrap().ino();
        std::fs::create_dir_all(w.path().join("out/deep")).unwrap();
        std::fs::write(w.path().join("out/deep/f"), "x").unwrap();
        std::fs::write(w.path().join("_tmp/t"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", w.path().join("link")).unwrap();
        std::fs::set_permissions(w.path().join("_tmp"), Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(w.path(), Permissions::from_mode(0o500)).unwrap();
        drop(w);
        let w = Workdir::create(parent.path(), &job(), false, &spares).unwrap();
        assert_eq!(std::fs::metadata(w.path()).unwrap().ino(), first, "reused");
        let names = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(w.path()), ["_tmp"]);
        assert!(names(&w.path().join("_tmp")).is_empty());
        for dir in [w.path().to_path_buf(), w.path().join("_tmp")] {
            assert_eq!(std::fs::metadata(dir).unwrap().mode() & 0o7777, DIR_MODE);
        }
        assert!(
            std::fs::metadata("/etc").is_ok(),
            "a link is removed, not followed"
        );
        // `_tmp` replaced by a file: not a workdir as the agent makes them.
        std::fs::remove_dir(w.path().join("_tmp")).unwrap();
        std::fs::write(w.path().join("_tmp"), "x").unwrap();
        let p = w.path().to_path_buf();
        drop(w);
        assert!(!p.exists());
        assert!(spares.take().is_none(), "removed, not kept as a spare");
    }
}
