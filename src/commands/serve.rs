//! Long-running services: `drover up`, `drover controller`, `drover agent`.

use super::names;
use crate::cli::{
    AgentArgs, AgentOptions, ArtifactTransfer, ControllerArgs, Global, OnOff, PythonEnv,
    StepCleanup, UpArgs,
};
use crate::signals::on_signals;
use anyhow::{Context, Result};
use drover_agent::pyenv::{PyEnvConfig, PythonEnvMode};
use drover_agent::{Agent, AgentConfig, QueueOrder};
use drover_amqp::signing::{JobSigner, JobVerifier};
use drover_controller::{Controller, ControllerConfig};
use drover_protocol::{AgentId, QueueName};
use drover_storage::StoreLocation;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn controller_config(g: &Global, args: &ControllerArgs) -> Result<ControllerConfig> {
    let artifact_store = match &args.artifact_store {
        StoreLocation::Local => StoreLocation::Local,
        StoreLocation::S3(s3) => StoreLocation::S3(
            s3.clone()
                .with_endpoint(args.s3_endpoint.clone())?
                .with_region(aws_region()),
        ),
    };
    Ok(ControllerConfig {
        amqp_url: g.amqp(),
        names: names(g)?,
        data_dir: args.data_dir.clone(),
        http_addr: args.http,
        public_url: args.public_url.clone(),
        lease: args.lease,
        queue_limits: args
            .queue_limits
            .iter()
            .map(|(q, n)| Ok((QueueName::new(q.as_str())?, *n)))
            .collect::<Result<_, drover_protocol::IdError>>()
            .context("bad --queue-limit")?,
        max_lost_attempts: args.max_lost_attempts,
        token: g.token.clone(),
        read_token: args.read_token.clone(),
        allow_unauthenticated: args.allow_unauthenticated,
        http_limits: Default::default(),
        artifact_store,
        // Handed over at start, no longer in the environment (see `secrets`).
        s3_settings: crate::secrets::aws_settings(),
        max_log_size: args.max_log_size,
        log_tail_patience: drover_controller::config::DEFAULT_LOG_TAIL_PATIENCE,
        max_artifact_size: args.max_artifact_size,
        min_free_space: args.min_free_space,
        max_steps: args.max_steps,
        max_message_size: message_size(g)?,
        queue_settings: g.queues(),
        job_signing_key: args.job_signing_key.clone(),
        state_journal: args.state_journal,
        state_snapshot_every: args.state_snapshot_every,
    })
}

/// The user `--run-as` names, by name or uid.
fn run_as(text: &str) -> Result<drover_agent::RunAs> {
    use nix::unistd::{Uid, User};
    let found = match text.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(text),
    }
    .with_context(|| format!("cannot look up --run-as {text:?}"))?
    .with_context(|| format!("--run-as {text:?}: no such user"))?;
    Ok(drover_agent::RunAs {
        name: found.name,
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
    })
}

/// `--python-prewarm*` and `--python-bytecode-cache*`.
fn prewarm_config(options: &AgentOptions) -> drover_agent::warm::WarmConfig {
    drover_agent::warm::WarmConfig {
        enabled: options.python_prewarm == OnOff::On,
        memory: options.python_prewarm_memory,
        idle: options.python_prewarm_idle,
        exclude: options.python_prewarm_exclude.clone(),
        bytecode_cache: drover_agent::warm::BytecodeCache::from_setting(
            &options.python_bytecode_cache,
            options.python_bytecode_cache_size,
        ),
    }
}

