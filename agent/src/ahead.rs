//! Claiming ahead on deep queues: while every slot of the agent runs short steps and a queue
//! still holds many jobs behind the one just taken, the agent takes and claims more jobs, up to
//! [`per_slot`] per slot. Such a job is made ready (workdir, inputs, environment) and waits for
//! the next free slot, so a slot's next step costs no `basic.get`, `Claimed` confirm or
//! preparation on its path.
//!
//! It holds a job the agent cannot start yet, which a busy agent otherwise never does; the
//! conditions keep what that costs small. Per slot, as many jobs wait as the last step's time
//! fits into [`WORK_PER_SLOT`], at least [`MIN_PER_SLOT`] and at most [`MAX_PER_SLOT`], and only
//! while the queue holds at least as many more behind the job just taken (an idle agent still
//! finds as many as this one holds), while the step that last freed a slot held it for less than
//! [`SHORT`] (so a later higher-priority job is held back by about [`WORK_PER_SLOT`] of steps, or
//! [`MIN_PER_SLOT`] steps of less than [`SHORT`] each), and only from queues without a limit of
//! their own. Jobs claimed ahead take the freed slots in the order they were taken from their
//! queue ([`Ticket::turn`]).
//!
//! Why so many for the shortest steps: a job's `basic.get` and `Claimed` confirm take several
//! times as long as a `true` step runs on a busy host; with two waiting per slot the CPUs stood
//! 17–26 % idle while the steps of a `true` fan-out ran. For the same reason up to [`GETS_AT_ONCE`]
//! `basic.get`s are sent at once while claiming ahead.

use crate::config::AgentConfig;
#[cfg(doc)]
use crate::slots::SHORT;
use crate::slots::Slots;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Fewest jobs claimed ahead per agent slot (when any are).
pub(crate) const MIN_PER_SLOT: usize = 2;

/// Most jobs claimed ahead per agent slot.
pub(crate) const MAX_PER_SLOT: usize = 8;

/// Most `basic.get`s in flight at once while claiming ahead, each on a channel of its own (one
/// when the agent has one slot, so its jobs still start in the queue's order).
pub(crate) const GETS_AT_ONCE: usize = 2;

/// About how much of the last step's running time is claimed ahead per slot.
pub(crate) const WORK_PER_SLOT: Duration = Duration::from_millis(20);

/// Jobs claimed ahead per agent slot after a step that held its slot for `held`: as many as fit
/// into [`WORK_PER_SLOT`], within [`MIN_PER_SLOT`] and [`MAX_PER_SLOT`].
pub(crate) fn per_slot(held: Duration) -> usize {
    let fit = WORK_PER_SLOT.as_micros() / held.as_micros().max(1);
    usize::try_from(fit)
        .unwrap_or(MAX_PER_SLOT)
        .clamp(MIN_PER_SLOT, MAX_PER_SLOT)
}

