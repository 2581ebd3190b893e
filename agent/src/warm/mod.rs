//! Warm starts for Python function steps: per step environment, a long-lived Python (the warm
//! parent, [`parent`]) that has imported what the environment's steps import ([`imports`]) and
//! forks each step's process ([`child`]), so a step does not pay for starting an interpreter
//! and importing its libraries again.
//!
//! A parent is keyed by the interpreter, the bundled SDK and the step's environment except the
//! per-attempt variables ([`PER_ATTEMPT`]): every variable that can change what an import does
//! (`OMP_*`, `CUDA_VISIBLE_DEVICES`, `TZ`, `PYTHONHASHSEED`, ...) is part of the key. The modules
//! it preloads grow with what its steps import (in the parent, between forks; never a module of
//! the exclude list, and a module whose import starts a thread retires the parent and is never
//! preloaded again). Parents are stopped when idle, and the least recently used ones when their
//! memory passes the budget. Whatever goes wrong before a step's process is forked (no parent,
//! a parent that died, does not answer or cannot preload), the step starts cold; once forked it
//! runs to its end like a cold one, its status kept even if the parent dies.

mod ahead;
mod child;
mod imports;
mod parent;
mod stops;

use crate::process::{Ended, ProcessSpec};
use parent::{Launch, Parent};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stops::{Stop, Tally};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

pub use ahead::BytecodeCache;
pub use imports::DEFAULT_EXCLUDE;
pub use parent::SCRIPT;

/// Variables that differ between attempts: not part of a parent's key; each child gets its
/// step's values.
pub const PER_ATTEMPT: [&str; 7] = [
    "HOME",
    "TMPDIR",
    "DROVER_WORKDIR",
    "DROVER_RUN_ID",
    "DROVER_STEP",
    "DROVER_ATTEMPT",
    "DROVER_CHANNEL",
];

/// Keys of steps with a `PYTHONHASHSEED` of their own seen so far, at most.
const SEEDED_MEMORY: usize = 10_000;

/// How long a parent may take to import what a step needs.
const PRELOAD_PATIENCE: Duration = Duration::from_secs(300);

/// `--python-prewarm*`.
#[derive(Debug, Clone)]
pub struct WarmConfig {
    pub enabled: bool,
    /// The resident memory all parents may hold together (the most recently used one is kept
    /// even when it alone is larger).
    pub memory: u64,
    /// A parent unused this long is stopped.
    pub idle: Duration,
    /// Top-level modules never preloaded, on top of [`DEFAULT_EXCLUDE`].
    pub exclude: Vec<String>,
    /// The machine's bytecode cache, filled after preloads and used before them; `None`: off.
    pub bytecode_cache: Option<BytecodeCache>,
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory: 2 << 30,
            idle: Duration::from_secs(600),
            exclude: Vec::new(),
            bytecode_cache: None,
        }
    }
}

/// One parent's place: locked while it starts, preloads or forks.
type Place = Arc<tokio::sync::Mutex<Option<Parent>>>;

/// The warm parents of one agent.
pub struct Pool {
    config: WarmConfig,
    env_root: PathBuf,
    /// Configured exclusions and modules seen to start threads.
    exclude: Mutex<BTreeSet<String>>,
    places: Mutex<HashMap<String, Place>>,
    tally: Tally,
    /// Keys with their own `PYTHONHASHSEED` whose first step started cold.
    seeded: Mutex<HashSet<String>>,
}

/// How a step's process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Forked by a warm parent.
    Warm,
    /// A new interpreter.
    Cold,
}

impl Pool {
    /// A pool for environments under `env_root`. With warm starts on, the agent becomes the
    /// child subreaper: a step's process whose parent died is reparented to it and its status
    /// read here.
    pub fn new(config: WarmConfig, env_root: PathBuf) -> Pool {
        if config.enabled
            && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
        {
            tracing::warn!(
                "cannot become the child subreaper ({e}): the status of a warm step whose parent dies is lost"
            );
        }
        let exclude = Mutex::new(imports::exclusions(&config.exclude));
        Pool {
            config,
            env_root,
            exclude,
            places: Mutex::new(HashMap::new()),
            tally: Tally::default(),
            seeded: Mutex::new(HashSet::new()),
        }
    }

    /// Whether a step of `key` with its own `PYTHONHASHSEED` came before. A pipeline driver
    /// sets a new seed for each run, so a parent started for its key would serve that one
    /// process and then hold its memory until it idles out: such a key gets a parent from its
    /// second step on.
    fn seeded_before(&self, key: &str) -> bool {
        let mut seeded = self.seeded.lock().unwrap_or_else(|e| e.into_inner());
        if seeded.contains(key) {
            return true;
        }
        if seeded.len() >= SEEDED_MEMORY {
            seeded.clear();
        }
        seeded.insert(key.to_string());
        false
    }

    /// Its parents' starts and stops by reason so far.
    pub fn counts(&self) -> drover_protocol::message::WarmParents {
        self.tally.counts()
    }

