//! `drover keygen`: a new Ed25519 key pair for signing step jobs.

use crate::cli::KeygenArgs;
use anyhow::{Context, Result};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::ExitCode;

pub fn keygen(args: &KeygenArgs) -> Result<ExitCode> {
    let (private, public) = drover_amqp::signing::generate()?;
    write_new(&args.private, &private, 0o600)?;
    if let Err(e) = write_new(&args.public, &public, 0o644) {
        // No half pair: the private key alone would only be confusing.
        let _ = std::fs::remove_file(&args.private);
        return Err(e);
    }
    println!(
        "wrote the private key to {} (for the controller: --job-signing-key; keep it mode 600) and the public key to {} (for agents: --job-verify-key)",
        args.private.display(),
        args.public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with `mode`; an existing file is an error, never overwritten.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never overwritten; remove it or choose another path)",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
