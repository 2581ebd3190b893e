//! Queue consumption within the slot limits: claim a job (publish `Claimed`, then ack), run it,
//! and never hold more jobs than free slots so idle agents elsewhere can take the rest.
//!
//! A free slot first asks the queues for their head (`basic.get`, [`Pull`]): nothing is sent
//! ahead, so a busy agent holds no job and the next job is the queue's highest priority one at
//! the moment a slot frees. The claims of pulled jobs run in tasks of their own, so several are
//! in flight together; each job still runs only once its own claim is confirmed. Only when
//! every queue with room is empty are consumers opened (prefetch: the free slots), to be woken
//! by the next job; they stay open while the agent has a free slot and are closed when it
//! fills up, which hands back what the broker sent ahead. A job such a consumer delivers is
//! claimed in the serve loop itself, before a consumer may close, while its task makes it
//! ready; the next free slot then asks the queues again, and if a consumer holds another job by
//! then (the queue has a backlog) the consumers are closed, handing back what they hold, so
//! the backlog goes through `basic.get`, whose claims are in flight together, instead of one
//! consumer delivery at a time. Among queues with a job ready, the first in the agent's order
//! wins ([`QueueOrder::Priority`]), or the queues take turns ([`QueueOrder::RoundRobin`]).
//!
//! The one exception to holding no job beyond the free slots: on deep queues, while short steps
//! fill every slot, a few jobs per slot (as many as about 20 ms of those steps, two to eight) are
//! claimed ahead and wait for the next free ones ([`ahead`]).

use crate::ahead::{self, Ahead};
use crate::config::QueueOrder;
use crate::slots::{SlotGuard, Slots};
use crate::{Shared, claim, heartbeat, job};
use drover_amqp::{Consumer, Getter, Incoming};
use drover_protocol::message::StepJob;
use futures_util::future::select_all;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One consumer per queue of the agent, in its order; `None` while closed.
struct Consumers {
    open: Vec<Option<Consumer>>,
    /// The queue preferred next under round-robin order.
    next_turn: usize,
}

/// What waiting for a job gave.
enum Next {
    Job(Box<Incoming>, usize),
    /// A consumer ended (broker connection lost?).
    Lost,
    /// A slot was freed: another queue may be allowed now.
    Freed,
    /// A running attempt wants its slot back: give up the one held while idle.
    Reclaimed,
    Shutdown,
}

/// Takes queue heads (`basic.get`) on channels kept for it: one at a time on the first, and
/// when claiming ahead, on up to [`ahead::GETS_AT_ONCE`] at once.
struct Pull {
    getters: Vec<Getter>,
}

