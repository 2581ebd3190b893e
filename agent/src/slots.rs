//! Slot accounting: the agent's own limit (none in services mode) and each queue's limit, and
//! a wake-up for the serve loop whenever a running job gives its slots back.
//!
//! A running attempt gives its agent slot back while it waits on a step it added (over its
//! channel) and takes it back before it goes on ([`AttemptSlot`]), so a component waiting on a
//! nested component cannot hold the only slot the nested one needs. An attempt taking its slot
//! back goes before new jobs: the serve loop gives up a slot it holds while idle.

use crate::config::AgentConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A job that gave its slots back sooner than this after it first held its agent slot was short
/// ([`Slots::last_short`]).
pub(crate) const SHORT: Duration = Duration::from_millis(100);

/// Prefetch of a queue consumer in services mode: jobs are claimed (and acked) at once, so
/// this bounds only the deliveries waiting to be claimed, not how many steps run.
const SERVICES_PREFETCH: u16 = 1;

/// The agent's slots and its queues' limits, in the order of `config.queues`.
pub(crate) struct Slots {
    /// `None` in services mode: no limit.
    agent: Option<Arc<Semaphore>>,
    queues: Vec<Option<Arc<Semaphore>>>,
    /// The largest prefetch of each queue's consumer: the agent's slots or the queue's cap.
    prefetch: Vec<u16>,
    freed: Arc<Notify>,
    /// Wakes the serve loop when a running attempt wants its agent slot back.
    reclaim: Arc<Notify>,
    /// How long the job that last gave its slots back held its agent slot, in µs
    /// ([`NO_HOLD`] before any did).
    last_hold: Arc<AtomicU64>,
}

/// [`Slots::last_hold`] before any job gave back an agent slot it held.
const NO_HOLD: u64 = u64::MAX;

/// The slots one job holds; dropping it gives them back and wakes the serve loop.
pub(crate) struct SlotGuard {
    agent: Arc<AttemptSlot>,
    queue: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
    last_hold: Arc<AtomicU64>,
}

impl SlotGuard {
    /// The job's agent slot, which its channel gives back while the job waits.
    pub fn attempt_slot(&self) -> Arc<AttemptSlot> {
        self.agent.clone()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Release before notifying, so the woken loop sees the free slot.
        let (permit, first_held) = self.agent.end();
        drop(permit);
        self.queue.take();
        // A job that never held its agent slot (claimed ahead, stopped while it waited) says
        // nothing about how long steps take.
        if let Some(since) = first_held {
            let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(NO_HOLD - 1);
            self.last_hold.store(micros, Ordering::Relaxed);
        }
        self.freed.notify_one();
    }
}

/// One running attempt's agent slot, given back while at least one of its waits is pending.
pub(crate) struct AttemptSlot {
    /// `None` in services mode: there is no slot to give back.
    semaphore: Option<Arc<Semaphore>>,
    held: Mutex<Held>,
    freed: Arc<Notify>,
    reclaim: Arc<Notify>,
}

struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// Waits pending.
    waits: usize,
    /// The job is over: a permit taken back now is returned at once.
    ended: bool,
    /// When the attempt first held an agent slot.
    first_held: Option<Instant>,
}

