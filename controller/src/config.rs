//! The controller's configuration, passed in by the caller (the CLI), and the data-dir layout.

use drover_protocol::Names;
use drover_storage::StoreLocation;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How long an attempt lives without a heartbeat unless configured otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The port the HTTP API listens on unless configured otherwise.
pub const DEFAULT_HTTP_PORT: u16 = 8470;

/// Where the HTTP API listens unless configured otherwise: loopback only.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_HTTP_PORT);

/// How many lost attempts of a step are dispatched again unless configured otherwise.
pub const DEFAULT_MAX_LOST_ATTEMPTS: u32 = 3;

/// Bytes of an attempt's log stored unless configured otherwise (the agents' default cap).
pub const DEFAULT_MAX_LOG_SIZE: u64 = 256 * 1024 * 1024;

/// Largest artifact accepted over HTTP unless configured otherwise.
pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 10 * 1024 * 1024 * 1024;

/// Free space an upload must leave on the data dir's file system unless configured otherwise.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1024 * 1024 * 1024;

/// Most steps per pipeline unless configured otherwise: the benchmark's largest pipeline
/// (100,000 steps) passes.
pub const DEFAULT_MAX_STEPS: usize = 100_000;

/// Everything the controller needs to start.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub amqp_url: String,
    pub names: Names,
    /// Holds `state/` (sled), `blobs/` (with the local artifact store), `logs/` and
    /// `controller.url`.
    pub data_dir: PathBuf,
    /// Where artifacts live: `<data-dir>/blobs` (`Local`), or a bucket agents use directly.
    pub artifact_store: StoreLocation,
    /// `aws_*` settings for the bucket on top of the environment's `AWS_*` variables, e.g.
    /// credentials for an embedded controller (tests); empty in the CLI.
    pub s3_settings: Vec<(String, String)>,
    /// Where the HTTP API listens; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// Base URL agents and users reach the API at; `http://<bound addr>` when unset.
    pub public_url: Option<String>,
    /// How long an attempt lives without a heartbeat.
    pub lease: Duration,
    /// Most steps of a queue queued or running at once, across all agents.
    pub queue_limits: std::collections::BTreeMap<drover_protocol::QueueName, u32>,
    /// Lost attempts (agent gone, lease expired) a step is dispatched again after without
    /// counting against its `retries`; one more fails the step.
    pub max_lost_attempts: u32,
    /// Bearer token every route but `/healthz` requires; `None` leaves the API open.
    pub token: Option<String>,
    /// A second token that allows GET and HEAD only (dashboards); needs `token`.
    pub read_token: Option<String>,
    /// Allows listening on a non-loopback address without a token.
    pub allow_unauthenticated: bool,
    /// How long and how many HTTP clients may hold the controller.
    pub http_limits: HttpLimits,
    /// Bytes of an attempt's log stored (plus room for the agent's marker line); what arrives
    /// past that is dropped after a marker of the controller's own.
    pub max_log_size: u64,
    /// How long after an attempt ended its log stream waits for log bytes its agent reported
    /// but the controller has not stored (see [`DEFAULT_LOG_TAIL_PATIENCE`]).
    pub log_tail_patience: Duration,
    /// Largest artifact an upload may carry.
    pub max_artifact_size: u64,
    /// Free space an upload to the local store must leave on the data dir's file system.
    pub min_free_space: u64,
    /// Most steps a pipeline may have; larger submissions are rejected.
    pub max_steps: usize,
    /// Largest message consumed (larger ones are dead-lettered) or published.
    pub max_message_size: usize,
    /// How the namespace's queues are declared (`--queue-type`, `--delivery-limit`).
    pub queue_settings: drover_amqp::QueueSettings,
    /// The Ed25519 private key (PKCS#8 PEM) every step job is signed with; `None`: unsigned.
    pub job_signing_key: Option<PathBuf>,
    /// Whether every write of the state store also goes to the journal stream `<ns>.journal`.
    pub state_journal: StateJournal,
    /// With the journal: bytes of journal batches after which a snapshot of the store goes to
    /// `<ns>.snapshot` (`--state-snapshot-every`); 0: none.
    pub state_snapshot_every: u64,
}

