//! No drover process shows a secret in `/proc`: under `drover up --token ...` with cloud
//! credentials and an AMQP password in its environment, a command step and a Python function
//! step read the `cmdline` and `environ` of every drover process they can find (their parent,
//! the agent, and the waiting `drover run` among them) and find none of the secrets.

use crate::harness::{Cluster, text};

const TOKEN: &str = "e2e-proc-token-51f0c2";
const KEY_ID: &str = "AKIAE2EFAKEKEY51F0C2";
const SECRET_KEY: &str = "e2e-fake-aws-secret-51f0c2";
const SESSION: &str = "e2e-fake-aws-session-51f0c2";
const OTHER: &str = "e2e-fake-azure-secret-51f0c2";

/// Prints, for each process whose command line names drover, its command line and
/// environment, then the parent's PID.
const SCAN_SH: &str = r#"
for d in /proc/[0-9]*; do
  if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q 'drover'; then
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
        if "drover" not in cmdline:
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

fn pipeline() -> String {
    format!(
        "[pipeline]\nname = \"proc-secrets\"\n\
         [[step]]\nname = \"sh\"\ncommand = [\"sh\", \"-c\", {sh}]\n\
         [[step]]\nname = \"py\"\nfunction = {{ source = {py}, entry = \"scan\" }}\n",
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
    let file = c.pipeline("secrets.toml", &pipeline());
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let up = c.pid("up");
    for step in ["sh", "py"] {
        let log = text(&c.drover(&["logs", run["run_id"].as_str().unwrap(), step]));
        for secret in [TOKEN, KEY_ID, SECRET_KEY, SESSION, OTHER, "guest:guest@"] {
            assert!(!log.contains(secret), "{step} found {secret:?}:\n{log}");
        }
        // The scan saw the agent's own files: the steps' parent is `drover up`.
        assert!(log.contains(&format!("parent={up}")), "{step}:\n{log}");
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
