//! drover's controller: consumes submissions and agent events, schedules each run's DAG, keeps
//! durable state in sled, stores artifacts and logs, and serves the HTTP API.
//!
//! [`Controller::start`] wires the pieces: the store, the HTTP listener, the broker, the task
//! that owns the scheduler state ([`service`]) and the queue consumers.

pub mod automation;
mod blobs;
pub mod cache;
pub mod config;
mod http;
mod leader;
pub mod logs;
pub mod metrics;
pub mod scheduler;
mod service;
pub mod store;

pub use config::{ControllerConfig, HttpLimits};
pub use leader::StoppedStandingBy;

use anyhow::Context;
use drover_amqp::signing::JobSigner;
use drover_amqp::{Broker, Publisher};
use drover_protocol::message::ArtifactStoreRef;
use drover_storage::{BlobStore, LocalBlobs, ObjectBlobs, StoreLocation};
use logs::LogStore;
use logs::archive::LogArchive;
use metrics::Metrics;
use scheduler::{SchedulerConfig, State};
use service::consume::{Routing, Source, consume};
use service::{Command, Owner};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Loaded, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long start-up waits for the broker.
const BROKER_PATIENCE: Duration = Duration::from_secs(30);
/// Unacked deliveries per consumer.
const PREFETCH: u16 = 64;

/// A running controller.
pub struct Controller {
    url: String,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    store: Store,
    broker: Arc<Broker>,
    /// Why the controller stopped by itself, when it lost its namespace's lock.
    lock_lost: Arc<std::sync::Mutex<Option<String>>>,
}

