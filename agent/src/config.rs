//! The agent's configuration, passed in by the caller.

use crate::pyenv::PyEnvConfig;
use drover_protocol::{AgentId, Names, QueueName};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything an agent needs to know; see the CLI's `drover agent --help`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub amqp_url: String,
    pub names: Names,
    /// Queues to serve, in order of preference; at least one.
    pub queues: Vec<QueueName>,
    /// At most this many steps from a queue at once (`--queue gpu:1`); unlisted queues share
    /// the agent's slots without a limit of their own.
    pub queue_limits: BTreeMap<QueueName, u32>,
    /// Which queue a free slot takes its next job from.
    pub order: QueueOrder,
    /// Steps run at once; at least 1. Ignored in services mode.
    pub concurrency: u32,
    /// Services mode: run every job as it comes, with no slot limit (long-lived steps).
    pub services_mode: bool,
    /// Parent of per-job workdirs.
    pub work_dir: PathBuf,
    pub keep_workdirs: bool,
    /// The controllers' HTTP APIs (`--url`, every controller of the namespace) for artifact
    /// transfers and lease checks: a job's own URL when it is one of them (the active
    /// controller that sent it), else the first; required with a token, which is sent to these
    /// addresses only. Empty: the URL each job carries.
    pub controller_urls: Vec<String>,
    pub heartbeat: Duration,
    /// SIGTERM -> SIGKILL grace when a step is stopped.
    pub kill_grace: Duration,
    /// How long a draining agent waits for running steps before it kills them.
    pub drain_timeout: Duration,
    pub python: PyEnvConfig,
    /// Default: `<hostname>-<pid>-<4 random hex>`.
    pub id: Option<AgentId>,
    /// Bearer token for the controller's HTTP API (artifact transfers), when it requires one.
    pub token: Option<String>,
    /// Whether artifacts go straight to the bucket a job names or through the controller.
    pub artifact_transfer: ArtifactTransfer,
    /// The S3 endpoint as this host reaches it; `None`: the one jobs name.
    pub s3_endpoint: Option<String>,
    /// Bytes of a step's log kept per attempt; past it the log ends with a marker line and the
    /// rest of the output is read and dropped.
    pub max_log_size: u64,
    /// How processes that leave a step's process group are killed at its end.
    pub step_cleanup: crate::reaper::CleanupMode,
    /// `aws_*` settings for buckets on top of the environment's `AWS_*` variables (the CLI
    /// passes the credentials it took out of its environment at start).
    pub s3_settings: Vec<(String, String)>,
    /// Steps run as this user rather than the agent's (`--run-as`).
    pub run_as: Option<RunAs>,
    /// The controller's public key: when set, only jobs whose signature verifies are run;
    /// others are dead-lettered (`--job-verify-key`).
    pub job_verifier: Option<drover_amqp::signing::JobVerifier>,
    /// Largest message consumed (larger ones are dead-lettered) or published.
    pub max_message_size: usize,
    /// How the namespace's queues are declared (`--queue-type`, `--delivery-limit`).
    pub queue_settings: drover_amqp::QueueSettings,
    /// Warm starts of Python function steps (`--python-prewarm*`).
    pub prewarm: crate::warm::WarmConfig,
}

/// The user steps run as: workdirs are handed to it, shared environments stay the agent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The smallest `--max-log-size`: room for the marker that ends a cut log.
pub const MIN_MAX_LOG_SIZE: u64 = 1024;

/// How an agent moves artifacts when the controller keeps them in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArtifactTransfer {
    /// Straight to and from the bucket (credentials from `AWS_*`); through the controller only
    /// when a job names no bucket (the controller's local store).
    #[default]
    Direct,
    /// Always through the controller's HTTP API, e.g. from a host that cannot reach the bucket.
    Controller,
}

/// How an agent picks among its queues when several have jobs waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    /// The first queue (in the order given) with a job waiting wins.
    #[default]
    Priority,
    /// The queues take turns: after a job from one queue, the next ones are preferred
    /// (ClearML's `--order-fairness`).
    RoundRobin,
}

