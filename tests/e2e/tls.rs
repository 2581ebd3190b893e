//! AMQP over TLS as the deployment guide describes it: an `amqps://` URL, and the broker's
//! certificate trusted through `SSL_CERT_FILE`. A small Python TLS front forwards to the shared
//! broker, whose own configuration stays untouched.

use crate::harness::{AMQP_URL, Cluster, text};
use drover_test_support::{ChildProcess, Deadline};
use std::process::Command;
use std::time::Duration;

/// A private CA and a certificate it signed for `localhost`, in `dir`: (CA cert, cert, key).
/// (A lone self-signed certificate is refused: it is a CA used as an end entity.)
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    let days = ["-days", "1"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=drover test CA",
            ][..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &days,
        ]
        .concat(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "req.pem",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write leaf.ext");
    openssl(
        &[
            &[
                "x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key",
            ][..],
            &[
                "-CAcreateserial",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ],
            &days,
        ]
        .concat(),
    );
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// The TLS front (killed on drop) and the port it prints once it listens.
fn start_front(dir: &std::path::Path, cert: &str, key: &str) -> (ChildProcess, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/tls_proxy.py");
    let mut cmd = Command::new("python3");
    cmd.args([script, cert, key]);
    let mut front = ChildProcess::spawn("tls front", cmd, &dir.join("tls-front.log"))
        .expect("start the TLS front");
    let port = front
        .wait_for_line(
            Deadline::new("the TLS front's port", Duration::from_secs(30)),
            |line| line.trim().parse().ok(),
        )
        .unwrap();
    (front, port)
}

#[test]
fn a_pipeline_runs_over_amqps_with_the_ca_from_ssl_cert_file() {
    let mut c = Cluster::new();
    let (ca, cert, key) = certificates(c.dir.path());
    let (_front, port) = start_front(c.dir.path(), &cert, &key);
    c.amqp = format!("amqps://guest:guest@localhost:{port}/%2f");
    c.env.push(("SSL_CERT_FILE".into(), ca));
    c.start_up(1, &["default"], &[]);
    let file = c.pipeline(
        "hello.toml",
        "[pipeline]\nname = \"tls\"\n[[step]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"echo over tls\"]\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        c.process_log("up")
    );
    assert_eq!(run["status"], "succeeded", "{run}");

    // Without the certificate the broker is not trusted: the CLI's publish fails.
    let mut untrusted = c.command();
    untrusted.env_remove("SSL_CERT_FILE");
    let out = untrusted
        .args(["run", file.to_str().unwrap()])
        .output()
        .expect("run drover");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("cert") || stderr.contains("tls"),
        "{stderr}"
    );

    // Clean the namespace up over plain AMQP: this test process has no SSL_CERT_FILE.
    c.amqp = AMQP_URL.to_string();
}