impl Controller {
    /// Opens sled, binds HTTP (answering 503 until active), connects to the broker (retrying
    /// ~30 s), takes the namespace's lock (with the journal, standing by until it gets it),
    /// replays the journal, declares topology, spawns tasks, writes `<data_dir>/controller.url`.
    pub async fn start(
        config: ControllerConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Controller> {
        config
            .prepare_data_dir()
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let store = Store::open(&config.state_dir())?;
        let (blobs, artifact_store) = open_artifact_store(&config).await?;
        let blobs: Arc<dyn BlobStore> =
            Arc::new(blobs::WithSmallOutputs::new(store.clone(), blobs));
        let logs = LogStore::open_capped(&config.logs_dir(), config.max_log_size)
            .map(|logs| logs.with_tail_patience(config.log_tail_patience))
            .with_context(|| format!("cannot create {}", config.logs_dir().display()))?;
        let (listener, url) = bind_http(&config).await?;
        // Until it is active, the listener answers 503 saying what the controller waits for.
        let gate = http::gate::Gate::new(format!(
            "the controller of namespace {} is starting",
            config.names
        ));
        let tracker = TaskTracker::new();
        let serving = shutdown.child_token();
        let stop_serving_unless_started = serving.clone().drop_guard();
        tracker.spawn(http::serve::serve(
            listener,
            gate.router(),
            config.http_limits,
            serving,
        ));
        // The lock comes before the journal, which appends to the namespace's stream.
        let (broker, publisher) = connect_broker(&config, &url, &gate, &shutdown).await?;
        let epoch = attach_journal(&config, &store, &tracker, &shutdown).await?;
        let loaded = store.load_unfinished()?;
        let inline_most = inline_outputs(&config, artifact_store.is_some());
        let state = restore_state(&config, &url, artifact_store, inline_most, epoch, loaded);

        let metrics = Arc::new(Metrics::default());
        let (commands, receiver) = tokio::sync::mpsc::channel::<Command>(256);
        let owner = Owner::new(
            state,
            store.clone(),
            broker.clone(),
            publisher.clone(),
            metrics.clone(),
        );
        let log_archive = LogArchive::new(logs.clone(), blobs.clone());
        let owner = if archives_logs(&config) {
            let archiver = service::archive::spawn(
                log_archive.clone(),
                commands.clone(),
                &tracker,
                shutdown.clone(),
            );
            owner.with_archiver(archiver)
        } else {
            owner
        };
        tracker.spawn(owner.run(receiver, shutdown.clone()));
        let lock_lost = leader::watch(&tracker, broker.clone(), shutdown.clone());
        if config.state_journal == config::StateJournal::Stream {
            leader::announce(
                &tracker,
                broker.clone(),
                publisher.clone(),
                leader::LeaderRecord {
                    url: url.clone(),
                    epoch,
                },
                shutdown.clone(),
            );
        }
        let routing = Routing {
            commands: commands.clone(),
            publisher,
            logs: logs.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            epoch,
            inline_most,
            uploads: upload_limits(&config),
        };
        spawn_consumers(&tracker, &config, &broker, routing, &shutdown);
        let app = Arc::new(http::AppState {
            store: store.clone(),
            blobs,
            logs,
            log_archive,
            broker: broker.clone(),
            names: config.names.clone(),
            metrics,
            commands,
            public_url: url.clone(),
            csrf: http::csrf::Csrf::new(&url),
            auth: config
                .token
                .as_deref()
                .map(|token| http::auth::Auth::new(token, config.read_token.as_deref())),
            shutdown: shutdown.clone(),
            uploads: upload_limits(&config),
        });
        gate.open(http::router(app));
        stop_serving_unless_started.disarm();
        tracker.close();

        write_url_file(&config, &url)?;
        tracing::info!(
            "controller for namespace {} at {url} (broker {})",
            config.names,
            broker.url()
        );
        Ok(Controller {
            url,
            tracker,
            shutdown,
            store,
            broker,
            lock_lost,
        })
    }

    /// The public base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns after shutdown is cancelled and every task finished, with the state flushed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        self.tracker.wait().await;
        self.store
            .flush()
            .await
            .context("flushing the state store")?;
        self.broker.close().await;
        match self.lock_lost.lock().ok().and_then(|mut why| why.take()) {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// With `--state-journal stream`, brings sled up to the end of the journal before anything
/// reads it, so a controller on a new data dir takes over the journal's state, and starts
/// taking snapshots (`--state-snapshot-every`); returns this controller's epoch (0 without the
/// journal).
async fn attach_journal(
    config: &ControllerConfig,
    store: &Store,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    if config.state_journal == config::StateJournal::Off {
        return Ok(0);
    }
    let most = drover_amqp::JOURNAL_MAX_BYTES / 4;
    if config.state_snapshot_every > most {
        anyhow::bail!(
            "--state-snapshot-every {} is more than a quarter of what the journal {} keeps \
             ({} bytes): its oldest records could go before a snapshot covers them; set at \
             most {most}",
            config.state_snapshot_every,
            config.names.journal(),
            drover_amqp::JOURNAL_MAX_BYTES
        );
    }
    let broker = connect(config, "controller journal").await?;
    let began = std::time::Instant::now();
    let replayed = store::journal::attach(store, &broker, config.state_snapshot_every).await?;
    tracing::info!(
        "state journal {}: {}replayed {} journal record(s) in {:.2?}, applied {} batch(es), now \
         at batch {}, leading as epoch {}{}",
        config.names.journal(),
        match replayed.snapshot {
            Some(seq) => format!("loaded the snapshot of batch {seq}, "),
            None => String::new(),
        },
        replayed.records,
        began.elapsed(),
        replayed.batches,
        replayed.seq,
        replayed.epoch,
        match replayed.seeded {
            0 => String::new(),
            n => format!(", seeded with {n} record(s) of the existing store"),
        }
    );
    tracker.spawn(store::snapshot::run(
        store.clone(),
        broker,
        shutdown.clone(),
    ));
    Ok(replayed.epoch)
}

/// Checks the address may be served as configured and listens on it; returns the listener and
/// the public base URL.
async fn bind_http(config: &ControllerConfig) -> anyhow::Result<(TcpListener, String)> {
    http::auth::check_exposure(
        config.http_addr.ip(),
        config.token.as_deref(),
        config.read_token.as_deref(),
        config.allow_unauthenticated,
    )
    .map_err(anyhow::Error::msg)?;
    let listener = http::serve::bind(config.http_addr)
        .with_context(|| format!("cannot listen on {}; is another controller running there? (choose another address with --http)", config.http_addr))?;
    let bound = listener.local_addr()?;
    let url = public_url(config, bound);
    if config.token.is_none() {
        tracing::warn!(
            "the HTTP API on {bound} is unauthenticated: anyone who can reach it can read artifacts and abort runs; set --token (DROVER_TOKEN) to require one"
        );
    }
    Ok((listener, url))
}

/// A connection to the configured broker (retrying for [`BROKER_PATIENCE`]) as `client`.
async fn connect(config: &ControllerConfig, client: &str) -> anyhow::Result<Broker> {
    Ok(Broker::connect_with_retry(
        &config.amqp_url,
        config.names.clone(),
        client,
        BROKER_PATIENCE,
    )
    .await?
    .with_max_message_size(config.max_message_size)
    .with_queues(config.queue_settings))
}

/// Connects to the broker (retrying for [`BROKER_PATIENCE`]), takes the namespace's controller
/// lock ([`leader`]) before anything else (with the journal, standing by while another
/// controller holds it, which `gate` then tells HTTP clients), declares the namespace's topology
/// and opens the publisher. Jobs are signed when a signing key is configured.
async fn connect_broker(
    config: &ControllerConfig,
    url: &str,
    gate: &http::gate::Gate,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<Broker>, Publisher)> {
    let signer = match &config.job_signing_key {
        Some(path) => {
            warn_if_readable_by_others(path);
            Some(Arc::new(JobSigner::from_file(path)?))
        }
        None => None,
    };
    let broker = connect(config, &leader::connection_name(url)).await?;
    match config.state_journal {
        config::StateJournal::Off => leader::take(&broker, leader::Alone::LocalState).await?,
        config::StateJournal::Stream if config.artifact_store == StoreLocation::Local => {
            leader::take(&broker, leader::Alone::LocalArtifacts).await?
        }
        config::StateJournal::Stream => {
            leader::take_or_stand_by(
                &broker,
                shutdown,
                |why| gate.waiting_for(http::gate::Inactive::Standby, why),
                |leader| {
                    // Its own URL in the record (a restart on the same address): no redirect.
                    if leader.url.trim_end_matches('/') != url {
                        gate.redirect_reads_to(&leader.url);
                    }
                },
            )
            .await?;
            gate.waiting_for(
                http::gate::Inactive::Starting,
                format!(
                    "the controller of namespace {} is starting: it holds the lock and is \
                 replaying the state journal",
                    config.names
                ),
            );
        }
    }
    broker.declare_topology().await?;
    let broker = Arc::new(broker);
    let mut publisher = broker.publisher().await?;
    match signer {
        Some(signer) => {
            tracing::info!(
                "step jobs are signed with the key in {:?}",
                config.job_signing_key
            );
            publisher.sign_jobs(signer);
        }
        None => tracing::info!(
            "step jobs are not signed (no --job-signing-key): any broker user allowed to publish to {} can make agents run commands",
            config.names.jobs_exchange()
        ),
    }
    Ok((broker, publisher))
}

/// Warns when the signing key file is readable by other users.
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "the job signing key {} can be read by other users (mode {:o}); make it mode 600",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

/// The scheduler's state as the store left it: every unfinished run, the cache index and the
/// agents.
fn restore_state(
    config: &ControllerConfig,
    url: &str,
    artifact_store: Option<ArtifactStoreRef>,
    inline_outputs: u64,
    epoch: u64,
    loaded: Loaded,
) -> State {
    let mut state = State::new(SchedulerConfig {
        controller_url: url.to_string(),
        lease_ms: config.lease.as_millis() as u64,
        artifact_store,
        epoch,
        inline_outputs,
    });
    state.queue_limits = config.queue_limits.clone();
    state.max_lost_attempts = config.max_lost_attempts;
    state.max_steps = config.max_steps;
    state.step_priorities = config.queue_settings.has_priorities();
    state.names = config.names.clone();
    tracing::info!("loaded {} unfinished run(s)", loaded.runs.len());
    state.runs = loaded
        .runs
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    state.cache = loaded.cache;
    state.agents = loaded
        .agents
        .into_iter()
        .map(|a| (a.info.id.clone(), a))
        .collect();
    state
}

/// Most bytes of a step's outputs that travel inside its `Finished` rather than in an upload:
/// below this size the upload's round trip, its temp file and its `fsync` cost more than the
/// copy through the broker (see ARCHITECTURE.md, "Costs and batching").
const INLINE_OUTPUTS: u64 = 64 * 1024;

/// How many bytes of a step's outputs its `Finished` may carry: [`INLINE_OUTPUTS`], or less
/// where the message size limit or `--max-artifact-size` is smaller; none when agents move
/// artifacts to a bucket themselves (the controller would only pass the bytes on).
fn inline_outputs(config: &ControllerConfig, bucket: bool) -> u64 {
    match bucket {
        true => 0,
        false => INLINE_OUTPUTS
            .min(config.max_message_size as u64 / 4)
            .min(config.max_artifact_size),
    }
}

/// What blobs stored by this controller must keep to.
fn upload_limits(config: &ControllerConfig) -> http::files::UploadLimits {
    http::files::UploadLimits {
        max_size: config.max_artifact_size,
        min_free_space: config.min_free_space,
        disk: (config.artifact_store == StoreLocation::Local).then(|| config.blobs_dir()),
    }
}

/// One consumer each for the services queue (submissions, aborts) and the events queue.
fn spawn_consumers(
    tracker: &TaskTracker,
    config: &ControllerConfig,
    broker: &Broker,
    routing: Routing,
    shutdown: &CancellationToken,
) {
    for (source, queue) in [
        (Source::Services, config.names.services()),
        (Source::Events, config.names.events()),
    ] {
        tracker.spawn(consume(
            source,
            broker.clone(),
            queue,
            PREFETCH,
            routing.clone(),
            shutdown.clone(),
        ));
    }
}

/// Whether complete step logs are archived in the artifact store: only when both the run state
/// (the journal) and the store (a bucket) outlive the data dir. Otherwise the archive would be
/// lost with the logs, or nothing durable would say where it is.
fn archives_logs(config: &ControllerConfig) -> bool {
    config.state_journal == config::StateJournal::Stream
        && config.artifact_store != StoreLocation::Local
}

/// The configured blob store, and what jobs tell agents about it (`None`: through the HTTP API).
async fn open_artifact_store(
    config: &ControllerConfig,
) -> anyhow::Result<(Arc<dyn BlobStore>, Option<ArtifactStoreRef>)> {
    match &config.artifact_store {
        StoreLocation::Local => {
            let local = LocalBlobs::open(&config.blobs_dir())?;
            Ok((Arc::new(local), None))
        }
        StoreLocation::S3(location) => {
            let settings: Vec<(&str, &str)> = config
                .s3_settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let store = ObjectBlobs::connect_with(location, &settings)?;
            store.check().await.with_context(|| {
                format!(
                    "cannot use the artifact store {}; check the bucket, --s3-endpoint and the AWS_* credentials",
                    store.describe()
                )
            })?;
            tracing::info!("artifacts in {}", store.describe());
            Ok((Arc::new(store), Some(location.to_ref())))
        }
    }
}

fn public_url(config: &ControllerConfig, bound: SocketAddr) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    if bound.ip().is_unspecified() {
        tracing::warn!(
            "the HTTP API listens on every interface; links and jobs use http://127.0.0.1:{}, so agents on other machines need --public-url",
            bound.port()
        );
        return format!("http://127.0.0.1:{}", bound.port());
    }
    format!("http://{bound}")
}

/// Writes the URL atomically, so a reader never sees half of it.
fn write_url_file(config: &ControllerConfig, url: &str) -> anyhow::Result<()> {
    let path = config.url_file();
    let tmp = path.with_extension("url.tmp");
    std::fs::write(&tmp, format!("{url}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
