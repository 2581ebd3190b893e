//! drover processes started for one benchmark in a namespace and temp dir of their own, the
//! HTTP calls made to them, and their removal (processes stopped, queues deleted).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What every benchmark needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `drover` binary under test.
    pub drover: PathBuf,
    pub amqp_url: String,
    /// The repository (examples, SDK).
    pub repo: PathBuf,
    /// The Python interpreter with the SDK, pandas and scikit-learn.
    pub python: String,
    pub quick: bool,
}

/// A namespace, a temp dir and the drover processes started in it.
pub struct Cluster {
    pub ns: String,
    pub dir: tempfile::TempDir,
    /// The controller's base URL once one runs.
    pub url: String,
    env: Env,
    queues: Vec<String>,
    children: Vec<(String, Child)>,
    http: reqwest::Client,
}

/// Resident memory of a process in MiB, from `/proc/<pid>/status` (`VmRSS` or `VmHWM`).
pub fn memory_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

impl Cluster {
    /// A fresh namespace `bench-<random>` and directory; nothing started yet.
    pub fn new(env: &Env) -> Result<Self> {
        let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        Ok(Self {
            ns,
            dir: tempfile::Builder::new().prefix("drover-bench-").tempdir()?,
            url: String::new(),
            env: env.clone(),
            queues: vec!["default".to_string()],
            children: Vec::new(),
            http: reqwest::Client::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `drover` command in this namespace.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.env.drover);
        cmd.env("DROVER_NAMESPACE", &self.ns)
            .env("DROVER_AMQP_URL", &self.env.amqp_url)
            .env_remove("DROVER_DATA_DIR")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if !self.url.is_empty() {
            cmd.env("DROVER_URL", &self.url);
        }
        cmd
    }

    /// Starts `drover up` or `drover controller` with `args` and waits for its URL.
    pub async fn start_controller(&mut self, label: &str, args: &[&str]) -> Result<()> {
        let data = self.dir.path().join(label);
        let url_file = data.join("controller.url");
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.extend([
            "--data-dir".into(),
            data.display().to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ]);
        self.spawn(label, &full)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(url) = std::fs::read_to_string(&url_file)
                && !url.trim().is_empty()
            {
                self.url = url.trim().to_string();
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "drover {} did not write {} within 60 s:\n{}",
                    args.join(" "),
                    url_file.display(),
                    self.process_log(label)
                );
            }
            self.check_alive(label)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a separate `drover agent` serving `default`.
    pub fn start_agent(&mut self, label: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec![
            "agent".to_string(),
            "--id".into(),
            label.into(),
            "--work-dir".into(),
            self.dir.path().join(label).display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        self.spawn(label, &args)
    }

    /// Remembers a user queue to delete with the namespace.
    pub fn uses_queue(&mut self, queue: &str) {
        self.queues.push(queue.to_string());
    }

    fn spawn(&mut self, label: &str, args: &[String]) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{label}.log")))?;
        let child = self
            .command()
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.env.drover.display()))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    fn check_alive(&mut self, label: &str) -> Result<()> {
        let log = self.process_log(label);
        if let Some((_, child)) = self.children.iter_mut().find(|(l, _)| l == label)
            && let Some(status) = child.try_wait()?
        {
            bail!("drover {label} exited ({status}):\n{log}");
        }
        Ok(())
    }

    /// What a started process printed so far.
    pub fn process_log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{label}.log"))).unwrap_or_default()
    }

    /// The pid of a started process.
    pub fn pid(&self, label: &str) -> Result<u32> {
        self.children
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
            .with_context(|| format!("no process {label}"))
    }

    /// Submits a pipeline file with `drover run --json`; returns the run id.
    pub fn submit(&self, file: &Path) -> Result<String> {
        let out = self
            .command()
            .args(["run", &file.display().to_string(), "--json"])
            .output()?;
        if !out.status.success() {
            bail!(
                "drover run {} failed: {}{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("drover run --json output")?;
        v["run_id"]
            .as_str()
            .map(String::from)
            .context("no run_id in the output of drover run --json")
    }

    /// Writes a pipeline into the cluster's dir and submits it.
    pub fn submit_toml(&self, name: &str, toml: &str) -> Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml)?;
        self.submit(&path)
    }

    /// `GET /api/v1/runs/{run}`; `None` while the controller does not know the run.
    pub async fn run(&self, run: &str) -> Result<Option<Value>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/runs/{run}", self.url))
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = resp.error_for_status()?;
        Ok(Some(resp.json().await?))
    }

    /// `GET /api/v1/runs`: every run's summary, newest first.
    pub async fn runs(&self) -> Result<Value> {
        let resp = self
            .http
            .get(format!("{}/api/v1/runs", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Whether the controller serves the run yet (the body is not read).
    pub async fn run_exists(&self, run: &str) -> Result<bool> {
        let resp = self
            .http
            .get(format!("{}/api/v1/runs/{run}", self.url))
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        resp.error_for_status()?;
        Ok(true)
    }

    /// Polls every `poll` until the run ends; fails unless it succeeded.
    pub async fn wait(&self, run: &str, poll: Duration, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(view) = self.run(run).await? {
                match view["status"].as_str() {
                    Some("succeeded") => return Ok(view),
                    Some("running") | None => {}
                    Some(other) => bail!(
                        "run {run} ended {other}: {}",
                        view["error"].as_str().unwrap_or("")
                    ),
                }
            }
            if Instant::now() > deadline {
                bail!("run {run} did not finish within {timeout:?}");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 10 s) and deletes the namespace's queues.
    pub async fn shutdown(mut self) {
        self.stop_all().await;
        if let Err(e) = delete_namespace(&self.env.amqp_url, &self.ns, &self.queues).await {
            eprintln!("bench: cannot delete namespace {}: {e}", self.ns);
        }
    }

    async fn stop_all(&mut self) {
        for (_, child) in &self.children {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Cluster {
    /// Last resort when a benchmark failed before `shutdown`: no process outlives the bench.
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Deletes a namespace's queues (and the given user queues) from the broker.
pub async fn delete_namespace(amqp_url: &str, ns: &str, queues: &[String]) -> Result<()> {
    let names = drover_protocol::Names::new(ns)?;
    let queues: Vec<drover_protocol::QueueName> = queues
        .iter()
        .filter_map(|q| drover_protocol::QueueName::new(q.as_str()).ok())
        .collect();
    let broker = drover_amqp::Broker::connect(amqp_url, names, "bench cleanup").await?;
    broker.delete_namespace(&queues).await?;
    broker.close().await;
    Ok(())
}
