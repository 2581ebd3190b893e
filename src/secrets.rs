//! Keeps secrets out of what other processes can read in `/proc/PID/environ` and `cmdline`.
//!
//! Linux shows a process's environment and arguments as they were at `exec`; changing them
//! later does not change what `/proc` shows. So when drover starts with a secret in either, it
//! restarts itself (same PID) without them: the secrets go into a pipe that becomes the new
//! image's standard input, the new image reads them back and puts `/dev/null` in its place. Every
//! drover process also marks itself non-dumpable, which makes its `/proc/PID/environ`, `mem` and
//! `fd` unreadable to other processes of the same user (steps included), and stops core dumps.
//!
//! Secrets are the values of [`SECRET_FLAGS`] and of the variables in [`HANDED_ENV`], which
//! drover uses and gets back after the restart, and any variable [`dropped`] names, which drover
//! does not use and leaves out.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

/// Set in the restarted image: its standard input holds the secrets.
pub const HANDOVER_VAR: &str = "DROVER_SECRETS_ON_STDIN";

/// Flags whose values are secrets (the AMQP URL may hold a password).
pub const SECRET_FLAGS: &[&str] = &["--token", "--read-token", "--amqp"];

/// Variables drover reads that hold secrets: taken out of the environment and handed over.
pub const HANDED_ENV: &[&str] = &[
    "DROVER_TOKEN",
    "DROVER_READ_TOKEN",
    "DROVER_AMQP_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Whether a variable drover does not read looks like a secret, so it is dropped at the
/// restart: cloud keys (`AZURE_CLIENT_SECRET`, `AWS_SECURITY_TOKEN`, `GITHUB_TOKEN`, ...),
/// passwords and private keys.
pub fn dropped(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "ACCOUNT_KEY",
        "API_KEY",
        "SAS_TOKEN",
        "CONNECTION_STRING",
    ]
    .iter()
    .any(|part| upper.contains(part))
        || upper.ends_with("_TOKEN")
}

/// What the restart carries: the original arguments and the handed-over variables.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Block {
    argv: Vec<Vec<u8>>,
    env: BTreeMap<String, String>,
}

/// The process's arguments (secrets included, in memory only) and the handed-over variables.
#[derive(Debug, Default)]
pub struct Restored {
    pub args: Vec<OsString>,
    pub env: BTreeMap<String, String>,
}

static AWS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The handed-over AWS credentials as `object_store` settings (`aws_secret_access_key`, ...):
/// they are no longer in the environment, where the S3 client would look for them.
pub fn aws_settings() -> Vec<(String, String)> {
    AWS.get().cloned().unwrap_or_default()
}

/// Called first in `main`: marks the process non-dumpable, and restarts it without secrets in
/// its arguments and environment if it has any (this call then does not return). In the
/// restarted image, returns the secrets read back.
pub fn protect() -> Result<Restored> {
    nix::sys::prctl::set_dumpable(false).context("cannot mark the process non-dumpable")?;
    let restored = if std::env::var_os(HANDOVER_VAR).is_some() {
        read_back()?
    } else {
        let args: Vec<OsString> = std::env::args_os().collect();
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let plan = plan(&args, &env);
        if plan.needed {
            restart(plan)?;
        }
        Restored {
            args,
            env: BTreeMap::new(),
        }
    };
    let aws = [
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ]
    .iter()
    .filter_map(|(var, key)| Some((key.to_string(), restored.env.get(*var)?.clone())))
    .collect();
    let _ = AWS.set(aws);
    Ok(restored)
}

/// How to restart: the arguments and environment without secrets, and what to hand over.
#[derive(Debug)]
struct Plan {
    needed: bool,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    block: Block,
}

fn plan(args: &[OsString], env: &[(OsString, OsString)]) -> Plan {
    let mut needed = false;
    let mut argv = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg == b"--" {
            argv.extend(args[i..].iter().cloned());
            break;
        }
        if i > 0 && SECRET_FLAGS.iter().any(|f| arg == f.as_bytes()) && i + 1 < args.len() {
            needed = true;
            i += 2;
            continue;
        }
        if i > 0
            && SECRET_FLAGS
                .iter()
                .any(|f| arg.starts_with(f.as_bytes()) && arg.get(f.len()) == Some(&b'='))
        {
            needed = true;
            i += 1;
            continue;
        }
        argv.push(args[i].clone());
        i += 1;
    }
    let mut kept = Vec::new();
    let mut handed = BTreeMap::new();
    for (name, value) in env {
        let text = name.to_string_lossy();
        if HANDED_ENV.contains(&text.as_ref()) {
            needed = true;
            if let Some(v) = value.to_str() {
                handed.insert(text.into_owned(), v.to_string());
            }
        } else if dropped(&text) {
            needed = true;
        } else {
            kept.push((name.clone(), value.clone()));
        }
    }
    Plan {
        needed,
        argv,
        env: kept,
        block: Block {
            argv: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: handed,
        },
    }
}

