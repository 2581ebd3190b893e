//! Starts `drover` processes in a fresh namespace and data dir, and runs CLI commands against them.

use drover_storage::testing::Moto;
use drover_test_support::process::GRACE;
use drover_test_support::{
    Deadline, Observation, Processes, delete_namespace_blocking, eventually, fresh_namespace,
    namespace::drover_env, ready,
};
use serde_json::Value;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines of each process's log a timed-out [`Cluster::wait_for`] shows.
const PROCESS_LOG_TAIL: usize = 40;

pub use drover_test_support::AMQP_URL;

/// The `drover` binary under test: the one nextest names at run time (a copy unpacked with the
/// tests when they run from an archive), else the one cargo built with them.
pub fn drover_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("NEXTEST_BIN_EXE_drover")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_drover").to_string())
    })
}

/// Polls `cond` until it holds or `timeout` passes; panics naming `what` and the last value seen.
pub fn wait_until<O: Observation>(
    what: &str,
    timeout: Duration,
    cond: impl FnMut() -> O,
) -> O::Value {
    eventually(Deadline::new(what, timeout), cond).unwrap_or_else(|e| panic!("{e}"))
}

/// A namespace, a temp dir and the drover processes started in it; killed on drop.
pub struct Cluster {
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub url: String,
    /// User queues to delete with the namespace when the test ends.
    pub queues: Vec<String>,
    /// The broker every process of this cluster uses.
    pub amqp: String,
    /// Where controllers listen (`127.0.0.1:0` unless a test needs a stable address).
    pub http: String,
    /// Extra environment for every process started (e.g. `DROVER_TOKEN`).
    pub env: Vec<(String, String)>,
    /// The started processes, by label; each one's output in `<dir>/<label>.log`.
    procs: Processes,
    /// The S3-compatible server of a cluster on [`Store::S3`]; outlives the processes.
    pub moto: Option<Moto>,
    /// The lease controllers of this cluster give an attempt: [`FAULT_LEASE`] unless a test
    /// that loses nothing on purpose asks for [`PATIENT_LEASE`].
    pub lease: &'static str,
}

/// Short, so that fault tests see a lost agent's step run again within seconds.
pub const FAULT_LEASE: &str = "3s";

/// For tests that lose nothing on purpose and run beside heavy ones (Chromium, private broker
/// nodes): a stall of a few seconds on a loaded machine must not fence their steps.
pub const PATIENT_LEASE: &str = "20s";

/// Where a cluster keeps artifacts: the same cases run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The controller's data dir, bytes through its HTTP API.
    Local,
    /// A bucket on a `moto_server` started for the test; agents use it directly.
    S3,
}

/// The bucket S3 clusters use; each cluster has its own server and its namespace as prefix.
pub const BUCKET: &str = "drover-e2e";

