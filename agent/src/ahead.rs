//! Claiming ahead on deep queues: while every slot of the agent runs short steps and a queue
//! still holds many jobs behind the one just taken, the agent takes and claims up to
//! [`PER_SLOT`] more jobs per slot. Such a job is made ready (workdir, inputs, environment) and
//! waits for the next free slot, so a slot's next step costs no `basic.get`, `Claimed` confirm
//! or preparation on its path.
//!
//! It holds a job the agent cannot start yet, which a busy agent otherwise never does; the
//! conditions keep what that costs small. At most [`PER_SLOT`] jobs per slot wait, and only
//! while the queue holds at least [`DEEP_PER_SLOT`] more jobs per slot (an idle agent still
//! finds plenty), while the step that last freed a slot held it for less than [`SHORT`] (a job
//! waits about as long as [`PER_SLOT`] steps run, so a later higher-priority job is held back
//! by no more than that), and only from queues without a limit of their own. Jobs claimed
//! ahead take the freed slots in the order they were taken from their queue ([`Ticket::turn`]).
//!
//! Two per slot, not one: a job's `basic.get` and `Claimed` confirm take about as long as a
//! short step runs (a few milliseconds on a busy host), so with one waiting the slot was often
//! freed before the next job was claimed.

use crate::config::AgentConfig;
#[cfg(doc)]
use crate::slots::SHORT;
use crate::slots::Slots;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most jobs claimed ahead per agent slot.
pub(crate) const PER_SLOT: usize = 2;

/// A queue counts as deep while its last `basic.get` left at least this many jobs per agent
/// slot behind the one it gave.
pub(crate) const DEEP_PER_SLOT: u32 = 2;

/// What the serve loop knows about claiming ahead.
pub(crate) struct Ahead {
    /// Most jobs waiting for a slot at once: [`PER_SLOT`] per slot (none in services mode).
    limit: usize,
    /// Jobs left behind a `basic.get`'s job for the queue to count as deep.
    deep_at: u32,
    /// Per queue (in the agent's order): whether its last `basic.get` left it deep; always
    /// false for a queue with a limit of its own.
    deep: Vec<bool>,
    limited: Vec<bool>,
    /// Per queue: whether claiming ahead from it was logged since it last stopped being deep.
    told: Vec<bool>,
    waiting: Arc<Waiting>,
}

/// Jobs claimed ahead that hold no slot yet.
#[derive(Default)]
struct Waiting {
    changed: Notify,
    turns: Mutex<Turns>,
    /// Woken whenever a ticket is dropped.
    turn_passed: Notify,
}

/// The turns of the tickets not yet dropped (one per job claimed ahead that holds no slot yet),
/// and the next one to give.
#[derive(Default)]
struct Turns {
    held: BTreeSet<u64>,
    next: u64,
}

impl Waiting {
    fn turns(&self) -> std::sync::MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Held by a job claimed ahead until it holds its slot or gave up; dropping it wakes the serve
/// loop and lets the next job claimed ahead take its turn.
pub(crate) struct Ticket {
    waiting: Arc<Waiting>,
    turn: u64,
}

impl Ticket {
    /// Returns once every job claimed ahead before this one holds its slot or gave up, so that
    /// jobs claimed ahead start in the order they were taken from their queue (the queue's
    /// priority order) however their claims' confirms and tasks are scheduled.
    pub async fn turn(&self) {
        loop {
            let passed = self.waiting.turn_passed.notified();
            let mut passed = std::pin::pin!(passed);
            passed.as_mut().enable();
            if self.waiting.turns().held.first() == Some(&self.turn) {
                return;
            }
            passed.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.turns().held.remove(&self.turn);
        self.waiting.turn_passed.notify_waiters();
        self.waiting.changed.notify_one();
    }
}

impl Ahead {
    pub fn new(config: &AgentConfig) -> Self {
        let limit = match config.services_mode {
            true => 0,
            false => PER_SLOT * config.concurrency as usize,
        };
        Ahead {
            limit,
            deep_at: DEEP_PER_SLOT.saturating_mul(config.concurrency),
            deep: vec![false; config.queues.len()],
            told: vec![false; config.queues.len()],
            limited: config
                .queues
                .iter()
                .map(|q| config.queue_limit(q).is_some())
                .collect(),
            waiting: Arc::default(),
        }
    }

    /// Queue `i`'s `basic.get` gave a job with `remaining` more behind it (`Some(0)`: the last),
    /// or nothing (`None`).
    pub fn saw(&mut self, i: usize, remaining: Option<u32>) {
        self.deep[i] = !self.limited[i] && remaining.is_some_and(|n| n >= self.deep_at);
        self.told[i] &= self.deep[i];
    }

