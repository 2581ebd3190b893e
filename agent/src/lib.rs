//! drover's agent daemon: pulls step jobs from its queues, runs each in an isolated workdir,
//! streams its logs, uploads its outputs and reports back on the events queue.
//!
//! [`Agent::start`] locks its work dir ([`lock`]), kills what a killed predecessor left running
//! there ([`running`]), connects and spawns the tasks: [`serve`] (queue consumption within the
//! slot limit), [`heartbeat`] (leases, and fencing when cut off) and [`control`]
//! (cancellation); each job runs in [`job`], a Python function step with its [`channel`].

mod ahead;
mod artifacts;
mod channel;
mod claim;
mod config;
mod control;
mod epoch;
mod heartbeat;
mod inflight;
mod job;
mod lock;
mod logstream;
mod phases;
mod process;
pub mod pyenv;
pub mod reaper;
mod reports;
mod revoked;
mod run_as;
mod running;
mod serve;
mod slots;
mod spawn;
pub mod warm;
mod workdir;

pub use config::{
    AgentConfig, ArtifactTransfer, QueueOrder, RunAs, default_id, hostname, refuse_own_queue,
};
pub use logstream::DEFAULT_MAX_LOG_SIZE;
pub use reaper::CleanupMode;

use anyhow::Context;
use drover_amqp::{Broker, Publisher};
use drover_protocol::AgentId;
use drover_protocol::message::{AttemptRef, Revoke};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long start-up waits for the broker.
const BROKER_PATIENCE: Duration = Duration::from_secs(30);

/// What every task of one agent shares.
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub id: AgentId,
    pub host: String,
    pub broker: Broker,
    pub publisher: Publisher,
    /// Claims and results on their way to the events queue ([`reports`]).
    pub reports: reports::Reports,
    pub http: reqwest::Client,
    /// Which way each job's artifacts go.
    pub routes: artifacts::Routes,
    /// Attempts this agent holds (claimed, not yet reported), with their cancel switches.
    pub running: Mutex<HashMap<AttemptRef, CancellationToken>>,
    /// Jobs the controller revoked: dropped when taken ([`claim::take`]).
    pub revoked: revoked::Revoked,
    /// Attempts among `running` whose `Claimed` is not yet confirmed.
    pub inflight: Arc<inflight::InFlight>,
    pub draining: AtomicBool,
    /// Cancelled to abort running steps at once instead of draining them.
    pub abort: CancellationToken,
    /// The lease and controller of the latest job, for stopping steps when cut off.
    pub lease_terms: Mutex<Option<heartbeat::LeaseTerms>>,
    /// Attempts stopped because their lease ran out while the agent was cut off: not reported.
    pub fenced: Mutex<HashSet<AttemptRef>>,
    /// Warm parents for Python function steps (the agent's own, or its process's).
    pub warm: Arc<warm::Pool>,
    /// The highest controller epoch seen; jobs and cancels of a lower one are refused.
    pub epochs: epoch::Epochs,
    /// Emptied workdirs, renamed for the next jobs.
    pub spares: Arc<workdir::Spares>,
    /// The files that record the running attempts' process groups.
    pub entries: Arc<running::Entries>,
    /// Held for the agent's life: no other agent uses its work dir.
    _lock: lock::WorkDirLock,
}