impl Cluster {
    /// A fresh namespace and directory, nothing started yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            ns: fresh_namespace("t"),
            procs: Processes::new(dir.path()),
            dir,
            url: String::new(),
            queues: vec!["default".to_string()],
            amqp: AMQP_URL.to_string(),
            http: "127.0.0.1:0".to_string(),
            env: Vec::new(),
            moto: None,
            lease: FAULT_LEASE,
        }
    }

    /// A fresh cluster keeping artifacts in `store`: for S3, a `moto_server` with a bucket, and
    /// the controller flags and AWS credentials in every process's environment.
    pub fn on(store: Store) -> Self {
        let mut c = Self::new();
        if store == Store::S3 {
            let moto = Moto::start();
            moto.create_bucket(BUCKET);
            c.env.extend(
                [
                    ("DROVER_ARTIFACT_STORE", format!("s3://{BUCKET}/{}", c.ns)),
                    ("DROVER_S3_ENDPOINT", moto.endpoint()),
                    ("AWS_ACCESS_KEY_ID", "testing".into()),
                    ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                    ("AWS_REGION", "us-east-1".into()),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
            c.moto = Some(moto);
        }
        c
    }

    /// `drover up` on `store`.
    pub fn up_on(store: Store, agents: u32, queues: &[&str]) -> Self {
        let mut c = Self::on(store);
        c.start_up(agents, queues, &[]);
        c
    }

    /// Blob keys in this cluster's bucket prefix (S3 clusters only).
    pub fn bucket_keys(&self) -> Vec<String> {
        let moto = self.moto.as_ref().expect("an S3 cluster");
        moto.keys(BUCKET, &format!("{}/blobs/", self.ns))
    }

    /// Blob files in the controller's local store.
    pub fn local_blobs(&self) -> Vec<String> {
        let root = self.data_dir().join("blobs");
        let Ok(fan) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for dir in fan.flatten().filter(|d| d.file_name() != "tmp") {
            for blob in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                found.push(blob.file_name().to_string_lossy().into_owned());
            }
        }
        found.sort();
        found
    }

    /// Controllers of this cluster keep one address across restarts, as in production.
    pub fn with_fixed_http(mut self) -> Self {
        let port = ready::free_port().expect("a free port");
        self.http = format!("127.0.0.1:{port}");
        self
    }

    /// `drover up` with [`PATIENT_LEASE`], for tests that lose nothing on purpose and run beside
    /// heavy ones.
    pub fn patient_up(agents: u32, queues: &[&str]) -> Self {
        let mut c = Self::new();
        c.lease = PATIENT_LEASE;
        c.start_up(agents, queues, &[]);
        c
    }

    /// `drover up` with `agents` in-process agents serving `queues`, Python steps on the
    /// agent's own interpreter.
    pub fn up(agents: u32, queues: &[&str]) -> Self {
        Self::up_with(agents, queues, &[])
    }

    /// `drover up` with extra flags.
    pub fn up_with(agents: u32, queues: &[&str], extra: &[&str]) -> Self {
        let mut c = Self::new();
        c.start_up(agents, queues, extra);
        c
    }

    /// Starts `drover up` in this cluster.
    pub fn start_up(&mut self, agents: u32, queues: &[&str], extra: &[&str]) {
        let mut args = vec!["up".to_string(), "--agents".into(), agents.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        for q in queues {
            args.push("--queue".into());
            args.push(q.to_string());
            self.queues
                .push(q.split(':').next().unwrap_or(q).to_string());
        }
        self.start_controller_with(&args);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts a controller-bearing command (`up` or `controller`) and waits for its URL (failing
    /// at once, with its output, if it exits first).
    pub fn start_controller_with(&mut self, args: &[String]) {
        let data = self.data_dir();
        let _ = std::fs::remove_file(data.join(ready::CONTROLLER_URL_FILE));
        let mut full: Vec<String> = args.to_vec();
        full.extend([
            "--data-dir".into(),
            data.display().to_string(),
            "--http".into(),
            self.http.clone(),
            "--lease".into(),
            self.lease.into(),
        ]);
        if args[0] == "up" && !args.iter().any(|a| a == "--python-env") {
            full.extend(["--python-env".into(), "system".into()]);
        }
        let mut cmd = self.command();
        cmd.args(&full);
        let child = self.procs.spawn(&args[0], cmd).expect("spawn drover");
        self.url = wait_until("the controller's URL", Duration::from_secs(30), || {
            child.alive_and(ready::controller_url(&data))
        });
    }

    /// A separate `drover agent` process serving `queues`.
    pub fn start_agent(&mut self, id: &str, queues: &[&str]) {
        self.start_agent_with(id, queues, &[]);
    }

    /// A separate `drover agent` process with extra flags.
    pub fn start_agent_with(&mut self, id: &str, queues: &[&str], extra: &[&str]) {
        let mut args = vec![
            "agent".to_string(),
            "--id".into(),
            id.into(),
            "--work-dir".into(),
            self.dir.path().join(id).display().to_string(),
            "--python-env".into(),
            "system".into(),
        ];
        for q in queues {
            args.push("--queue".into());
            args.push(q.to_string());
            // `gpu:1` serves queue `gpu` (at most one step at once).
            let name = q.split(':').next().unwrap_or(q);
            self.queues.push(name.to_string());
        }
        // A killed agent's control queue outlives it until it expires; deleted with the
        // namespace instead (`<ns>.agent.<id>` is what a user queue `agent.<id>` is called in a
        // test's namespace).
        self.queues.push(format!("agent.{id}"));
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut cmd = self.command();
        cmd.args(&args);
        self.procs.spawn(id, cmd).expect("spawn drover");
    }

    /// The output a started process wrote so far (for assertion messages).
    pub fn process_log(&self, label: &str) -> String {
        self.procs.output(label)
    }

    /// The last lines each started process wrote, under its label (for assertion messages).
    pub fn tails(&self) -> String {
        self.procs.tails(PROCESS_LOG_TAIL)
    }

    /// The pid of a started process.
    pub fn pid(&self, label: &str) -> u32 {
        self.procs
            .get(label)
            .unwrap_or_else(|| panic!("no process {label}"))
            .pid()
    }

    /// Sends a signal to a started process.
    pub fn signal(&self, label: &str, signal: nix::sys::signal::Signal) {
        let child = self
            .procs
            .get(label)
            .unwrap_or_else(|| panic!("no process {label}"));
        child.signal(signal).expect("signal");
    }

    /// Waits for a started process to exit and returns its status.
    pub fn wait_exit(&mut self, label: &str, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self
            .procs
            .remove(label)
            .unwrap_or_else(|| panic!("no process {label}"));
        child.wait_exit(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A step of a run's status document.
    pub fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
        run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no step {name} in {run}"))
    }

    /// Submits a pipeline without waiting; returns the run id.
    pub fn submit(&self, file: &Path) -> String {
        let run = self.json(&["run", file.to_str().expect("utf-8 path"), "--json"]);
        run["run_id"].as_str().expect("run_id").to_string()
    }

    /// Polls a run's status until `cond` holds; a timeout shows the last status seen and the
    /// end of every process's log.
    pub fn wait_for(
        &self,
        run: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let observed = eventually(Deadline::new(what, timeout), || {
            let out = self.drover(&["status", run, "--json"]);
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(doc) if cond(&doc) => Ok(doc),
                Ok(doc) => Err(doc.to_string()),
                Err(_) => Err(text(&out)),
            }
        });
        observed.unwrap_or_else(|e| panic!("{e}\n{}", self.tails()))
    }

    /// GETs a path of the controller's HTTP API as text (with the cluster's token, if any).
    pub fn http_get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.url);
        let token = self
            .env
            .iter()
            .find(|(k, _)| k == "DROVER_TOKEN")
            .map(|(_, v)| v.clone());
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut req = reqwest::Client::new().get(&url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("GET");
            resp.text().await.expect("body")
        })
    }

    /// Sends SIGKILL to a started process (and its process group) and waits for it.
    pub fn kill(&mut self, label: &str) {
        if let Some(mut child) = self.procs.remove(label) {
            child.kill();
        }
    }

    /// A `drover` command with this cluster's namespace and URL.
    pub fn command(&self) -> Command {
        self.command_of(Command::new(drover_bin()))
    }

    /// `drover agent` in a test host's network namespace, reaching the broker and the
    /// controller through `gateway` (where the test network forwards their ports).
    pub fn start_agent_in(&mut self, netns: &str, gateway: &str, id: &str, extra: &[&str]) {
        let mut cmd = self.command_in(netns, gateway);
        cmd.args([
            "agent",
            "--id",
            id,
            "--queue",
            "default",
            "--python-env",
            "system",
        ])
        .arg("--work-dir")
        .arg(self.dir.path().join(id))
        .args(extra);
        self.procs.spawn(id, cmd).expect("spawn drover");
    }

    /// A `drover` command in a test host's network namespace, reaching the broker, the
    /// controller and the S3 server (if any) through `gateway`, where the test network forwards
    /// their ports.
    pub fn command_in(&self, netns: &str, gateway: &str) -> Command {
        let via = |url: &str| url.replacen("127.0.0.1", gateway, 1);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, drover_bin()]);
        let mut cmd = self.command_of(cmd);
        cmd.env("DROVER_AMQP_URL", via(&self.amqp));
        if !self.url.is_empty() {
            cmd.env("DROVER_URL", via(&self.url));
        }
        if let Some(moto) = &self.moto {
            cmd.env("DROVER_S3_ENDPOINT", via(&moto.endpoint()));
        }
        cmd
    }

    fn command_of(&self, mut cmd: Command) -> Command {
        drover_env(&mut cmd, &self.ns, &self.amqp, &self.url)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// A Python command (`python3` on PATH) with this cluster's settings and the SDK importable.
    /// Downloads an artifact with `drover artifacts get` and returns its unpickled value's
    /// Python repr.
    pub fn unpickled(&self, run: &str, step: &str, name: &str) -> String {
        let path = self.dir.path().join(format!("{run}-{step}-{name}.pkl"));
        let out = self.drover(&[
            "artifacts",
            "get",
            run,
            step,
            name,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let code = format!(
            "import pickle; print(repr(pickle.load(open({:?}, 'rb'))))",
            path.display().to_string()
        );
        let out = self.python(&["-c", &code]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn python(&self, args: &[&str]) -> Output {
        let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/python");
        let mut cmd = Command::new("python3");
        drover_env(&mut cmd, &self.ns, &self.amqp, &self.url)
            .args(args)
            .env("PYTHONPATH", sdk)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd.output().expect("run python3")
    }

    /// Runs a CLI command to completion.
    pub fn drover(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run drover")
    }

    /// Runs a CLI command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.drover(args);
        assert!(
            out.status.success(),
            "drover {args:?} failed:\n{}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("drover {args:?}: not JSON ({e}):\n{}", text(&out)))
    }

    /// Writes a pipeline file into the cluster's dir.
    pub fn pipeline(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).expect("write pipeline");
        path
    }

    /// `drover run FILE --wait --json` and its parsed result.
    pub fn run_wait(&self, file: &Path, extra: &[&str]) -> (Output, Value) {
        let mut args = vec![
            "run",
            file.to_str().expect("utf-8 path"),
            "--wait",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.drover(&args);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, json)
    }
}

impl Drop for Cluster {
    /// Stops every process, then removes the test's queues from the shared broker.
    fn drop(&mut self) {
        self.procs.stop_all(GRACE);
        let _ = delete_namespace_blocking(&self.amqp, &self.ns, &self.queues);
    }
}

/// Python lines for a step's `python3 -c` script that wait (up to 60 s) until the file `go`
/// exists: the test writes it once it is ready for what the step does next.
pub fn py_wait_for(go: &Path) -> String {
    format!(
        "import os, sys, time\n\
         deadline = time.monotonic() + 60\n\
         while not os.path.exists({go:?}):\n    \
         if time.monotonic() > deadline:\n        sys.exit('no go file within 60 s')\n    \
         time.sleep(0.02)\n",
        go = go.display().to_string()
    )
}

/// A server on a free loopback port answering every request with `answer(path)` (a whole HTTP
/// response), and keeping each request's head (request line and headers); returns its URL.
pub fn recording_server(
    answer: impl Fn(&str) -> String + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            seen.lock().unwrap().push(head);
            let _ = stream.write_all(answer(&path).as_bytes());
        }
    });
    (url, heads)
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
