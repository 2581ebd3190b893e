//! The agent's token goes to the configured controller only: a controller whose jobs name
//! another address (its `--public-url`, here a listener of the test recording what reaches it)
//! never gets the token sent there, and an agent with a token but no `--url` refuses to start.

use crate::harness::{Cluster, recording_server};
use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-agent-token-9d2e";

const PIPELINE: &str = r#"
[pipeline]
name = "token-destination"
project = "e2e"
[[step]]
name = "make"
command = ["sh", "-c", "echo payload > out.txt"]
outputs = { out = "out.txt" }
[[step]]
name = "use"
command = ["cat", "${make.out}"]
"#;

#[test]
fn the_token_never_goes_to_the_address_a_job_names() {
    let (elsewhere, heads) = recording_server(|_| {
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()
    });
    let mut c = Cluster::new().with_fixed_http();
    c.env.push(("DROVER_TOKEN".into(), TOKEN.into()));
    // Jobs carry the public URL: here the recording listener, not the controller.
    c.start_controller_with(&[
        "controller".into(),
        "--public-url".into(),
        elsewhere.clone(),
    ]);
    c.url = format!("http://{}", c.http);
    // The data dir the command created holds the token's work: this user's only.
    let mode = std::fs::metadata(c.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{}", c.data_dir().display());
    let run = c.submit(&c.pipeline("token.toml", PIPELINE));

    // Without --url the agent would have to trust the job's address: it refuses to start.
    let mut no_url = c
        .command()
        .env_remove("DROVER_URL")
        .args(["agent", "--queue", "default", "--python-env", "system"])
        .arg("--work-dir")
        .arg(c.dir.path().join("no-url"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = no_url.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = no_url.kill();
            let _ = no_url.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    no_url
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.is_some_and(|s| !s.success()) && stderr.contains("--url"),
        "an agent with a token and no --url must refuse to start ({status:?}): {stderr}\nreached {elsewhere}: {:?}",
        heads.lock().unwrap()
    );

    // With --url every transfer goes to the controller, whatever the jobs name.
    c.start_agent("with-url", &["default"]);
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), |d| {
        d["status"] != "running"
    });
    assert_eq!(
        doc["status"],
        "succeeded",
        "{doc}\n{}",
        c.process_log("with-url")
    );
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("authorization")),
        "the token went to {elsewhere}: {heads:?}"
    );
    assert!(
        heads.is_empty(),
        "nothing goes to the job's address: {heads:?}"
    );
}