/// Serves the queues until `shutdown`, then drains and cancels `stopped`.
///
/// Steps still running when the drain timeout expires are stopped and handed back
/// (`released`), so the controller dispatches them elsewhere at once.
pub async fn serve(
    shared: Arc<Shared>,
    jobs: TaskTracker,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    let slots = Slots::new(&shared.config);
    let mut consumers = Consumers {
        open: shared.config.queues.iter().map(|_| None).collect(),
        next_turn: 0,
    };
    let mut pull = Pull {
        getters: Vec::new(),
    };
    let mut ahead = Ahead::new(&shared.config);
    let mut backoff = Duration::from_millis(200);
    // Set when a consumer gave a job: its queue may hold more, which `basic.get` takes faster
    // than the consumer's one-at-a-time claims. Cleared when the queues are found empty.
    let mut pull_first = false;
    // Cancelled when the drain timeout expires: jobs stopped after that are handed back.
    let release = CancellationToken::new();
    'serve: loop {
        // Full: give back what the broker sent ahead so other agents can run it.
        if slots.agent_full() {
            consumers.close_all().await;
            let deep = ahead.queues(&consumers.preference(&shared.config.order), &slots);
            if !deep.is_empty() {
                let at_once = ahead.gets_at_once(&slots);
                let mut took = false;
                for (incoming, i) in pull
                    .ahead(&shared, &slots, &mut ahead, &deep, at_once)
                    .await
                {
                    // No agent slot yet (the job takes the next one freed), and no queue
                    // slot: queues with a limit of their own are never claimed ahead from.
                    let Some(guard) = slots.take(i, None) else {
                        let _ = incoming.requeue().await;
                        continue;
                    };
                    let queue = shared.config.queues[i].as_str();
                    ahead.took(i, queue, incoming.remaining);
                    consumers.took_from(i);
                    let ticket = Some(ahead.ticket());
                    claim_and_start(&shared, &jobs, incoming, guard, release.clone(), ticket);
                    took = true;
                }
                if took {
                    continue;
                }
            }
        }
        // Jobs claimed ahead take the slots freed first.
        if ahead.waiting() > 0 {
            tokio::select! {
                _ = ahead.changed() => continue,
                _ = shutdown.cancelled() => break,
            }
        }
        let agent_slot = tokio::select! {
            p = slots.agent_slot() => match p { Some(p) => p, None => break },
            _ = shutdown.cancelled() => break,
        };
        loop {
            let held = match pull_first {
                true => {
                    consumers
                        .backlog(&shared.config.order, &slots, &shutdown)
                        .await
                }
                false => None,
            };
            // With no consumer open, or after a consumer gave a job, ask the queues first: a
            // ready job needs no consumer.
            if held.is_none() && (pull_first || !consumers.any_open()) {
                let preference = consumers.preference(&shared.config.order);
                match pull.next(&shared, &slots, &mut ahead, &preference).await {
                    Ok(Some((incoming, i))) => {
                        backoff = Duration::from_millis(200);
                        let Some(guard) = slots.take(i, agent_slot) else {
                            // Cannot happen: only queues with room are asked. Hand it back.
                            let _ = incoming.requeue().await;
                            break;
                        };
                        consumers.took_from(i);
                        claim_and_start(&shared, &jobs, incoming, guard, release.clone(), None);
                        break;
                    }
                    Ok(None) => pull_first = false,
                    Err(e) => {
                        tracing::error!(
                            "cannot take jobs from the job queues: {e}; retrying in {backoff:?}"
                        );
                        pull.close().await;
                        if pause(&shutdown, &mut backoff).await {
                            break 'serve;
                        }
                        continue;
                    }
                }
            }
            let next = match held {
                Some(next) => next,
                None => {
                    if let Err(e) = consumers.sync(&shared, &slots).await {
                        tracing::error!(
                            "cannot consume the job queues: {e}; retrying in {backoff:?}"
                        );
                        consumers.close_all().await;
                        if pause(&shutdown, &mut backoff).await {
                            break 'serve;
                        }
                        continue;
                    }
                    consumers
                        .next(&shared.config.order, &slots, &shutdown)
                        .await
                }
            };
            match next {
                Next::Job(incoming, i) => {
                    backoff = Duration::from_millis(200);
                    let Some(guard) = slots.take(i, agent_slot) else {
                        // Cannot happen: a full queue's consumer is closed. Hand it back.
                        let _ = incoming.requeue().await;
                        break;
                    };
                    // Claimed here, not in a task: the consumer's channel may close right
                    // after (the agent filled up), and an unacked job would go back with it.
                    // The job's task makes it ready meanwhile and runs it once told the claim
                    // was confirmed.
                    let Some(taken) = claim::take(&shared, *incoming).await else {
                        break;
                    };
                    let (tell, told) = tokio::sync::oneshot::channel();
                    let claimed: job::Claim = Box::pin(async move { told.await == Ok(true) });
                    jobs.spawn(run_claimed(
                        shared.clone(),
                        taken.job.clone(),
                        guard,
                        release.clone(),
                        claimed,
                    ));
                    let confirmed = claim::confirm(&shared, taken).await;
                    let _ = tell.send(confirmed.is_some());
                    if let Some(confirmed) = confirmed {
                        consumers.took_from(i);
                        confirmed.ack().await;
                    }
                    pull_first = true;
                    break;
                }
                Next::Freed => continue,
                // Dropping the idle slot lets the attempt queued for it have it first.
                Next::Reclaimed => break,
                Next::Lost => {
                    tracing::error!(
                        "a job queue consumer ended (broker connection lost?); reopening"
                    );
                    consumers.close_all().await;
                    if pause(&shutdown, &mut backoff).await {
                        break 'serve;
                    }
                }
                Next::Shutdown => break 'serve,
            }
        }
    }
    consumers.close_all().await;
    pull.close().await;
    drain(&shared, jobs, &release).await;
    stopped.cancel();
}