impl AgentConfig {
    /// The queue's own limit, if it has one.
    pub fn queue_limit(&self, queue: &QueueName) -> Option<u32> {
        self.queue_limits.get(queue).copied()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.token.is_none() || !self.controller_urls.is_empty(),
            "an agent with a token needs the controller's address: set --url (DROVER_URL); the token is sent there only, never to the address a job names"
        );
        anyhow::ensure!(
            !self.queues.is_empty(),
            "an agent needs at least one --queue"
        );
        for (queue, limit) in &self.queue_limits {
            anyhow::ensure!(
                self.queues.contains(queue),
                "queue limit for {queue}, which this agent does not serve"
            );
            anyhow::ensure!(
                *limit >= 1 && *limit <= u32::from(u16::MAX),
                "the limit of queue {queue} must be between 1 and {}, not {limit}",
                u16::MAX
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for queue in &self.queues {
            anyhow::ensure!(seen.insert(queue), "queue {queue} is listed twice");
            refuse_own_queue(&self.names, queue)?;
        }
        if let Some(user) = &self.run_as {
            crate::run_as::check(user, &[&self.work_dir, &self.python.env_root])?;
        }
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            self.max_log_size >= MIN_MAX_LOG_SIZE,
            "--max-log-size {} is too small: at least {MIN_MAX_LOG_SIZE} bytes",
            self.max_log_size
        );
        anyhow::ensure!(
            self.concurrency <= u32::from(u16::MAX),
            "--concurrency {} is too large",
            self.concurrency
        );
        Ok(())
    }
}

/// A queue an agent must not serve: one whose broker name the namespace uses itself (its
/// events queue, journal, an agent's control queue...), where it would take what is not a job.
pub fn refuse_own_queue(names: &Names, queue: &QueueName) -> anyhow::Result<()> {
    match names.collision(queue) {
        None => Ok(()),
        Some(collision) => anyhow::bail!(
            "--queue {queue}: in namespace {names} {collision}, and an agent serving it would \
             take messages that are not jobs; serve a queue of another name (and name that \
             queue in the steps)"
        ),
    }
}

impl AgentConfig {
    /// Where artifact transfers of a job that names `job_url` go: the job's URL when it is one
    /// of the configured controllers (the active one, which sent the job), else the first of
    /// them. Without configured URLs, the job's URL only without a token, so the token never
    /// goes where a message says; empty (every transfer fails) if a token came without a URL,
    /// which [`AgentConfig::check`] refuses.
    pub fn controller_base(&self, job_url: &str) -> String {
        let job_url = job_url.trim_end_matches('/');
        let listed = |u: &&String| u.trim_end_matches('/') == job_url;
        let base = match (self.controller_urls.as_slice(), &self.token) {
            ([], None) => job_url,
            ([], Some(_)) => "",
            (urls, _) => urls
                .iter()
                .find(listed)
                .or(urls.first())
                .map_or("", String::as_str),
        };
        base.trim_end_matches('/').to_string()
    }
}

/// Redirects one request follows at most.
const MAX_REDIRECTS: usize = 10;

/// An HTTP client for the controller that sends the token, if any, with every request, and
/// follows a redirect only to the origin asked first or under a `listed` controller URL (a
/// standby redirects reads to the active controller); another redirect comes back as the
/// answer, which for a standby's carries `x-drover-inactive` and is retried as its 503 would be.
pub fn http_client(token: Option<&str>, listed: &[String]) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the token cannot be sent in an HTTP header"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let listed: Vec<reqwest::Url> = listed.iter().filter_map(|u| u.parse().ok()).collect();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let first = attempt.previous().first().cloned();
        let hops = attempt.previous().len();
        match first {
            Some(first) if hops <= MAX_REDIRECTS && follows(&listed, &first, attempt.url()) => {
                attempt.follow()
            }
            _ => attempt.stop(),
        }
    });
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
        .redirect(policy)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

