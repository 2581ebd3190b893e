//! One live agent per work dir: an advisory lock on `<work dir>/agent.lock`, held for the
//! agent's life, refuses a second agent instead of letting it kill the first one's steps as
//! orphans.

use anyhow::Context;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The held lock; released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub(crate) struct WorkDirLock {
    _file: File,
}

impl WorkDirLock {
    /// Takes the lock without waiting and writes this process's pid into it; fails naming the
    /// directory and the pid of the agent that holds it.
    pub fn take(work_dir: &Path) -> anyhow::Result<Self> {
        let path = work_dir.join("agent.lock");
        // Opened close-on-exec (std's default), so no step inherits the lock and outlives it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "unknown" } else { holder };
                anyhow::bail!(
                    "work dir {} is in use by another agent (pid {holder}); stop that agent or \
                     give this one its own --work-dir",
                    work_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkDirLock::take(dir.path()).unwrap();
        let err = WorkDirLock::take(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        drop(first);
        WorkDirLock::take(dir.path()).unwrap();
        assert!(dir.path().join("agent.lock").is_file());
    }
}