/// What the serve loop knows about claiming ahead.
pub(crate) struct Ahead {
    /// The agent's slots (0 in services mode: nothing is claimed ahead).
    slots: usize,
    /// Per queue (in the agent's order): the jobs its last `basic.get` left behind the one it
    /// gave (`None` when it gave none); always `None` for a queue with a limit of its own.
    behind: Vec<Option<u32>>,
    limited: Vec<bool>,
    /// Per queue: whether claiming ahead from it was logged since it last held fewer than
    /// [`MIN_PER_SLOT`] jobs per slot behind a `basic.get`'s.
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
        let slots = match config.services_mode {
            true => 0,
            false => config.concurrency as usize,
        };
        Ahead {
            slots,
            behind: vec![None; config.queues.len()],
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
        self.behind[i] = remaining.filter(|_| !self.limited[i]);
        let deep = u32::try_from(MIN_PER_SLOT * self.slots).unwrap_or(u32::MAX);
        self.told[i] &= self.behind[i].is_some_and(|n| n >= deep);
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

    /// How many jobs may be claimed ahead now: none unless every slot is taken and the last
    /// step to end was short.
    fn limit(&self, slots: &Slots) -> usize {
        match slots.last_hold() {
            Some(held) if slots.agent_full() && slots.last_short() => per_slot(held) * self.slots,
            _ => 0,
        }
    }

    /// How many `basic.get`s to send at once now: at most [`GETS_AT_ONCE`], the agent's slots
    /// and the jobs that may still be claimed ahead.
    pub fn gets_at_once(&self, slots: &Slots) -> usize {
        let room = self.limit(slots).saturating_sub(self.waiting());
        GETS_AT_ONCE.min(self.slots).min(room).max(1)
    }

    /// The queues to claim ahead from now, most preferred first; none unless every slot is
    /// taken, the last step to end was short and fewer jobs wait than its time allows.
    pub fn queues(&self, preference: &[usize], slots: &Slots) -> Vec<usize> {
        let limit = self.limit(slots);
        if self.waiting() >= limit {
            return Vec::new();
        }
        // The queue keeps at least as many as this agent may hold ahead, for other agents.
        let deep = u32::try_from(limit).unwrap_or(u32::MAX);
        preference
            .iter()
            .copied()
            .filter(|&i| self.behind[i].is_some_and(|n| n >= deep))
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
        ahead.saw(1, Some(16));
        ahead.saw(0, Some(100));
        // Not full yet.
        assert!(ahead.queues(&[0, 1], &slots).is_empty());
        let held = full_of_short_steps(&slots).await;
        // gpu has a limit of its own; cpu left 16 behind its job, as many as the agent may
        // claim ahead after a step far shorter than WORK_PER_SLOT (eight per slot).
        assert_eq!(ahead.queues(&[0, 1], &slots), [1]);
        assert_eq!(ahead.gets_at_once(&slots), 2, "one per slot");
        ahead.saw(1, Some(15));
        assert!(ahead.queues(&[0, 1], &slots).is_empty());
        ahead.saw(1, Some(16));
        let mut tickets: Vec<Ticket> = (0..15).map(|_| ahead.ticket()).collect();
        assert_eq!(ahead.queues(&[0, 1], &slots), [1], "eight per slot");
        assert_eq!(ahead.gets_at_once(&slots), 1, "room for one more");
        tickets.push(ahead.ticket());
        assert_eq!(ahead.waiting(), 16);
        assert!(ahead.queues(&[0, 1], &slots).is_empty(), "eight per slot");
        drop(tickets);
        ahead.changed().await;
        assert_eq!((ahead.waiting(), ahead.queues(&[1], &slots)), (0, vec![1]));
        ahead.saw(1, None);
        assert!(ahead.queues(&[1], &slots).is_empty());
        drop(held);
    }

    #[test]
    fn the_shorter_the_last_step_the_more_jobs_are_claimed_ahead_of_a_slot() {
        let ms = Duration::from_millis;
        assert_eq!(per_slot(Duration::from_micros(300)), MAX_PER_SLOT);
        assert_eq!(per_slot(ms(2)), MAX_PER_SLOT);
        assert_eq!(per_slot(ms(4)), 5);
        assert_eq!(per_slot(ms(7)), MIN_PER_SLOT);
        assert_eq!(per_slot(ms(99)), MIN_PER_SLOT);
        assert_eq!(per_slot(Duration::ZERO), MAX_PER_SLOT);
    }

    /// A step of a few milliseconds: two jobs per slot, as many as the queue must keep behind.
    #[tokio::test]
    async fn after_a_step_of_several_milliseconds_two_jobs_per_slot_are_claimed_ahead() {
        let config = config(2, false, &[]);
        let slots = Slots::new(&config);
        let mut ahead = Ahead::new(&config);
        let first = slots.take(1, slots.agent_slot().await.unwrap()).unwrap();
        let second = slots.take(1, slots.agent_slot().await.unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(12)).await;
        drop(first);
        slots.freed().await;
        let _third = slots.take(1, slots.agent_slot().await.unwrap()).unwrap();
        ahead.saw(1, Some(4));
        assert_eq!(ahead.queues(&[1], &slots), [1]);
        let tickets: Vec<Ticket> = (0..4).map(|_| ahead.ticket()).collect();
        assert!(ahead.queues(&[1], &slots).is_empty(), "two per slot");
        drop(tickets);
        ahead.saw(1, Some(3));
        assert!(
            ahead.queues(&[1], &slots).is_empty(),
            "the queue keeps four"
        );
        drop(second);
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

    /// One slot: one `basic.get` at a time, so its jobs run in the queue's order.
    #[tokio::test]
    async fn an_agent_with_one_slot_takes_one_job_ahead_at_a_time() {
        let config = config(1, false, &[]);
        let slots = Slots::new(&config);
        let mut ahead = Ahead::new(&config);
        drop(slots.take(0, slots.agent_slot().await.unwrap()).unwrap());
        slots.freed().await;
        let _running = slots.take(0, slots.agent_slot().await.unwrap()).unwrap();
        ahead.saw(0, Some(50));
        assert_eq!(ahead.queues(&[0], &slots), [0]);
        assert_eq!(ahead.gets_at_once(&slots), 1);
    }
}