impl AttemptSlot {
    fn new(
        semaphore: Option<Arc<Semaphore>>,
        permit: Option<OwnedSemaphorePermit>,
        freed: Arc<Notify>,
        reclaim: Arc<Notify>,
    ) -> Self {
        Self {
            semaphore,
            held: Mutex::new(Held {
                first_held: permit.as_ref().map(|_| Instant::now()),
                permit,
                waits: 0,
                ended: false,
            }),
            freed,
            reclaim,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A wait begins; the first one gives the slot back.
    pub fn release(&self) {
        let permit = {
            let mut held = self.lock();
            held.waits += 1;
            if held.waits == 1 {
                held.permit.take()
            } else {
                None
            }
        };
        if permit.is_some() {
            drop(permit);
            self.freed.notify_one();
        }
    }

    /// A wait ended; the last one takes the slot back, ahead of new jobs. Returns once the
    /// attempt holds its slot again (or another wait of it is still pending).
    pub async fn retake(&self) {
        {
            let mut held = self.lock();
            held.waits = held.waits.saturating_sub(1);
            if held.waits > 0 || held.permit.is_some() || held.ended {
                return;
            }
        }
        let Some(semaphore) = &self.semaphore else {
            return;
        };
        self.reclaim.notify_one();
        self.acquire(semaphore).await;
    }

    /// Takes the agent slot of a job claimed ahead, which was given none ([`Slots::take`] without
    /// one); returns once it holds it. New jobs wait meanwhile (the serve loop takes none while a
    /// job claimed ahead waits), so the first slot freed is its.
    pub async fn take_first(&self) {
        if let Some(semaphore) = &self.semaphore {
            self.acquire(semaphore).await;
        }
    }

    /// Waits for an agent slot and holds it, unless a wait began meanwhile or the job ended:
    /// then the slot stays free.
    async fn acquire(&self, semaphore: &Arc<Semaphore>) {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            return;
        };
        let spare = {
            let mut held = self.lock();
            if held.waits == 0 && held.permit.is_none() && !held.ended {
                held.permit = Some(permit);
                held.first_held.get_or_insert_with(Instant::now);
                None
            } else {
                Some(permit)
            }
        };
        if spare.is_some() {
            drop(spare);
            self.freed.notify_one();
        }
    }

    /// Whether the attempt holds an agent slot now (always false in services mode).
    #[cfg(test)]
    pub fn holds(&self) -> bool {
        self.lock().permit.is_some()
    }

    /// The job is over: its permit, to be dropped, and when it first held an agent slot
    /// (`None` if it never did).
    fn end(&self) -> (Option<OwnedSemaphorePermit>, Option<Instant>) {
        let mut held = self.lock();
        held.ended = true;
        (held.permit.take(), held.first_held)
    }
}

impl Slots {
    pub fn new(config: &AgentConfig) -> Self {
        let agent =
            (!config.services_mode).then(|| Arc::new(Semaphore::new(config.concurrency as usize)));
        let queues = config
            .queues
            .iter()
            .map(|q| {
                config
                    .queue_limit(q)
                    .map(|n| Arc::new(Semaphore::new(n as usize)))
            })
            .collect();
        let prefetch = config
            .queues
            .iter()
            .map(|q| {
                let own = config.queue_limit(q).unwrap_or(u32::MAX);
                let agent = if config.services_mode {
                    u32::from(SERVICES_PREFETCH)
                } else {
                    config.concurrency
                };
                u16::try_from(own.min(agent)).unwrap_or(u16::MAX).max(1)
            })
            .collect();
        Self {
            agent,
            queues,
            prefetch,
            freed: Arc::new(Notify::new()),
            reclaim: Arc::new(Notify::new()),
            last_hold: Arc::new(AtomicU64::new(NO_HOLD)),
        }
    }

    /// How long the job that last gave its slots back held its agent slot (`None` before any
    /// did).
    pub fn last_hold(&self) -> Option<Duration> {
        match self.last_hold.load(Ordering::Relaxed) {
            NO_HOLD => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Whether the job that last gave its slots back held its agent slot for less than
    /// [`SHORT`] (false before any did).
    pub fn last_short(&self) -> bool {
        self.last_hold().is_some_and(|held| held < SHORT)
    }

    /// Waits for a free agent slot (at once in services mode); `None` if the semaphore closed.
    pub async fn agent_slot(&self) -> Option<Option<OwnedSemaphorePermit>> {
        match &self.agent {
            Some(s) => s.clone().acquire_owned().await.ok().map(Some),
            None => Some(None),
        }
    }

    /// Whether every agent slot is taken.
    pub fn agent_full(&self) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|s| s.available_permits() == 0)
    }