    /// Takes the parent out of `held` (stopping it) for `reason`, logged and counted.
    fn retire(&self, key: &str, held: &mut Option<Parent>, reason: Stop, detail: &str) {
        if let Some(parent) = held.take() {
            self.tally
                .stopped(key, parent.pid(), parent.forks, reason, detail);
        }
    }

    /// Runs the harness `spec` describes in a process forked by a warm parent of its
    /// environment, `source` and `requirements` being the step's; `None` when the step must
    /// start cold (nothing was started).
    pub async fn run(
        &self,
        spec: &ProcessSpec,
        source: &str,
        requirements: &[String],
        output: Sender<Vec<u8>>,
        cancel: CancellationToken,
    ) -> Option<std::io::Result<Ended>> {
        if !self.config.enabled || spec.user.is_some() {
            return None;
        }
        let [python, harness, ..] = spec.argv.as_slice() else {
            return None;
        };
        let bundle = Path::new(harness).parent()?;
        let shared_env = shared_env(&spec.env);
        // A variable naming the workdir (an input's path) would make a parent per attempt.
        let workdir = spec.cwd.display().to_string();
        if shared_env.values().any(|v| v.contains(&workdir)) {
            return None;
        }
        let key = key(python, bundle, requirements, &shared_env);
        let modules = {
            let exclude = self.exclude.lock().unwrap_or_else(|e| e.into_inner());
            imports::modules(source, &exclude)
        };
        let place = self.place(&key);
        let mut held = place.lock().await;
        if let Some(how) = held.as_mut().and_then(Parent::ended) {
            self.retire(
                &key,
                &mut held,
                Stop::Died,
                &format!("{how}; starting another"),
            );
        }
        if held.is_none() && shared_env.contains_key("PYTHONHASHSEED") && !self.seeded_before(&key)
        {
            tracing::debug!(
                "a step with its own PYTHONHASHSEED starts cold: environment {key} gets a warm parent at its next step"
            );
            return None;
        }
        if held.is_none() {
            let home = parent::home(&self.env_root, &key);
            let launch = Launch {
                python: Path::new(python),
                bundle,
                env: &shared_env,
                home: &home,
            };
            match std::fs::create_dir_all(&home).and_then(|()| Parent::start(&launch)) {
                Ok(started) => {
                    tracing::info!(
                        "warm parent {} started for environment {key} ({python})",
                        started.pid()
                    );
                    self.tally.started();
                    *held = Some(started);
                }
                Err(e) => {
                    tracing::warn!("cannot start a warm parent with {python}: {e}");
                    return None;
                }
            }
        }
        let warm = held.as_mut()?;
        let new: BTreeSet<String> = modules.difference(&warm.tried).cloned().collect();
        if !new.is_empty() {
            let began = std::time::Instant::now();
            let home = parent::home(&self.env_root, &key);
            let launch = Launch {
                python: Path::new(python),
                bundle,
                env: &shared_env,
                home: &home,
            };
            let cache = self.config.bytecode_cache.as_ref();
            let ahead = ahead::Ahead::start(&launch, &new, cache);
            let preloaded = warm.preload(&new, PRELOAD_PATIENCE).await;
            drop(ahead);
            if let (Ok(_), Some(cache)) = (&preloaded, cache) {
                ahead::harvest(&launch, &new, cache);
            }
            match preloaded {
                Ok(preloaded) => {
                    if let Some(module) = preloaded.threads_from {
                        let detail = format!(
                            "importing {module} started a thread; {module} is never preloaded again"
                        );
                        self.exclude
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(module);
                        self.retire(&key, &mut held, Stop::Thread, &detail);
                        return None;
                    }
                    tracing::debug!(
                        "warm parent {} imported {:?} in {} ms (not found: {:?})",
                        warm.pid(),
                        preloaded.imported,
                        began.elapsed().as_millis(),
                        preloaded.missing
                    );
                }
                Err(e) => {
                    let detail = format!("it could not preload {new:?}: {e}");
                    self.retire(&key, &mut held, Stop::Preload, &detail);
                    return None;
                }
            }
        }
        let (reader, writer) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(e) => return Some(Err(e)),
        };
        let began = std::time::Instant::now();
        let parent_pid = warm.pid();
        let asked = match warm.ask_fork(&spec.argv, &spec.env, &spec.cwd, writer) {
            Ok(asked) => asked,
            Err(e) => {
                let detail = format!("it could not fork a step: {e}");
                self.retire(&key, &mut held, Stop::Fork, &detail);
                return None;
            }
        };
        // Other steps of this key may ask while this one waits for its answer.
        drop(held);
        let forking = match asked.forked().await {
            Ok(forking) => forking,
            Err(e) => {
                let detail = format!("it could not fork a step: {e}");
                let mut held = place.lock().await;
                // Unless another step has replaced it meanwhile.
                if held.as_ref().is_some_and(|p| p.pid() == parent_pid) {
                    self.retire(&key, &mut held, Stop::Fork, &detail);
                }
                return None;
            }
        };
        tracing::debug!(
            "warm parent of environment {key} forked process {} in {:.1} ms",
            forking.pid,
            began.elapsed().as_secs_f64() * 1000.0
        );
        self.keep_within_budget(&key);
        let reaper = crate::reaper::current();
        Some(child::run(reaper, spec, forking, reader, output, cancel).await)
    }

    fn place(&self, key: &str) -> Place {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        places.entry(key.to_string()).or_default().clone()
    }

    /// Stops the least recently used parents (not `keep`'s) while all hold more than the budget.
    fn keep_within_budget(&self, keep: &str) {
        let places: Vec<(String, Place)> = {
            let places = self.places.lock().unwrap_or_else(|e| e.into_inner());
            places.iter().map(|(k, p)| (k.clone(), p.clone())).collect()
        };
        // A place busy starting or forking is left alone.
        let mut held: Vec<_> = places
            .iter()
            .filter_map(|(k, p)| Some((k, p.try_lock().ok()?)))
            .filter(|(_, p)| p.is_some())
            .collect();
        let mut total: u64 = held
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(Parent::rss_bytes))
            .sum();
        held.sort_by_key(|(_, p)| p.as_ref().map(|p| p.last_used));
        for (key, parent) in held.iter_mut() {
            if total <= self.config.memory {
                break;
            }
            if key.as_str() == keep {
                continue;
            }
            let rss = parent.as_ref().map_or(0, Parent::rss_bytes);
            let detail = format!(
                "warm parents hold {total} bytes, more than --python-prewarm-memory {}",
                self.config.memory
            );
            self.retire(key, parent, Stop::Memory, &detail);
            total = total.saturating_sub(rss);
        }
    }

    /// Stops idle and dead parents until `stop`, then every parent.
    pub async fn keep(&self, stop: CancellationToken) {
        let every =
            (self.config.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let places: Vec<(String, Place)> = {
                let places = self.places.lock().unwrap_or_else(|e| e.into_inner());
                places.iter().map(|(k, p)| (k.clone(), p.clone())).collect()
            };
            for (key, place) in places {
                let Ok(mut held) = place.try_lock() else {
                    continue;
                };
                let Some(parent) = held.as_mut() else {
                    continue;
                };
                if let Some(how) = parent.ended() {
                    self.retire(&key, &mut held, Stop::Died, &how);
                } else if parent.last_used.elapsed() >= self.config.idle {
                    let detail = format!(
                        "no step for {}",
                        humantime::format_duration(self.config.idle)
                    );
                    self.retire(&key, &mut held, Stop::Idle, &detail);
                }
            }
        }
        let places: Vec<(String, Place)> = {
            let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
            places.drain().collect()
        };
        for (key, place) in places {
            let mut held = place.lock().await;
            self.retire(&key, &mut held, Stop::Shutdown, "the agent stops");
        }
    }
}

