//! Per-job work directories, removed when the job is done unless the agent keeps them.

use drover_protocol::message::StepJob;
use std::path::{Path, PathBuf};

/// A fresh directory for one attempt; removed on drop unless `keep`.
pub struct Workdir {
    path: PathBuf,
    keep: bool,
}

impl Workdir {
    pub fn create(parent: &Path, job: &StepJob, keep: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let path = parent.join(format!(
            "{}-{}-{}-{suffix}",
            job.run_id, job.step, job.attempt
        ));
        std::fs::create_dir(&path)?;
        std::fs::create_dir(path.join("_tmp"))?;
        let path = path.canonicalize()?;
        Ok(Self { path, keep })
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
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove workdir {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use drover_protocol::message::{JobKind, JobSpec};
    use drover_protocol::{AttemptNo, RunId, StepName};

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
        }
    }

    #[test]
    fn removed_on_drop_unless_kept() {
        let parent = tempfile::tempdir().unwrap();
        let w = Workdir::create(parent.path(), &job(), false).unwrap();
        let p = w.path().to_path_buf();
        drop(w);
        assert!(!p.exists());
        let w = Workdir::create(parent.path(), &job(), true).unwrap();
        let p = w.path().to_path_buf();
        drop(w);
        assert!(p.exists());
    }

    #[test]
    fn outputs_cannot_escape() {
        let parent = tempfile::tempdir().unwrap();
        let w = Workdir::create(parent.path(), &job(), false).unwrap();
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
}
