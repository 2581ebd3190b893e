//! drover processes started for one benchmark in a namespace and temp dir of their own, the
//! HTTP calls made to them, and their removal (processes stopped, queues deleted).

use anyhow::{Context, Result, bail};
use drover_test_support::namespace::drover_env;
use drover_test_support::process::GRACE;
use drover_test_support::{
    Check, Deadline, Processes, delete_namespace, eventually_async, fresh_namespace, ready,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    /// Variables set in every process's environment besides the namespace's (e.g. an S3
    /// artifact store).
    vars: Vec<(String, String)>,
    /// The started processes, by label; each one's output in `<dir>/<label>.log`.
    procs: Processes,
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
        let dir = tempfile::Builder::new().prefix("drover-bench-").tempdir()?;
        Ok(Self {
            ns: fresh_namespace("bench-"),
            procs: Processes::new(dir.path()),
            dir,
            url: String::new(),
            env: env.clone(),
            queues: vec!["default".to_string()],
            vars: Vec::new(),
            http: reqwest::Client::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `drover` command in this namespace.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.env.drover);
        drover_env(&mut cmd, &self.ns, &self.env.amqp_url, &self.url)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Sets `key` to `value` in the environment of every process started from now on.
    pub fn set_var(&mut self, key: &str, value: &str) {
        self.vars.push((key.to_string(), value.to_string()));
    }

    /// Starts `drover up` or `drover controller` with `args` on the data dir `<dir>/<label>`
    /// and an HTTP port of its own, without waiting for it; returns the data dir.
    pub fn spawn_controller(&mut self, label: &str, args: &[&str]) -> Result<PathBuf> {
        let data = self.dir.path().join(label);
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.extend([
            "--data-dir".into(),
            data.display().to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ]);
        let mut cmd = self.command();
        cmd.args(&full);
        self.procs.spawn(label, cmd)?;
        Ok(data)
    }

    /// Starts `drover up` or `drover controller` with `args` and waits until it has written its
    /// URL and its `/healthz` reports the broker connected (failing at once if it exits).
    pub async fn start_controller(&mut self, label: &str, args: &[&str]) -> Result<()> {
        let data = self.spawn_controller(label, args)?;
        let child = self
            .procs
            .get_mut(label)
            .with_context(|| format!("no process {label}"))?;
        let what = format!("drover {} to write its URL", args.join(" "));
        let listening =
            Deadline::new(what, Duration::from_secs(60)).every(Duration::from_millis(20));
        self.url = eventually_async(listening, || {
            std::future::ready(child.alive_and(ready::controller_url(&data)))
        })
        .await?;
        let (http, url) = (&self.http, &self.url);
        let connected = Deadline::new(
            format!("{url}/healthz to report the broker connected"),
            Duration::from_secs(60),
        );
        eventually_async(connected, || ready::healthz(http, url)).await?;
        Ok(())
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
        let mut cmd = self.command();
        cmd.args(&args);
        self.procs.spawn(label, cmd)?;
        Ok(())
    }

    /// Remembers a user queue to delete with the namespace.
    pub fn uses_queue(&mut self, queue: &str) {
        self.queues.push(queue.to_string());
    }

    /// What a started process printed so far.
    pub fn process_log(&self, label: &str) -> String {
        self.procs.output(label)
    }

    /// Where the output of the process `label` goes.
    pub fn log_path(&self, label: &str) -> PathBuf {
        self.procs.log_path(label)
    }

    /// Whether the process `label` still runs; an error with its output once it has exited.
    pub fn alive(&mut self, label: &str) -> Result<()> {
        let child = self
            .procs
            .get_mut(label)
            .with_context(|| format!("no process {label}"))?;
        match child.alive_and(Check::Ready(())) {
            Check::Failed(why) => bail!(why),
            _ => Ok(()),
        }
    }

    /// `kill -9` of the process `label` (its whole process group), reaped before this returns.
    pub fn kill(&mut self, label: &str) -> Result<()> {
        self.procs
            .get_mut(label)
            .with_context(|| format!("no process {label}"))?
            .kill();
        Ok(())
    }

    /// The pid of a started process.
    pub fn pid(&self, label: &str) -> Result<u32> {
        self.procs
            .get(label)
            .map(|c| c.pid())
            .with_context(|| format!("no process {label}"))
    }

    /// Runs `python <repo>/<script> <args>` in the cluster's namespace and directory; the JSON
    /// object it printed on its last line (an error with its output when it fails).
    pub fn python_json(&self, script: &str, args: &[&str]) -> Result<Value> {
        self.python_json_with(script, args, |_| {})
    }

    /// As [`Self::python_json`], with `adjust` applied to the command before it runs.
    pub fn python_json_with(
        &self,
        script: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Value> {
        let path = self.env.repo.join(script);
        let mut cmd = Command::new(&self.env.python);
        drover_env(&mut cmd, &self.ns, &self.env.amqp_url, &self.url);
        adjust(&mut cmd);
        let out = cmd
            .arg(&path)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.env.python))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} {args:?} failed ({}):\n{stdout}\n{}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("{script} printed {last:?}"))
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

    /// The broker URL the cluster's processes use.
    pub fn amqp_url(&self) -> String {
        self.env.amqp_url.clone()
    }

    /// `GET <path>` of the controller's HTTP API as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// `GET /api/v1/runs`: the newest page of run summaries (100).
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
        let deadline = Deadline::new(format!("run {run} to end"), timeout).every(poll);
        let view = eventually_async(deadline, move || async move {
            match self.run(run).await {
                Err(e) => Check::Failed(format!("{e:#}")),
                Ok(None) => Check::NotYet("not known to the controller yet".into()),
                Ok(Some(view)) => match view["status"].as_str() {
                    Some("running") | None => Check::NotYet(format!("status {}", view["status"])),
                    Some(_) => Check::Ready(view),
                },
            }
        })
        .await?;
        match view["status"].as_str() {
            Some("succeeded") => Ok(view),
            other => bail!(
                "run {run} ended {}: {}",
                other.unwrap_or("?"),
                view["error"].as_str().unwrap_or("")
            ),
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 10 s); the namespace stays.
    pub fn stop(&mut self) {
        tokio::task::block_in_place(|| self.procs.stop_all(GRACE));
    }

    /// Stops every process (as [`Self::stop`]) and deletes the namespace's queues, its state
    /// journal included.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Err(e) = delete_namespace(&self.env.amqp_url, &self.ns, &self.queues).await {
            eprintln!("bench: {e}");
        }
    }
}

impl Drop for Cluster {
    /// Last resort when a benchmark failed before `shutdown`: no process outlives the bench.
    fn drop(&mut self) {
        self.procs.stop_all(Duration::ZERO);
    }
}