/// Journal bytes between two snapshots of the store, by default.
pub const DEFAULT_STATE_SNAPSHOT_EVERY: u64 = 64 << 20;

/// Where the state store's writes are also kept (`--state-journal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateJournal {
    /// In sled under `<data-dir>/state` only. The default.
    #[default]
    Off,
    /// Also in the RabbitMQ stream `<ns>.journal`, confirmed before each flush returns, and
    /// replayed into sled at start (ARCHITECTURE.md, "Controller data dir").
    Stream,
}

impl std::fmt::Display for StateJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateJournal::Off => "off",
            StateJournal::Stream => "stream",
        })
    }
}

impl std::str::FromStr for StateJournal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(StateJournal::Off),
            "stream" => Ok(StateJournal::Stream),
            other => Err(format!(
                "unknown state journal {other:?}: use off (sled only) or stream (a RabbitMQ stream too)"
            )),
        }
    }
}

/// How much of the controller HTTP clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client must send a request's headers within this, from connecting or from the end of
    /// its previous response; an idle keep-alive connection is closed after it.
    pub header_timeout: Duration,
    /// Connections open at once; `None` derives it from the open-file limit
    /// (`(RLIMIT_NOFILE - 128) / 2`).
    pub max_connections: Option<usize>,
}

/// How long a log stream waits for the last bytes of an ended attempt's log unless configured
/// otherwise: an agent sends them before its `Finished`, so only a lost connection or a dead
/// agent keeps them away this long (an agent's publish gives up on a message after 30 s, and
/// publishes a log chunk again a second later).
pub const DEFAULT_LOG_TAIL_PATIENCE: Duration = Duration::from_secs(30);

/// How long a client may take to send its request headers unless configured otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: None,
        }
    }
}

impl ControllerConfig {
    /// A configuration with the default HTTP address and lease.
    pub fn new(amqp_url: impl Into<String>, names: Names, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            names,
            data_dir: data_dir.into(),
            artifact_store: StoreLocation::Local,
            s3_settings: Vec::new(),
            http_addr: DEFAULT_HTTP_ADDR,
            public_url: None,
            lease: DEFAULT_LEASE,
            queue_limits: Default::default(),
            max_lost_attempts: DEFAULT_MAX_LOST_ATTEMPTS,
            token: None,
            read_token: None,
            allow_unauthenticated: false,
            http_limits: HttpLimits::default(),
            max_log_size: DEFAULT_MAX_LOG_SIZE,
            log_tail_patience: DEFAULT_LOG_TAIL_PATIENCE,
            max_artifact_size: DEFAULT_MAX_ARTIFACT_SIZE,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            max_steps: DEFAULT_MAX_STEPS,
            max_message_size: drover_amqp::DEFAULT_MAX_MESSAGE_SIZE,
            queue_settings: Default::default(),
            job_signing_key: None,
            state_journal: StateJournal::Off,
            state_snapshot_every: DEFAULT_STATE_SNAPSHOT_EVERY,
        }
    }

    /// Creates the data dir readable by this user only (it holds every artifact and log), and
    /// warns when an existing one is open to others.
    pub(crate) fn prepare_data_dir(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let dir = &self.data_dir;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the data dir {} is open to other users (mode {:o}); `chmod 700` it, it holds every artifact and log",
                dir.display(),
                mode & 0o777
            );
        }
        let local = self.artifact_store == StoreLocation::Local;
        for sub in [self.state_dir(), self.logs_dir()]
            .into_iter()
            .chain(local.then(|| self.blobs_dir()))
        {
            if !sub.exists() {
                std::fs::DirBuilder::new().mode(0o700).create(&sub)?;
            }
        }
        Ok(())
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    pub(crate) fn url_file(&self) -> PathBuf {
        self.data_dir.join("controller.url")
    }
}