/// Execs this program again with the secrets on a pipe as standard input; returns only on
/// failure.
fn restart(plan: Plan) -> Result<()> {
    let data = serde_json::to_vec(&plan.block)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot create a pipe for the secrets")?;
    let mut write = std::fs::File::from(write);
    // A pipe holds 64 KiB: the arguments and a few variables fit, so this never blocks.
    anyhow::ensure!(
        data.len() < 60_000,
        "the command line and secret variables are too long ({} bytes) to hand over",
        data.len()
    );
    write.write_all(&data)?;
    drop(write);
    nix::unistd::dup2_stdin(&read).context("cannot hand the secrets over")?;
    drop(read);
    // The running binary itself, even if its file was replaced or removed since it started.
    let exe = std::path::Path::new("/proc/self/exe");
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = plan.argv.first() {
        command.arg0(arg0);
    }
    let err = command
        .args(plan.argv.iter().skip(1))
        .env_clear()
        .envs(plan.env)
        .env(HANDOVER_VAR, "1")
        .exec();
    bail!(
        "cannot restart {} without secrets in its arguments and environment: {err}",
        exe.display()
    )
}

/// Reads the handed-over block from standard input and puts `/dev/null` in its place.
fn read_back() -> Result<Restored> {
    use std::os::unix::fs::FileTypeExt;
    // Only a restart gives standard input as a pipe with the variable set; anything else (the
    // variable inherited by mistake, a terminal) is refused rather than read.
    let is_pipe = std::fs::metadata("/proc/self/fd/0").is_ok_and(|m| m.file_type().is_fifo());
    anyhow::ensure!(
        is_pipe,
        "{HANDOVER_VAR} is set but standard input is not the pipe a restart passes: unset it"
    );
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut data)
        .context("cannot read the handed-over secrets")?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    let block: Block =
        serde_json::from_slice(&data).context("the handed-over secrets are not readable")?;
    Ok(Restored {
        args: block.argv.into_iter().map(OsString::from_vec).collect(),
        env: block.env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn secret_flags_and_variables_are_planned_out() {
        let args = os(&[
            "drover",
            "--token",
            "T1",
            "up",
            "--read-token=R1",
            "--amqp=amqp://u:p@h",
            "--agents",
            "2",
        ]);
        let env = vec![
            ("PATH".into(), "/bin".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "S1".into()),
            ("GITHUB_TOKEN".into(), "G1".into()),
            ("AWS_REGION".into(), "eu-west-1".into()),
        ];
        let plan = plan(&args, &env);
        assert!(plan.needed);
        assert_eq!(plan.argv, os(&["drover", "up", "--agents", "2"]));
        let kept: Vec<_> = plan.env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(kept, ["PATH", "AWS_REGION"]);
        assert_eq!(plan.block.argv.len(), args.len());
        assert_eq!(
            plan.block.env,
            BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), "S1".into())])
        );
    }

    #[test]
    fn nothing_secret_means_no_restart() {
        let args = os(&["drover", "runs", "--tokens-are-not-this-flag"]);
        let env = vec![
            ("PATH".into(), "/bin".into()),
            ("DROVER_TOKEN_FILE".into(), "/etc/t".into()),
        ];
        assert!(!plan(&args, &env).needed);
        // A flag's name as a value after `--`, or as the program name, is not a flag.
        assert!(!plan(&os(&["--token", "x", "--", "--token", "y"]), &[]).needed);
    }

    #[test]
    fn secret_looking_names() {
        for name in [
            "AZURE_CLIENT_SECRET",
            "GITHUB_TOKEN",
            "AWS_SECURITY_TOKEN",
            "PGPASSWORD",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "OPENAI_API_KEY",
            "AZURE_STORAGE_CONNECTION_STRING",
        ] {
            assert!(dropped(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "DROVER_TOKEN_FILE",
            "AWS_REGION",
            "TOKENIZERS_PARALLELISM",
        ] {
            assert!(!dropped(name), "{name}");
        }
    }
}