    /// A job of `queue` (the `i`th) was claimed ahead; said once per spell of deep queue.
    pub fn took(&mut self, i: usize, queue: &str, remaining: Option<u32>) {
        if !std::mem::replace(&mut self.told[i], true) {
            tracing::info!(
                "claiming jobs of {queue} ahead while its steps are short ({} left behind)",
                remaining.unwrap_or_default()
            );
        }
    }

    /// The queues to claim ahead from now, most preferred first; none unless every slot is
    /// taken by a short step and fewer jobs than slots wait.
    pub fn queues(&self, preference: &[usize], slots: &Slots) -> Vec<usize> {
        if !slots.agent_full() || !slots.last_short() || self.waiting() >= self.limit {
            return Vec::new();
        }
        preference
            .iter()
            .copied()
            .filter(|&i| self.deep[i])
            .collect()
    }

    /// Counts a job claimed ahead until its ticket is dropped; its turn comes after those of
    /// the tickets given before it.
    pub fn ticket(&self) -> Ticket {
        let turn = {
            let mut turns = self.waiting.turns();
            let turn = turns.next;
            turns.next += 1;
            turns.held.insert(turn);
            turn
        };
        Ticket {
            waiting: self.waiting.clone(),
            turn,
        }
    }

    /// Jobs claimed ahead that hold no slot yet.
    pub fn waiting(&self) -> usize {
        self.waiting.turns().held.len()
    }

    /// Resolves once a job claimed ahead took its slot or gave up (at once if one did since
    /// the last call).
    pub async fn changed(&self) {
        self.waiting.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::tests::config;

    /// Two slots, both running steps that ended quickly: the agent is full of short steps.
    async fn full_of_short_steps(slots: &Slots) -> Vec<crate::slots::SlotGuard> {
        let a = slots.take(1, slots.agent_slot().await.unwrap()).unwrap();
        drop(a);
        slots.freed().await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.take(1, slots.agent_slot().await.unwrap()).unwrap());
        }
        held
    }

    #[tokio::test]
    async fn only_a_deep_queue_of_a_full_agent_running_short_steps_is_claimed_ahead_from() {
        let config = config(2, false, &[("gpu", 1)]);
        let slots = Slots::new(&config);
        let mut ahead = Ahead::new(&config);
        ahead.saw(1, Some(4));
        ahead.saw(0, Some(100));
        // Not full yet.
        assert!(ahead.queues(&[0, 1], &slots).is_empty());
        let held = full_of_short_steps(&slots).await;
        // gpu has a limit of its own; cpu left 4 = 2 per slot behind its job.
        assert_eq!(ahead.queues(&[0, 1], &slots), [1]);
        ahead.saw(1, Some(3));
        assert!(ahead.queues(&[0, 1], &slots).is_empty());
        ahead.saw(1, Some(4));
        let mut tickets: Vec<Ticket> = (0..3).map(|_| ahead.ticket()).collect();
        assert_eq!(ahead.queues(&[0, 1], &slots), [1], "two per slot");
        tickets.push(ahead.ticket());
        assert_eq!(ahead.waiting(), 4);
        assert!(ahead.queues(&[0, 1], &slots).is_empty(), "two per slot");
        drop(tickets);
        ahead.changed().await;
        assert_eq!((ahead.waiting(), ahead.queues(&[1], &slots)), (0, vec![1]));
        ahead.saw(1, None);
        assert!(ahead.queues(&[1], &slots).is_empty());
        drop(held);
    }

    /// Jobs claimed ahead take their turns in the order their tickets were given, whichever
    /// gives up first.
    #[test]
    fn tickets_take_their_turns_in_order() {
        use futures_util::FutureExt;
        let config = config(1, false, &[]);
        let ahead = Ahead::new(&config);
        let [first, second, third] = [(); 3].map(|()| ahead.ticket());
        assert!(first.turn().now_or_never().is_some());
        assert!(second.turn().now_or_never().is_none());
        drop(second);
        assert!(
            third.turn().now_or_never().is_none(),
            "the first still waits"
        );
        drop(first);
        assert!(third.turn().now_or_never().is_some());
        assert_eq!(ahead.waiting(), 1);
    }

    #[tokio::test]
    async fn nothing_is_claimed_ahead_behind_a_long_step_or_in_services_mode() {
        let config = config(1, false, &[]);
        let slots = Slots::new(&config);
        let mut ahead = Ahead::new(&config);
        ahead.saw(0, Some(50));
        let _running = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        assert!(
            ahead.queues(&[0], &slots).is_empty(),
            "no step ended yet, so none is known to be short"
        );
        let services = crate::slots::tests::config(1, true, &[]);
        let mut ahead = Ahead::new(&services);
        ahead.saw(0, Some(50));
        assert!(ahead.queues(&[0], &Slots::new(&services)).is_empty());
    }
}