impl Pull {
    /// The head of the first queue in `preference` that has room and a job, unacked; `ahead`
    /// learns how deep each queue asked is.
    async fn next(
        &mut self,
        shared: &Shared,
        slots: &Slots,
        ahead: &mut Ahead,
        preference: &[usize],
    ) -> Result<Option<(Incoming, usize)>, drover_amqp::AmqpError> {
        self.open(shared, 1).await?;
        let (got, seen) = head(shared, slots, &self.getters[0], preference).await;
        for (i, remaining) in seen {
            ahead.saw(i, remaining);
        }
        got
    }

    /// Up to `at_once` queue heads taken at the same time, each on a channel of its own, in the
    /// order they arrived (the order the broker gave them, but for jobs given at the same
    /// moment); `ahead` learns how deep each queue asked is. A channel whose `basic.get` failed
    /// is closed, handing back only what was taken through it.
    async fn ahead(
        &mut self,
        shared: &Shared,
        slots: &Slots,
        ahead: &mut Ahead,
        preference: &[usize],
        at_once: usize,
    ) -> Vec<(Incoming, usize)> {
        if let Err(e) = self.open(shared, at_once).await {
            tracing::warn!("cannot take a job ahead from the job queues: {e}");
            return Vec::new();
        }
        let mut heads: FuturesUnordered<_> = self.getters[..at_once]
            .iter()
            .enumerate()
            .map(|(k, getter)| async move { (k, head(shared, slots, getter, preference).await) })
            .collect();
        let mut jobs = Vec::new();
        let mut failed = Vec::new();
        while let Some((k, (got, seen))) = heads.next().await {
            for (i, remaining) in seen {
                ahead.saw(i, remaining);
            }
            match got {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("cannot take a job ahead from the job queues: {e}");
                    failed.push(k);
                }
            }
        }
        drop(heads);
        failed.sort_unstable();
        for k in failed.into_iter().rev() {
            self.getters.remove(k).close().await;
        }
        jobs
    }

    /// Opens getters until the first `n` are open ones.
    async fn open(&mut self, shared: &Shared, n: usize) -> Result<(), drover_amqp::AmqpError> {
        self.getters.retain(Getter::is_open);
        while self.getters.len() < n {
            self.getters.push(shared.broker.getter().await?);
        }
        Ok(())
    }

    /// Closing the channels hands back what was taken and is not acked yet.
    async fn close(&mut self) {
        for getter in self.getters.drain(..) {
            getter.close().await;
        }
    }
}

/// The head of the first queue in `preference` that has room and a job, taken on `getter`;
/// with how deep each queue asked was.
async fn head(
    shared: &Shared,
    slots: &Slots,
    getter: &Getter,
    preference: &[usize],
) -> (
    Result<Option<(Incoming, usize)>, drover_amqp::AmqpError>,
    Vec<(usize, Option<u32>)>,
) {
    let mut seen = Vec::new();
    for &i in preference {
        if !slots.queue_free(i) {
            continue;
        }
        let queue = shared.config.names.user_queue(&shared.config.queues[i]);
        match getter.get(&queue).await {
            Ok(got) => {
                seen.push((i, got.as_ref().and_then(|incoming| incoming.remaining)));
                if let Some(incoming) = got {
                    return (Ok(Some((incoming, i))), seen);
                }
            }
            Err(e) => return (Err(e), seen),
        }
    }
    (Ok(None), seen)
}

/// Waits out the backoff (doubling it); true when shutdown came first.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.cancelled() => true,
    }
}