/// Whether a request first sent to `first` follows a redirect to `target`: the same origin, or
/// at or below a listed controller URL.
fn follows(listed: &[reqwest::Url], first: &reqwest::Url, target: &reqwest::Url) -> bool {
    let same_origin = |a: &reqwest::Url, b: &reqwest::Url| {
        a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default()
    };
    same_origin(first, target)
        || listed.iter().any(|base| {
            let prefix = base.path().trim_end_matches('/');
            same_origin(base, target)
                && target
                    .path()
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// This machine's host name, or `localhost`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `<host>-<pid>-<4 hex>`, with characters an id cannot hold replaced by `-`.
pub fn default_id(host: &str) -> anyhow::Result<AgentId> {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    Ok(AgentId::new(format!(
        "{host}-{}-{suffix}",
        std::process::id()
    ))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pyenv::PythonEnvMode;

    fn config(controller_urls: &[&str], token: Option<&str>) -> AgentConfig {
        AgentConfig {
            amqp_url: String::new(),
            names: Names::new("drover").unwrap(),
            queues: vec![QueueName::new("default").unwrap()],
            queue_limits: BTreeMap::new(),
            order: QueueOrder::Priority,
            concurrency: 1,
            services_mode: false,
            work_dir: "w".into(),
            keep_workdirs: false,
            controller_urls: controller_urls.iter().map(|u| u.to_string()).collect(),
            heartbeat: Duration::from_secs(1),
            kill_grace: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            python: PyEnvConfig {
                mode: PythonEnvMode::System,
                env_root: "e".into(),
                base_python: "python3".into(),
                build_timeout: crate::pyenv::DEFAULT_BUILD_TIMEOUT,
                compile_all: false,
                installer: Default::default(),
            },
            id: None,
            token: token.map(str::to_string),
            artifact_transfer: Default::default(),
            s3_endpoint: None,
            max_log_size: crate::logstream::DEFAULT_MAX_LOG_SIZE,
            step_cleanup: Default::default(),
            s3_settings: Vec::new(),
            run_as: None,
            job_verifier: None,
            max_message_size: drover_amqp::DEFAULT_MAX_MESSAGE_SIZE,
            queue_settings: Default::default(),
            prewarm: Default::default(),
        }
    }

    #[test]
    fn redirects_are_followed_within_the_origin_or_to_listed_controllers_only() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let listed = [url("http://a:1"), url("https://b/drover")];
        let first = url("http://standby:2/api/v1/blobs/x");
        for ok in [
            "http://standby:2/other",
            "http://a:1/api/v1/blobs/x",
            "https://b:443/drover/api",
        ] {
            assert!(follows(&listed, &first, &url(ok)), "{ok}");
        }
        for no in [
            "http://elsewhere:1/api",
            "https://standby:2/other",
            "http://a:3/api",
            "https://b/droverx/api",
        ] {
            assert!(!follows(&listed, &first, &url(no)), "{no}");
        }
    }

    #[test]
    fn the_token_goes_to_the_configured_controller_only() {
        let job_url = "http://elsewhere.example:8470/";
        let with_both = config(&["http://ctl:8470/"], Some("t0ken"));
        assert!(with_both.check().is_ok());
        assert_eq!(with_both.controller_base(job_url), "http://ctl:8470");

        // Several controllers: the one that sent the job when it is listed, else the first.
        let two = config(&["http://a:8470", "http://b:8470/"], Some("t0ken"));
        assert_eq!(two.controller_base("http://b:8470"), "http://b:8470");
        assert_eq!(two.controller_base(job_url), "http://a:8470");

        let token_only = config(&[], Some("t0ken"));
        let refused = token_only.check().unwrap_err().to_string();
        assert!(refused.contains("--url"), "{refused}");
        assert_eq!(token_only.controller_base(job_url), "");

        let open = config(&[], None);
        assert!(open.check().is_ok());
        assert_eq!(
            open.controller_base(job_url),
            "http://elsewhere.example:8470"
        );
    }

    #[test]
    fn a_queue_the_namespace_uses_itself_is_refused() {
        let mut own = config(&[], None);
        own.names = Names::new("t1").unwrap();
        own.queues.push(QueueName::new("events").unwrap());
        let refused = own.check().unwrap_err().to_string();
        assert!(
            refused.contains("--queue events") && refused.contains("t1.events"),
            "{refused}"
        );
        // The same name is a plain user queue in the default namespace.
        own.names = Names::new("drover").unwrap();
        assert!(own.check().is_ok());
        own.queues.push(QueueName::new("drover.agent.box").unwrap());
        let refused = own.check().unwrap_err().to_string();
        assert!(refused.contains("drover.agent.*"), "{refused}");
    }
}