impl Shared {
    pub fn running_attempts(&self) -> Vec<AttemptRef> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<AttemptRef> = running.keys().cloned().collect();
        list.sort();
        list
    }

    /// The token that stops `attempt`, registered when its job was taken ([`claim::take`]); a
    /// fresh one when it is not running here.
    pub fn cancel_token(&self, attempt: &AttemptRef) -> CancellationToken {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(attempt).cloned().unwrap_or_default()
    }

    pub fn cancel(&self, attempt: &AttemptRef) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(attempt) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Remembers `revoke` and stops the attempts it names that are held here; returns those.
    /// A job taken meanwhile either sees the notice or is among them: [`claim::take`] looks
    /// for it under the lock of `running`.
    pub fn revoke(&self, revoke: &Revoke) -> Vec<AttemptRef> {
        self.revoked.add(revoke, std::time::Instant::now());
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut stopped = Vec::new();
        for (attempt, token) in running.iter() {
            if revoked::names(revoke, attempt) {
                token.cancel();
                stopped.push(attempt.clone());
            }
        }
        stopped
    }

    /// Marks a running attempt as fenced and stops it; false when it is not running here or
    /// was fenced already.
    pub fn fence(&self, attempt: &AttemptRef) -> bool {
        let newly = self
            .fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(attempt.clone());
        newly && self.cancel(attempt)
    }

    pub fn is_fenced(&self, attempt: &AttemptRef) -> bool {
        let fenced = self.fenced.lock().unwrap_or_else(|e| e.into_inner());
        fenced.contains(attempt)
    }

    /// Whether the attempt was fenced, forgetting it.
    pub fn take_fenced(&self, attempt: &AttemptRef) -> bool {
        let mut fenced = self.fenced.lock().unwrap_or_else(|e| e.into_inner());
        fenced.remove(attempt)
    }
}

/// Kills the steps a previous agent on this work dir left running (it was killed, or its
/// machine went down) and removes their workdirs, before this agent takes any job.
async fn clean_up(config: &AgentConfig, reaper: &'static reaper::Reaper) -> anyhow::Result<()> {
    let work_dir = config.work_dir.clone();
    let (grace, keep) = (config.kill_grace, config.keep_workdirs);
    let cleaned = tokio::task::spawn_blocking(move || {
        let cleaned = running::clean_up(&work_dir, grace, keep);
        // What left the groups (setsid) is still in the attempts' cgroups.
        for c in &cleaned {
            reaper.kill_left(c.entry.pgid, c.entry.start_time, c.entry.cgroup.as_deref());
        }
        (cleaned, reaper.kill_orphaned())
    })
    .await?;
    let (cleaned, orphaned) = cleaned;
    if orphaned > 0 {
        tracing::warn!(
            "killed what {orphaned} attempt cgroup(s) of agent processes that are gone held"
        );
    }
    if let Some(text) = running::describe(&cleaned) {
        tracing::warn!("{text}");
    } else if !cleaned.is_empty() {
        tracing::info!(
            "{} step(s) a previous agent left had already ended",
            cleaned.len()
        );
    }
    Ok(())
}