impl Consumers {
    /// Queue indexes from the most to the least preferred.
    fn preference(&self, order: &QueueOrder) -> Vec<usize> {
        let n = self.open.len();
        match order {
            QueueOrder::Priority => (0..n).collect(),
            QueueOrder::RoundRobin => (0..n).map(|k| (self.next_turn + k) % n).collect(),
        }
    }

    fn any_open(&self) -> bool {
        self.open.iter().any(Option::is_some)
    }

    fn took_from(&mut self, i: usize) {
        self.next_turn = (i + 1) % self.open.len();
    }

    /// Closes the consumers of full queues and opens those of the others, most preferred
    /// first, so a preferred queue's jobs arrive before the others' do.
    async fn sync(&mut self, shared: &Shared, slots: &Slots) -> Result<(), drover_amqp::AmqpError> {
        for i in self.preference(&shared.config.order) {
            let free = slots.queue_free(i);
            match (&self.open[i], free) {
                (Some(_), false) => {
                    if let Some(c) = self.open[i].take() {
                        c.close().await;
                    }
                }
                (None, true) => {
                    let queue = shared.config.names.user_queue(&shared.config.queues[i]);
                    self.open[i] = Some(
                        shared
                            .broker
                            .consume(&queue, slots.consumer_prefetch(i))
                            .await?,
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a consumer gave a job: what the consumers have ready without waiting. A consumer
    /// that holds another job already shows a queue with a backlog, which `basic.get` takes
    /// faster, its claims running side by side: what the consumers hold is handed back (it goes
    /// back to its place in the queue), they are closed, and `None` says to ask the queues.
    async fn backlog(
        &mut self,
        order: &QueueOrder,
        slots: &Slots,
        shutdown: &CancellationToken,
    ) -> Option<Next> {
        match self.next(order, slots, shutdown).now_or_never()? {
            Next::Job(incoming, _) => {
                let _ = incoming.requeue().await;
                self.close_all().await;
                None
            }
            other => Some(other),
        }
    }

    /// Closing a consumer's channel returns its unacked deliveries to the queue.
    async fn close_all(&mut self) {
        for c in self.open.iter_mut().filter_map(Option::take) {
            c.close().await;
        }
    }

    /// The next delivery from the open consumers; among those ready, the most preferred wins.
    async fn next(
        &mut self,
        order: &QueueOrder,
        slots: &Slots,
        shutdown: &CancellationToken,
    ) -> Next {
        let preference = self.preference(order);
        let mut by_preference: Vec<(usize, &mut Consumer)> = Vec::new();
        let mut open: Vec<(usize, &mut Consumer)> = self
            .open
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.as_mut().map(|c| (i, c)))
            .collect();
        for i in preference {
            if let Some(pos) = open.iter().position(|(j, _)| *j == i) {
                by_preference.push(open.swap_remove(pos));
            }
        }
        if by_preference.is_empty() {
            return tokio::select! {
                _ = slots.freed() => Next::Freed,
                _ = slots.reclaimed() => Next::Reclaimed,
                _ = shutdown.cancelled() => Next::Shutdown,
            };
        }
        let (queues, futures): (Vec<usize>, Vec<_>) = by_preference
            .into_iter()
            .map(|(i, c)| (i, Box::pin(c.next())))
            .unzip();
        // select_all polls in vector order, so the most preferred ready queue wins.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Next::Shutdown,
            (next, pos, _) = select_all(futures) => match next {
                Some(Ok(incoming)) => Next::Job(Box::new(incoming), queues[pos]),
                Some(Err(e)) => {
                    tracing::error!("job queue: {e}");
                    Next::Lost
                }
                None => Next::Lost,
            },
            _ = slots.freed() => Next::Freed,
            _ = slots.reclaimed() => Next::Reclaimed,
        }
    }
}

/// Claims a pulled job in a task of its own, so the serve loop can take the next job
/// meanwhile, and runs it once the claim is confirmed: while `Claimed` is in flight the job is
/// made ready ([`job::run`]). The job was taken on the pull channel, which stays open, so its
/// ack can follow later.
///
/// A job claimed `ahead` holds no agent slot yet: once claimed it waits, ready, for the next
/// one freed ([`ahead`]).
fn claim_and_start(
    shared: &Arc<Shared>,
    jobs: &TaskTracker,
    incoming: Incoming,
    slots: SlotGuard,
    release: CancellationToken,
    ahead: Option<ahead::Ticket>,
) {
    let shared = shared.clone();
    jobs.spawn(async move {
        let Some(taken) = claim::take(&shared, incoming).await else {
            return;
        };
        let job = taken.job.clone();
        let slot = slots.attempt_slot();
        let cancel = shared.cancel_token(&claim::attempt_of(&job));
        let confirmed: job::Claim = Box::pin({
            let shared = shared.clone();
            async move {
                let confirmed = match claim::confirm(&shared, taken).await {
                    Some(confirmed) => {
                        confirmed.ack().await;
                        true
                    }
                    None => false,
                };
                if let Some(ticket) = ahead {
                    if confirmed {
                        tokio::select! {
                            () = async {
                                ticket.turn().await;
                                slot.take_first().await;
                            } => {}
                            // Stopped while it waits: its program never starts, so it needs no
                            // slot, and its report goes now, not once a running step ends.
                            () = cancel.cancelled() => {}
                        }
                    }
                    drop(ticket);
                }
                confirmed
            }
        });
        run_claimed(shared, job, slots, release, confirmed).await;
    });
}

/// Runs a job in the slots it holds once `claim` is confirmed; the job gives them back when its
/// work is over.
async fn run_claimed(
    shared: Arc<Shared>,
    job: StepJob,
    slots: SlotGuard,
    release: CancellationToken,
    claim: job::Claim,
) {
    let attempt = claim::attempt_of(&job);
    let cancel = shared.cancel_token(&attempt);
    let lease_terms =
        heartbeat::LeaseTerms::of(&job, &shared.config.controller_base(&job.controller_url));
    let held = Arc::new(AtomicBool::new(false));
    let claimed = {
        let (shared, held) = (shared.clone(), held.clone());
        Box::pin(async move {
            let confirmed = claim.await;
            if confirmed {
                held.store(true, Ordering::Relaxed);
                *shared.lease_terms.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease_terms);
            }
            confirmed
        })
    };
    job::run(shared.clone(), job, cancel, release, slots, claimed).await;
    // A claim that failed was forgotten by `claim::confirm`, under the lock a redelivery of the
    // same job registers under; forgetting the attempt again here would remove that
    // redelivery's registration (its heartbeats and its stop would be lost).
    if held.load(Ordering::Relaxed) {
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&attempt);
    }
}

/// Lets running jobs finish within the drain timeout. When it expires, the steps still running
/// are stopped (TERM, the kill grace, then KILL of the process group) and handed back: each
/// reports `released` once its processes are gone, so its next attempt never overlaps it.
/// `abort` instead aborts them at once.
async fn drain(shared: &Shared, jobs: TaskTracker, release: &CancellationToken) {
    shared.draining.store(true, Ordering::Relaxed);
    heartbeat::send(shared).await;
    jobs.close();
    let running = shared.running_attempts().len();
    if running > 0 {
        tracing::info!(
            "draining: waiting up to {:?} for {running} running step(s)",
            shared.config.drain_timeout
        );
    }
    tokio::select! {
        _ = jobs.wait() => return,
        _ = tokio::time::sleep(shared.config.drain_timeout) => {
            let running = shared.running_attempts();
            tracing::warn!(
                "drain timeout: stopping {} step(s) still running and handing them back",
                running.len()
            );
            // Before the cancels, so every job stopped from here on reports `released`.
            release.cancel();
            for attempt in running {
                shared.cancel(&attempt);
            }
        }
        _ = shared.abort.cancelled() => {
            tracing::warn!("asked to abort: aborting the steps still running");
            for attempt in shared.running_attempts() {
                shared.cancel(&attempt);
            }
        }
    }
    jobs.wait().await;
}
