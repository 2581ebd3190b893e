//! Paths a step names over its channel, kept inside its workdir, and where the channel's
//! socket goes.

use drover_api::{ApiError, ErrorCode};
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

/// The longest socket path used (the kernel's limit is 107 bytes).
pub const MAX_SOCKET_PATH: usize = 100;

fn forbidden(requested: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("{requested:?} {why}: a step may only name files inside its workdir"),
    )
}

/// `requested` (relative to the workdir, or absolute) joined to `root`, refusing `..`.
fn lexical(root: &Path, requested: &str) -> Result<PathBuf, ApiError> {
    if requested.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "the path is empty"));
    }
    let path = root.join(requested);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(forbidden(requested, "contains '..'"));
    }
    if !path.starts_with(root) {
        return Err(forbidden(requested, "is outside the workdir"));
    }
    Ok(path)
}

/// `path` with symlinks resolved, if that is still inside `root`.
fn resolved_inside(root: &Path, path: &Path, requested: &str) -> Result<PathBuf, ApiError> {
    let real = path.canonicalize().map_err(|e| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("cannot resolve {requested:?}: {e}"),
        )
    })?;
    if !real.starts_with(root) {
        return Err(forbidden(requested, "leads outside the workdir"));
    }
    Ok(real)
}

/// A regular file inside the workdir `root` (canonical), to read.
pub fn existing_file(root: &Path, requested: &str) -> Result<PathBuf, ApiError> {
    let path = lexical(root, requested)?;
    let real = resolved_inside(root, &path, requested)?;
    if !real.is_file() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{requested:?} is not a regular file"),
        ));
    }
    Ok(real)
}

/// Where to write `requested` inside the workdir `root` (canonical); creates its parent
/// directories. The file itself is replaced (a symlink in its place is replaced, not followed).
pub fn destination(root: &Path, requested: &str) -> Result<PathBuf, ApiError> {
    let path = lexical(root, requested)?;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{requested:?} names no file"),
        ));
    };
    if path == root {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{requested:?} is the workdir itself"),
        ));
    }
    // The deepest existing ancestor decides where the new directories end up.
    let mut existing = parent;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    resolved_inside(root, existing, requested)?;
    std::fs::create_dir_all(parent).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("cannot create the directories of {requested:?}: {e}"),
        )
    })?;
    let parent = resolved_inside(root, parent, requested)?;
    Ok(parent.join(name))
}

/// The socket for the attempt whose workdir is `workdir`: `<workdir>/.drover.sock` when that
/// is short enough for a socket address, else `<work_dir>/ch/<hash>.sock`, else
/// `/tmp/drover-<uid>/<hash>.sock`; both directories are the agent's own, mode 0700.
pub fn socket_path(workdir: &Path, work_dir: &Path) -> std::io::Result<PathBuf> {
    let own = workdir.join(".drover.sock");
    if fits(&own) {
        return Ok(own);
    }
    let hash = hex::encode(&Sha256::digest(workdir.as_os_str().as_encoded_bytes())[..8]);
    let name = format!("{hash}.sock");
    let uid = std::fs::metadata(work_dir)?.uid();
    for dir in [
        work_dir.join("ch"),
        PathBuf::from(format!("/tmp/drover-{uid}")),
    ] {
        if fits(&dir.join(&name)) {
            private_dir(&dir, uid)?;
            return Ok(dir.join(name));
        }
    }
    Err(std::io::Error::other(format!(
        "no socket path of at most {MAX_SOCKET_PATH} bytes for {}: use a shorter --work-dir",
        workdir.display()
    )))
}

fn fits(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_SOCKET_PATH
}

/// Creates `dir` mode 0700, or checks that the existing one is `uid`'s and private.
fn private_dir(dir: &Path, uid: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ));
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of uid {uid} (mode 0700): remove it or use a shorter --work-dir",
            dir.display()
        )));
    }
    Ok(())
}