/// The region the controller's environment names, passed on to agents with the bucket.
fn aws_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn agent_config(
    g: &Global,
    options: &AgentOptions,
    work_dir: PathBuf,
    env_root: PathBuf,
    id: Option<AgentId>,
    controller_urls: Vec<String>,
    s3_endpoint: Option<String>,
) -> Result<AgentConfig> {
    let mut queues = Vec::new();
    let mut queue_limits = BTreeMap::new();
    for text in &options.queues {
        let (queue, limit) = parse_queue(text)?;
        if let Some(n) = limit {
            queue_limits.insert(queue.clone(), n);
        }
        queues.push(queue);
    }
    Ok(AgentConfig {
        amqp_url: g.amqp(),
        names: names(g)?,
        queues,
        queue_limits,
        order: if options.order_fairness {
            QueueOrder::RoundRobin
        } else {
            QueueOrder::Priority
        },
        concurrency: options.concurrency.slots(),
        services_mode: options.services_mode,
        work_dir,
        keep_workdirs: options.keep_workdirs,
        controller_urls,
        heartbeat: Duration::from_secs(2),
        kill_grace: Duration::from_secs(5),
        drain_timeout: options.drain_timeout,
        python: PyEnvConfig {
            mode: match options.python_env {
                PythonEnv::Venv => PythonEnvMode::Venv,
                PythonEnv::System => PythonEnvMode::System,
            },
            env_root,
            base_python: options.python.clone(),
            build_timeout: options.python_build_timeout,
            compile_all: options.run_as.is_some(),
            installer: Default::default(),
        },
        id,
        token: g.token.clone(),
        artifact_transfer: match options.artifact_transfer {
            ArtifactTransfer::Direct => drover_agent::ArtifactTransfer::Direct,
            ArtifactTransfer::Controller => drover_agent::ArtifactTransfer::Controller,
        },
        s3_endpoint,
        // Set by the caller: `agent` has its own flag, `up` the controller's.
        max_log_size: drover_agent::DEFAULT_MAX_LOG_SIZE,
        step_cleanup: match options.step_cleanup {
            StepCleanup::Auto => drover_agent::CleanupMode::Auto,
            StepCleanup::Cgroup => drover_agent::CleanupMode::Cgroup,
            StepCleanup::Subreaper => drover_agent::CleanupMode::Subreaper,
        },
        s3_settings: crate::secrets::aws_settings(),
        run_as: options.run_as.as_deref().map(run_as).transpose()?,
        job_verifier: options
            .job_verify_key
            .as_deref()
            .map(JobVerifier::from_file)
            .transpose()?,
        max_message_size: message_size(g)?,
        queue_settings: g.queues(),
        prewarm: prewarm_config(options),
    })
}

/// `--max-message-size` as a byte count.
pub(crate) fn message_size(g: &Global) -> Result<usize> {
    usize::try_from(g.max_message_size).context("--max-message-size is too large")
}

/// `NAME` or `NAME:LIMIT` (at most LIMIT steps from that queue at once on this agent).
fn parse_queue(text: &str) -> Result<(QueueName, Option<u32>)> {
    let (name, limit) = match text.rsplit_once(':') {
        Some((name, n)) => {
            let n: u32 = n.parse().ok().filter(|n| *n >= 1).with_context(|| {
                format!("bad --queue {text:?}: the limit after ':' must be a whole number >= 1")
            })?;
            (name, Some(n))
        }
        None => (text, None),
    };
    let queue = QueueName::new(name).with_context(|| format!("bad --queue {text:?}"))?;
    Ok((queue, limit))
}

/// Where to point a browser; the token itself is not printed.
fn web_ui_hint(url: &str, token: bool) -> String {
    if token {
        format!("web UI: {url}/?token=<your token> (once per browser; a cookie remembers it)")
    } else {
        format!("web UI: {url}/")
    }
}

/// The directory, created readable by this user only when missing (it holds artifacts, logs
/// and the state store, or steps' work dirs).
fn absolute(path: &Path) -> Result<PathBuf> {
    absolute_with(path, 0o700)
}

/// The directory, created with `mode` when missing.
fn absolute_with(path: &Path, mode: u32) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// Controller plus N agents in one process.
pub async fn up(g: &Global, args: UpArgs) -> Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    on_signals(shutdown.clone(), abort.clone());
    anyhow::ensure!(
        args.agent.run_as.is_none(),
        "--run-as needs a separate `drover agent --work-dir DIR`: the work dirs of `drover up` \
         are inside its private data dir, which no other user may enter"
    );
    // Its agents would refuse these only after the controller started.
    let own = names(g)?;
    for text in &args.agent.queues {
        drover_agent::refuse_own_queue(&own, &parse_queue(text)?.0)?;
    }
    let data_dir = absolute(&args.controller.data_dir)?;
    let mut cconf = controller_config(g, &args.controller)?;
    cconf.data_dir = data_dir.clone();
    // The in-process agents check what the controller signs.
    let verifier = match &cconf.job_signing_key {
        Some(path) => Some(JobSigner::from_file(path)?.verifier()),
        None => None,
    };
    if let Some(key) = &args.agent.job_verify_key {
        let given = JobVerifier::from_file(key)?;
        let probe = b"drover up";
        let matches = match &cconf.job_signing_key {
            Some(path) => given
                .verify(probe, Some(&JobSigner::from_file(path)?.sign(probe)))
                .is_ok(),
            None => false,
        };
        anyhow::ensure!(
            matches,
            "--job-verify-key {} does not belong to a --job-signing-key of this `drover up`: its agents would dead-letter every job; give `up` the signing key alone (its agents then check its signatures)",
            key.display()
        );
    }
    let controller = Controller::start(cconf, shutdown.clone()).await?;
    let url = controller.url().to_string();
    let mut agents = Vec::new();
    // The agents share one Python root: one choice of installer (and one uv install) for all,
    // and one pool of warm parents (one per environment, one memory budget).
    let installer = drover_agent::pyenv::InstallerCell::default();
    let pyenv = data_dir.join("pyenv");
    let warm = Arc::new(drover_agent::warm::Pool::new(
        prewarm_config(&args.agent),
        pyenv.clone(),
    ));
    let stop_warm = CancellationToken::new();
    let keeping = tokio::spawn({
        let (warm, stop) = (warm.clone(), stop_warm.clone());
        async move { warm.keep(stop).await }
    });
    for i in 0..args.agents.max(1) {
        let mut conf = agent_config(
            g,
            &args.agent,
            data_dir.join("work").join(format!("agent-{i}")),
            pyenv.clone(),
            None,
            vec![url.clone()],
            None,
        )?;
        conf.max_log_size = args.controller.max_log_size;
        conf.python.installer = installer.clone();
        if conf.job_verifier.is_none() {
            conf.job_verifier = verifier.clone();
        }
        agents
            .push(Agent::start_sharing(conf, shutdown.clone(), abort.clone(), warm.clone()).await?);
    }
    let workers = agents.len();
    let mut drivers = drivers_agent(g, &args.agent, &data_dir, &url)?;
    drivers.python.installer = installer;
    agents.push(Agent::start_sharing(drivers, shutdown.clone(), abort.clone(), warm).await?);
    eprintln!(
        "drover up: controller at {url} (namespace {}), {workers} agent(s) with {} each serving {:?} and one serving {} with no slot limit (pipeline drivers); Ctrl-C to stop",
        g.namespace,
        args.agent.concurrency.describe(),
        args.agent.queues,
        drover_protocol::names::DRIVERS_QUEUE,
    );
    eprintln!("{}", web_ui_hint(&url, g.token.is_some()));
    for agent in agents {
        agent.wait().await?;
    }
    stop_warm.cancel();
    let _ = keeping.await;
    controller.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// The agent `up` adds for pipeline drivers: services mode (a driver mostly waits, so it takes