/// The step's environment without the per-attempt variables.
fn shared_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| !PER_ATTEMPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A parent's key: the interpreter, the bundle (its directory names its digest), the
/// requirements (the interpreter's virtualenv already depends on them; with `--python-env
/// system` they are not installed, and steps with other requirements still get another parent)
/// and the shared environment.
fn key(
    python: &str,
    bundle: &Path,
    requirements: &[String],
    env: &BTreeMap<String, String>,
) -> String {
    let mut hash = Sha256::new();
    let mut requirements = requirements.to_vec();
    requirements.sort();
    let bundle = bundle.display().to_string();
    for part in [python, bundle.as_str()]
        .into_iter()
        .chain(requirements.iter().map(String::as_str))
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update([1]);
    for (k, v) in env {
        hash.update(k.as_bytes());
        hash.update([b'=']);
        hash.update(v.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_per_attempt_variables_stay_out_of_the_key() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let bundle = Path::new("/b/1");
        let a = env(&[("HOME", "/w/1"), ("DROVER_STEP", "a"), ("PATH", "/bin")]);
        let b = env(&[("HOME", "/w/2"), ("DROVER_STEP", "b"), ("PATH", "/bin")]);
        let none: &[String] = &[];
        assert_eq!(
            key("py", bundle, none, &shared_env(&a)),
            key("py", bundle, none, &shared_env(&b))
        );
        let seeded = env(&[("PATH", "/bin"), ("PYTHONHASHSEED", "0")]);
        let threads = env(&[("PATH", "/bin"), ("OMP_NUM_THREADS", "2")]);
        let plain = key("py", bundle, none, &shared_env(&a));
        assert_ne!(plain, key("py", bundle, none, &shared_env(&seeded)));
        assert_ne!(plain, key("py", bundle, none, &shared_env(&threads)));
        assert_ne!(plain, key("py2", bundle, none, &shared_env(&a)));
        assert_ne!(plain, key("py", Path::new("/b/2"), none, &shared_env(&a)));
        let six = ["six".to_string()];
        assert_ne!(plain, key("py", bundle, &six, &shared_env(&a)));
    }
}