/// A running agent.
pub struct Agent {
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Agent {
    /// Connects (retrying ~30 s), declares its queues and control queue, starts consuming.
    /// After `shutdown` it drains: running steps finish within the drain timeout.
    pub async fn start(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<Agent> {
        Self::start_with_abort(config, shutdown, CancellationToken::new()).await
    }

    /// Like [`Agent::start`]; cancelling `abort` after `shutdown` kills the running steps (their
    /// whole process groups) instead of waiting for them.
    pub async fn start_with_abort(
        config: AgentConfig,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> anyhow::Result<Agent> {
        Self::start_in(config, shutdown, abort, None).await
    }

    /// Like [`Agent::start_with_abort`], forking Python steps from the warm parents of `warm`:
    /// agents of one process share one pool, so they share one parent per environment and one
    /// memory budget. The caller keeps the pool ([`warm::Pool::keep`]) and stops it after the
    /// agents.
    pub async fn start_sharing(
        config: AgentConfig,
        shutdown: CancellationToken,
        abort: CancellationToken,
        warm: Arc<warm::Pool>,
    ) -> anyhow::Result<Agent> {
        Self::start_in(config, shutdown, abort, Some(warm)).await
    }

    async fn start_in(
        config: AgentConfig,
        shutdown: CancellationToken,
        abort: CancellationToken,
        shared_warm: Option<Arc<warm::Pool>>,
    ) -> anyhow::Result<Agent> {
        config.check()?;
        let reaper = reaper::init(config.step_cleanup)?;
        std::fs::create_dir_all(&config.work_dir)
            .with_context(|| format!("cannot create {}", config.work_dir.display()))?;
        let lock = lock::WorkDirLock::take(&config.work_dir)?;
        clean_up(&config, reaper).await?;
        let host = config::hostname();
        let id = match &config.id {
            Some(id) => id.clone(),
            None => config::default_id(&host)?,
        };
        let broker = Broker::connect_with_retry(
            &config.amqp_url,
            config.names.clone(),
            &format!("agent {id}"),
            BROKER_PATIENCE,
        )
        .await?
        .with_max_message_size(config.max_message_size)
        .with_queues(config.queue_settings);
        // Under per-role broker users an agent may not declare: the controller does.
        broker.declare_topology_if_permitted().await?;
        for q in &config.queues {
            broker
                .declare_user_queue_if_permitted(q)
                .await
                .with_context(|| format!("cannot declare queue {q}"))?;
        }
        match &config.job_verifier {
            Some(_) => tracing::info!("only signed jobs are run (--job-verify-key)"),
            None => tracing::info!(
                "jobs are not checked for a signature (no --job-verify-key): whoever may publish to the job queues can run commands here"
            ),
        }
        let publisher = broker.publisher().await?;
        let control = broker.consume_agent_control(&id).await.with_context(|| {
            format!(
                "cannot consume the control queue {} of agent {id}: is another agent with this id \
                 running (give this one another --id), or may this broker user not read it?",
                broker.names().agent_control_queue(&id)
            )
        })?;
        let http = config::http_client(config.token.as_deref(), &config.controller_urls)?;
        let routes = artifacts::Routes::new(
            config.artifact_transfer,
            config.s3_endpoint.clone(),
            config.s3_settings.clone(),
        );
        let own_warm = shared_warm.is_none();
        let warm = shared_warm.unwrap_or_else(|| {
            Arc::new(warm::Pool::new(
                config.prewarm.clone(),
                config.python.env_root.clone(),
            ))
        });
        let work_dir = config.work_dir.clone();
        let shared = Arc::new(Shared {
            config,
            id,
            host,
            broker,
            reports: reports::Reports::start(publisher.clone()),
            publisher,
            http,
            routes,
            running: Mutex::new(HashMap::new()),
            revoked: Default::default(),
            inflight: Arc::default(),
            draining: AtomicBool::new(false),
            abort,
            lease_terms: Mutex::new(None),
            fenced: Mutex::new(HashSet::new()),
            warm,
            epochs: Default::default(),
            spares: Arc::new(workdir::Spares::new(&work_dir)),
            entries: running::Entries::new(&work_dir),
            _lock: lock,
        });
        let tracker = TaskTracker::new();
        let jobs = TaskTracker::new();
        let stopped = CancellationToken::new();
        tracker.spawn(serve::serve(
            shared.clone(),
            jobs,
            shutdown.clone(),
            stopped.clone(),
        ));
        tracker.spawn(heartbeat::beat(shared.clone(), stopped.clone()));
        if own_warm {
            let (shared, stopped) = (shared.clone(), stopped.clone());
            tracker.spawn(async move { shared.warm.keep(stopped).await });
        }
        if shared.config.python.mode == pyenv::PythonEnvMode::Venv {
            // Said at start, not at the first build: whether uv is here, installed now, or
            // environments fall back to pip.
            let (shared, stopped) = (shared.clone(), stopped.clone());
            tracker.spawn(async move {
                tokio::select! {
                    _ = pyenv::installer(&shared.config.python) => {}
                    _ = stopped.cancelled() => {}
                }
            });
        }
        tracker.spawn(control::listen(shared.clone(), control, stopped));
        tracker.close();
        tracing::info!(
            "agent {} serving {:?} with {}; steps' leftover processes killed through {}",
            shared.id,
            shared.config.queues,
            slots::describe(&shared.config),
            reaper.describe()
        );
        Ok(Agent { shared, tracker })
    }

    pub fn id(&self) -> &AgentId {
        &self.shared.id
    }

    /// Returns once shutdown was requested and running jobs are finished (drain) or killed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.tracker.wait().await;
        reaper::current().remove_spares();
        // Stopping for good: nothing is left to cancel, so the control queue need not wait for
        // its expiry (a killed agent's does). Without a connection, none is opened for it.
        let broker = &self.shared.broker;
        if broker.is_connected()
            && let Err(e) = broker.delete_agent_control(&self.shared.id).await
        {
            tracing::debug!("cannot delete the control queue: {e}");
        }
        self.shared.broker.close().await;
        Ok(())
    }
}