    /// Whether queue `i` may start another job.
    pub fn queue_free(&self, i: usize) -> bool {
        self.queues[i]
            .as_ref()
            .is_none_or(|s| s.available_permits() > 0)
    }

    /// Prefetch for a consumer of queue `i` opened now, while the serve loop holds one agent
    /// slot: no more than the jobs the agent and the queue could start, so what the broker
    /// sends ahead is what the agent will run, not what it hands back once it fills up.
    pub fn consumer_prefetch(&self, i: usize) -> u16 {
        let free = |s: &Option<Arc<Semaphore>>, held: usize| {
            s.as_ref()
                .map_or(usize::MAX, |s| s.available_permits() + held)
        };
        let room = free(&self.agent, 1).min(free(&self.queues[i], 0));
        u16::try_from(room)
            .unwrap_or(u16::MAX)
            .min(self.prefetch[i])
            .max(1)
    }

    /// Takes queue `i`'s slot for a job that holds `agent`; `None` when the queue is full.
    pub fn take(&self, i: usize, agent: Option<OwnedSemaphorePermit>) -> Option<SlotGuard> {
        let queue = match &self.queues[i] {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(SlotGuard {
            agent: Arc::new(AttemptSlot::new(
                self.agent.clone(),
                agent,
                self.freed.clone(),
                self.reclaim.clone(),
            )),
            queue,
            freed: self.freed.clone(),
            last_hold: self.last_hold.clone(),
        })
    }

    /// Resolves after a job gave its slots back (at once if one did since the last call).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Resolves when a running attempt wants its agent slot back (at once if one did since the
    /// last call): a slot held while idle should be given up.
    pub async fn reclaimed(&self) {
        self.reclaim.notified().await;
    }
}

/// "4 slot(s)", "no slot limit (services mode)", plus the queues' own limits.
pub(crate) fn describe(config: &AgentConfig) -> String {
    let mut text = if config.services_mode {
        "no slot limit (services mode)".to_string()
    } else {
        format!("{} slot(s)", config.concurrency)
    };
    for (q, n) in &config.queue_limits {
        text.push_str(&format!(", at most {n} from {q}"));
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::QueueOrder;
    use crate::pyenv::{PyEnvConfig, PythonEnvMode};
    use drover_protocol::{Names, QueueName};
    use std::time::Duration;

    pub(crate) fn config(concurrency: u32, services: bool, limits: &[(&str, u32)]) -> AgentConfig {
        AgentConfig {
            amqp_url: String::new(),
            names: Names::new("drover").unwrap(),
            queues: vec![
                QueueName::new("gpu").unwrap(),
                QueueName::new("cpu").unwrap(),
            ],
            queue_limits: limits
                .iter()
                .map(|(q, n)| (QueueName::new(*q).unwrap(), *n))
                .collect(),
            order: QueueOrder::Priority,
            concurrency,
            services_mode: services,
            work_dir: "w".into(),
            keep_workdirs: false,
            controller_urls: Vec::new(),
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
            token: None,
            artifact_transfer: Default::default(),
            s3_endpoint: None,
            max_log_size: 1 << 20,
            step_cleanup: Default::default(),
            s3_settings: Vec::new(),
            run_as: None,
            job_verifier: None,
            max_message_size: drover_amqp::DEFAULT_MAX_MESSAGE_SIZE,
            queue_settings: Default::default(),
            prewarm: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_queue_limit_holds_below_the_agent_limit() {
        let slots = Slots::new(&config(4, false, &[("gpu", 1)]));
        assert_eq!((slots.prefetch[0], slots.prefetch[1]), (1, 4));
        let first = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        // Three agent slots left, one of them held by the serve loop; the gpu queue is full.
        let _held = slots.agent_slot().await.unwrap();
        assert_eq!(
            (slots.consumer_prefetch(0), slots.consumer_prefetch(1)),
            (1, 3)
        );
        assert!(!slots.queue_free(0) && slots.queue_free(1) && !slots.agent_full());
        assert!(slots.take(0, None).is_none());
        drop(first);
        slots.freed().await; // the drop left a wake-up behind
        assert!(slots.queue_free(0));
    }

    #[tokio::test]
    async fn the_agent_limit_covers_every_queue() {
        let slots = Slots::new(&config(2, false, &[]));
        let a = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        let b = slots.take(1, slots.agent_slot().await.unwrap()).unwrap();
        assert!(slots.agent_full());
        drop((a, b));
        assert!(!slots.agent_full());
    }

    #[tokio::test]
    async fn services_mode_has_no_agent_limit() {
        let slots = Slots::new(&config(1, true, &[("cpu", 3)]));
        let held: Vec<SlotGuard> = (0..50)
            .map(|_| slots.take(0, None).unwrap())
            .collect::<Vec<_>>();
        assert!(!slots.agent_full() && held.len() == 50);
        assert_eq!(slots.prefetch[0], SERVICES_PREFETCH);
        let cpu: Vec<SlotGuard> = (0..3).map(|_| slots.take(1, None).unwrap()).collect();
        assert!(slots.take(1, None).is_none() && cpu.len() == 3);
        assert_eq!(
            describe(&config(1, true, &[("cpu", 3)])),
            "no slot limit (services mode), at most 3 from cpu"
        );
    }

    #[tokio::test]
    async fn a_waiting_attempt_gives_its_slot_back_and_retakes_it_before_new_jobs() {
        let slots = Slots::new(&config(1, false, &[]));
        let guard = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        let held = guard.attempt_slot();
        assert!(slots.agent_full() && held.holds());
        // Two waits at once: the slot is free until both ended.
        held.release();
        held.release();
        assert!(!slots.agent_full() && !held.holds());
        slots.freed().await;
        // The serve loop takes the free slot while idle.
        let idle = slots.agent_slot().await.unwrap();
        held.retake().await; // one wait still pending: returns without the slot
        assert!(!held.holds());
        let retake = tokio::spawn({
            let held = held.clone();
            async move { held.retake().await }
        });
        // The serve loop is told to give up its idle slot, and the attempt gets it.
        tokio::time::timeout(Duration::from_secs(5), slots.reclaimed())
            .await
            .expect("the serve loop was not asked to give its slot up");
        let next_job = tokio::spawn({
            let semaphore = slots.agent.clone().unwrap();
            async move { semaphore.acquire_owned().await.unwrap() }
        });
        drop(idle);
        tokio::time::timeout(Duration::from_secs(5), retake)
            .await
            .unwrap()
            .unwrap();
        assert!(held.holds() && slots.agent_full() && !next_job.is_finished());
        drop(guard);
        assert!(!held.holds());
        let _next = tokio::time::timeout(Duration::from_secs(5), next_job)
            .await
            .expect("the ended job kept its slot")
            .unwrap();
    }

    /// A job claimed ahead is short by how long it ran, not by how long it waited for a slot;
    /// one that never got a slot says nothing.
    #[tokio::test]
    async fn a_hold_counts_from_when_the_job_first_held_its_agent_slot() {
        let slots = Slots::new(&config(1, false, &[]));
        assert_eq!(slots.last_hold(), None);
        let running = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        let waiting = slots.take(0, None).unwrap();
        let stopped = slots.take(0, None).unwrap();
        tokio::time::sleep(SHORT + Duration::from_millis(20)).await;
        drop(running);
        assert!(!slots.last_short(), "{:?}", slots.last_hold());
        drop(stopped);
        assert!(
            slots.last_hold().unwrap() > SHORT,
            "a job that never held a slot"
        );
        waiting.attempt_slot().take_first().await;
        drop(waiting);
        assert!(slots.last_short(), "{:?}", slots.last_hold());
    }

    #[tokio::test]
    async fn services_mode_has_no_slot_to_give_back() {
        let slots = Slots::new(&config(1, true, &[]));
        let guard = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        let held = guard.attempt_slot();
        held.release();
        held.retake().await;
        assert!(!held.holds());
    }
}
