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
    /// Allows listening on a non-loopback address without a token.
    pub allow_unauthenticated: bool,
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
            allow_unauthenticated: false,
        }
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
