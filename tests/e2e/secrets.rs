//! No drover process shows a secret in `/proc`: under `drover up --token ...` with cloud
//! credentials and an AMQP password in its environment, a command step and a Python function
//! step read the `cmdline` and `environ` of every process of this test running the drover
//! binary (their parent, the agent, and the waiting `drover run` among them) and find none of
//! the secrets.

use crate::harness::{Cluster, text};

const TOKEN: &str = "e2e-proc-token-51f0c2";
const KEY_ID: &str = "AKIAE2EFAKEKEY51F0C2";
const SECRET_KEY: &str = "e2e-fake-aws-secret-51f0c2";
const SESSION: &str = "e2e-fake-aws-session-51f0c2";
const OTHER: &str = "e2e-fake-azure-secret-51f0c2";

/// Prints, for each process running the drover binary under test (`$DROVER_BIN`; other builds
/// may run on the same machine) in this test's directory (`$CLUSTER_DIR`, where the harness
/// starts every process of the cluster; other tests run theirs in parallel), its command line
/// and environment, then the parent's PID.
const SCAN_SH: &str = r#"
for d in /proc/[0-9]*; do
  if [ "$(readlink "$d/exe")" = "$DROVER_BIN" ] && [ "$(readlink "$d/cwd")" = "$CLUSTER_DIR" ]; then
    echo "== $d"
    tr '\0' ' ' < "$d/cmdline"; echo
    tr '\0' '\n' < "$d/environ" 2>&1
  fi
done
echo "parent=$PPID"
"#;

const SCAN_PY: &str = r#"
def scan():
    import os
    for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            if os.readlink(f"/proc/{pid}/exe") != os.environ["DROVER_BIN"]:
                continue
            if os.readlink(f"/proc/{pid}/cwd") != os.environ["CLUSTER_DIR"]:
                continue
        except OSError:
            continue
        print(f"== /proc/{pid}")
        print(cmdline)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                print(f.read().replace(b"\0", b"\n").decode(errors="replace"))
        except OSError as e:
            print(f"environ: {e}")
    print(f"parent={os.getppid()}")
"#;

fn pipeline(dir: &std::path::Path) -> String {
    let bin = std::fs::canonicalize(crate::harness::drover_bin()).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    let env = format!(
        "env = {{ DROVER_BIN = {}, CLUSTER_DIR = {} }}\n",
        toml_string(&bin.display().to_string()),
        toml_string(&dir.display().to_string())
    );
    format!(
        "[pipeline]\nname = \"proc-secrets\"\n\
         [[step]]\nname = \"sh\"\ncommand = [\"sh\", \"-c\", {sh}]\n{env}\
         [[step]]\nname = \"py\"\nfunction = {{ source = {py}, entry = \"scan\" }}\n{env}\
         [[step]]\nname = \"py_cold\"\nfunction = {{ source = {py}, entry = \"scan\", prewarm = false }}\n{env}",
        sh = toml_string(SCAN_SH),
        py = toml_string(SCAN_PY),
    )
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn steps_find_no_secret_in_the_proc_files_of_drover_processes() {
    let mut c = Cluster::new();
    c.env.extend(
        [
            ("DROVER_TOKEN", TOKEN),
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", SESSION),
            ("AZURE_CLIENT_SECRET", OTHER),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    // The token on the command line as well: the case the docs advise against.
    c.start_up(
        1,
        &["default"],
        &["--token", TOKEN, "--python-env", "system"],
    );
    let file = c.pipeline("secrets.toml", &pipeline(c.dir.path()));
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let up = c.pid("up");
    for step in ["sh", "py", "py_cold"] {
        let log = text(&c.drover(&["logs", run["run_id"].as_str().unwrap(), step]));
        for secret in [TOKEN, KEY_ID, SECRET_KEY, SESSION, OTHER, "guest:guest@"] {
            assert!(!log.contains(secret), "{step} found {secret:?}:\n{log}");
        }
        // The scan saw the agent's own files: the steps' parent is `drover up` (the warm `py`'s
        // is its warm parent, whose files the scan read too).
        if step != "py" {
            assert!(log.contains(&format!("parent={up}")), "{step}:\n{log}");
        }
        let own = log
            .split("== ")
            .find(|block| block.starts_with(&format!("/proc/{up}\n")))
            .unwrap_or_else(|| panic!("{step} did not find drover up ({up}):\n{log}"));
        assert!(own.contains(" up "), "{step}:\n{own}");
    }
    // The restarted processes kept the token: `drover run` above was let in, one without the
    // token is not.
    let refused = c
        .command()
        .env_remove("DROVER_TOKEN")
        .args(["runs"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{}", text(&refused));
}

/// Non-dumpable: another process of the same user cannot open a drover process's `environ`
/// at all, while it can open that of any other process of the user. Both run as `nobody`, so
/// root's privileges play no part.
#[test]
fn other_processes_of_the_same_user_cannot_open_a_drover_processs_environ() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run processes as nobody; not tested");
        return;
    }
    // A controller that accepts and never answers keeps `drover wait` waiting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.incoming().take(4).flatten().collect::<Vec<_>>());
    let as_nobody = |cmd: &mut Command| {
        cmd.uid(65534)
            .gid(65534)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut drover = Command::new(crate::harness::drover_bin());
    drover
        .args(["--url", &url, "wait", "01890a5dac96774bbcceb302099a8057"])
        .env("DROVER_TOKEN", TOKEN);
    as_nobody(&mut drover);
    let mut drover = drover.spawn().unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60");
    as_nobody(&mut sleeper);
    let mut sleeper = sleeper.spawn().unwrap();
    let read = |pid: u32| {
        let mut cat = Command::new("cat");
        cat.arg(format!("/proc/{pid}/environ"));
        as_nobody(&mut cat);
        cat.status().unwrap().success()
    };
    // Wait until drover has restarted and is waiting on the silent controller, and its restarted
    // process has marked itself non-dumpable: the kernel then gives its `/proc/PID` files to
    // root. Just after the restart's exec, before `main` runs, it is still dumpable.
    crate::harness::wait_until("drover waiting", std::time::Duration::from_secs(10), || {
        use std::os::unix::fs::MetadataExt;
        let environ = format!("/proc/{}/environ", drover.id());
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", drover.id())).unwrap_or_default();
        let restarted = std::fs::read(&environ)
            .unwrap_or_default()
            .windows(23)
            .any(|w| w == b"DROVER_SECRETS_ON_STDIN");
        let sealed = std::fs::metadata(&environ).is_ok_and(|m| m.uid() == 0);
        if restarted && sealed && cmdline.windows(4).any(|w| w == b"wait") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&cmdline).into_owned())
        }
    });
    let drover_readable = read(drover.id());
    let sleeper_readable = read(sleeper.id());
    let _ = drover.kill();
    let _ = sleeper.kill();
    let _ = drover.wait();
    let _ = sleeper.wait();
    drop(held);
    assert!(
        sleeper_readable,
        "nobody cannot read its own sleep's environ"
    );
    assert!(
        !drover_readable,
        "nobody read the environ of its drover process"
    );
}