/// no slot a step needs), serving the reserved `drivers` queue only.
fn drivers_agent(
    g: &Global,
    options: &AgentOptions,
    data_dir: &Path,
    url: &str,
) -> Result<AgentConfig> {
    let options = AgentOptions {
        queues: vec![drover_protocol::names::DRIVERS_QUEUE.to_string()],
        services_mode: true,
        ..options.clone()
    };
    let id = drover_agent::default_id(&drover_agent::hostname())?;
    let id = AgentId::new(format!("{id}-drivers")).context("bad drivers agent id")?;
    agent_config(
        g,
        &options,
        data_dir.join("work").join("drivers"),
        data_dir.join("pyenv"),
        Some(id),
        vec![url.to_string()],
        None,
    )
}

pub async fn controller(g: &Global, args: ControllerArgs) -> Result<ExitCode> {
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone(), CancellationToken::new());
    let mut conf = controller_config(g, &args)?;
    conf.data_dir = absolute(&args.data_dir)?;
    let controller = match Controller::start(conf, shutdown).await {
        Ok(controller) => controller,
        Err(e) if e.is::<drover_controller::StoppedStandingBy>() => {
            eprintln!("drover controller: {e}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e),
    };
    eprintln!("drover controller: listening at {}", controller.url());
    eprintln!("{}", web_ui_hint(controller.url(), g.token.is_some()));
    controller.wait().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn agent(g: &Global, args: AgentArgs) -> Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    on_signals(shutdown.clone(), abort.clone());
    // Steps of another user (--run-as) must enter it, though not list it.
    let mode = if args.options.run_as.is_some() {
        0o711
    } else {
        0o700
    };
    let work_dir = absolute_with(&args.work_dir, mode)?;
    let id = args
        .id
        .as_deref()
        .map(AgentId::new)
        .transpose()
        .context("bad --id")?;
    let mut conf = agent_config(
        g,
        &args.options,
        work_dir.join("jobs"),
        work_dir.join("pyenv"),
        id,
        if g.url_given { g.urls() } else { Vec::new() },
        args.s3_endpoint.clone(),
    )?;
    conf.max_log_size = args.max_log_size;
    let agent = Agent::start_with_abort(conf, shutdown, abort).await?;
    eprintln!(
        "drover agent {}: serving {:?} with {}",
        agent.id(),
        args.options.queues,
        if args.options.services_mode {
            "no slot limit (services mode)".to_string()
        } else {
            args.options.concurrency.describe()
        }
    );
    agent.wait().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_queue;

    #[test]
    fn queues_take_an_optional_limit() {
        let (q, n) = parse_queue("gpu:1").unwrap();
        assert_eq!((q.as_str(), n), ("gpu", Some(1)));
        assert_eq!(parse_queue("default").unwrap().1, None);
        for bad in ["gpu:0", "gpu:x", "gpu:", ":2", "a/b:1"] {
            assert!(parse_queue(bad).is_err(), "{bad}");
        }
    }
}
