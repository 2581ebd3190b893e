//! The task that owns the scheduler state: applies each event, persists and flushes what
//! changed, then publishes the actions that follow and acks the delivery that caused them.
//! Consumers ([`consume`]) feed it; a timer ticks it.

pub(crate) mod archive;
pub(crate) mod automation;
pub(crate) mod consume;
mod pending;

use crate::logs::archive::EndedLog;
use crate::metrics::Metrics;
use crate::scheduler::{self, Action, Effects, Event, State, StepStatus};
use crate::store::{Store, StoreError, Submitted};
use bytes::Bytes;
use drover_amqp::{AmqpError, Broker, Incoming, Publisher, Target};
use drover_api::{AddStep, StepAdded, StepReport, StepReported};
use drover_protocol::message::{JobInput, Message, now_ms};
use drover_protocol::names::{ALL_AGENTS_ROUTING_KEY, agent_routing_key};
use drover_protocol::{Digest, Names, QueueName, RunId};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Most publishes awaiting their confirms at once.
const PUBLISH_WINDOW: usize = 512;
/// Most events applied before their changes are persisted together.
const MAX_BATCH: usize = 256;
/// How often leases and due retries are checked.
const TICK: Duration = Duration::from_millis(250);
/// How often queues with waiting steps are checked for consumers.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How often the same idle queue is warned about at most.
const IDLE_WARN_EVERY: Duration = Duration::from_secs(60);

/// What the owner task is asked to do.
pub(crate) enum Command {
    /// An event from a delivery, acked once its state change is durable; `None` for the events
    /// of an `Events` message but the last, which carries it.
    Delivery {
        event: Event,
        incoming: Option<Box<Incoming>>,
        /// The outputs a `Finished` carried, being stored ([`consume`]).
        inline: Option<Inline>,
    },
    /// An event from inside the controller (an abort through the HTTP API).
    Local(Event),
    /// A run submitted again through the HTTP API: `submit` carries the earlier run's spec.
    Rerun {
        submit: drover_protocol::message::Submit,
        of: drover_protocol::RunId,
    },
    /// A running step adds a step to its dynamic run (through the HTTP API); answered once the
    /// added step is durable and its job, if any, published.
    AddStep {
        run: RunId,
        request: Box<AddStep>,
        reply: oneshot::Sender<Result<StepAdded, Refused>>,
    },
    /// A change to schedules or triggers (through the HTTP API), answered once durable.
    Automation {
        change: automation::Change,
        reply: automation::Reply,
    },
    /// The submitter of an external run reports one of its steps (through the HTTP API);
    /// answered once the change is durable.
    Report {
        run: RunId,
        step: drover_protocol::StepName,
        report: Box<StepReport>,
        reply: oneshot::Sender<Result<StepReported, Refused>>,
    },
    /// The process running a pipeline's logic answers a step's callback (through the HTTP
    /// API); answered with the step's status once the change is durable.
    Callback {
        run: RunId,
        step: drover_protocol::StepName,
        proceed: bool,
        reply: oneshot::Sender<Result<drover_api::StepStatus, Refused>>,
    },
    /// An attempt's complete log is stored in the artifact store ([`archive`]).
    LogArchived {
        run: RunId,
        step: drover_protocol::StepName,
        attempt: drover_protocol::AttemptNo,
        archived: scheduler::ArchivedLog,
    },
}

/// The outputs a `Finished` carried inside it, by digest: kept in the state store before any
/// record naming them is written (readers, the HTTP API, see a record as soon as it is), made
/// durable by the same flush, and taken along by jobs published in the same batch to the steps
/// that read them.
pub(crate) struct Inline {
    pub bytes: Vec<(Digest, Bytes)>,
}

/// Puts the bytes of `fresh` outputs into the jobs that read them, so their agents need not
/// download them.
fn attach_inputs(actions: &mut [Action], fresh: &HashMap<Digest, Bytes>, most: u64) {
    if fresh.is_empty() {
        return;
    }
    for action in actions {
        if let Action::Dispatch { job, .. } = action {
            bring(&mut job.job.inputs, fresh, most);
        }
    }
}

/// Gives each of `inputs` found in `fresh` its bytes, in order, while they fit in `most` bytes.
fn bring(inputs: &mut [JobInput], fresh: &HashMap<Digest, Bytes>, most: u64) {
    let mut room = most;
    for input in inputs {
        if let Some(bytes) = fresh.get(&input.digest)
            && input.size <= room
        {
            room -= input.size;
            input.content = Some(ByteBuf::from(bytes.to_vec()));
        }
    }
}

/// Why an add-step request or a step report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The request is wrong (the scheduler's reason).
    Invalid(String),
    /// The state change could not be persisted; asking again is safe (the call is idempotent).
    Unavailable(String),
}

/// The owner of the scheduler state and everything needed to carry out its actions.
pub(crate) struct Owner {
    pub state: State,
    pub store: Store,
    pub broker: Arc<Broker>,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    declared: HashSet<QueueName>,
    /// Actions whose publish failed; tried again every tick while still relevant.
    undelivered: Vec<Action>,
    idle_warned: HashMap<QueueName, Instant>,
    automation: automation::Automation,
    /// Ended runs read back from the store for an event about them; let go again once the
    /// event's change is durable.
    recalled: Vec<RunId>,
    /// Where ended attempts go to have their logs archived, when logs are archived.
    archiver: Option<archive::Archiver>,
    /// Changes written and waiting for the next flush, with the deliveries that made them.
    pending: pending::Pending,
}

impl Owner {
    pub fn new(
        state: State,
        store: Store,
        broker: Arc<Broker>,
        publisher: Publisher,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state,
            store,
            broker,
            publisher,
            metrics,
            declared: HashSet::new(),
            undelivered: Vec::new(),
            idle_warned: HashMap::new(),
            automation: automation::Automation::default(),
            recalled: Vec::new(),
            archiver: None,
            pending: pending::Pending::default(),
        }
    }

    /// Has the logs of attempts that end archived by `archiver`.
    pub fn with_archiver(mut self, archiver: archive::Archiver) -> Self {
        self.archiver = Some(archiver);
        self
    }

    fn names(&self) -> &Names {
        self.broker.names()
    }

    /// Resumes unfinished runs, then serves commands and ticks until shutdown.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        self.load_automation();
        self.purge_predecessors_jobs().await;
        // Attempts that ended before a restart may not have had their logs archived yet.
        let unarchived: Vec<EndedLog> = self
            .state
            .runs
            .values()
            .flat_map(|run| {
                run.steps.iter().flat_map(move |step| {
                    step.attempts
                        .iter()
                        .filter(|a| a.outcome.is_some() && a.log_archive.is_none())
                        .map(move |a| EndedLog {
                            run_id: run.run_id.clone(),
                            step: step.name.clone(),
                            attempt: a.attempt,
                            size: a.log_size,
                        })
                })
            })
            .collect();
        let fx = scheduler::resume(&mut self.state, now_ms());
        if let Err(e) = self.apply(fx).await {
            tracing::error!("cannot persist the resumed runs: {e}");
        }
        self.archive_logs(unarchived);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut idle_check = tokio::time::interval(IDLE_CHECK);
        idle_check.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut broker_lost = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.commands(command, &mut commands).await,
                    None => break,
                },
                _ = sleep_until(self.pending.deadline()), if !self.pending.is_empty() => {
                    self.flush_pending().await;
                }
                _ = tick.tick() => {
                    // Without the broker no heartbeat can arrive: leases must not run out.
                    if !self.broker.is_connected() {
                        broker_lost = true;
                        continue;
                    }
                    if std::mem::take(&mut broker_lost) {
                        tracing::info!("broker connection back: renewing the leases of running steps");
                        scheduler::renew_leases(&mut self.state, now_ms());
                    }
                    let fx = scheduler::handle(&mut self.state, Event::Tick, now_ms());
                    if let Err(e) = self.apply(fx).await {
                        tracing::error!("cannot persist the state after a tick: {e}");
                    }
                    self.retry_undelivered().await;
                    self.fire_due_slots().await;
                    self.fire_triggers().await;
                }
                _ = idle_check.tick() => self.warn_about_idle_queues().await,
            }
        }
        self.flush_pending().await;
        if let Err(e) = self.store.flush().await {
            tracing::error!("cannot flush the state store on shutdown: {e}");
        }
    }

    /// With the state journal, empties the job queues of the unfinished runs before their
    /// queued steps are published again ([`scheduler::resume`]): what waits there was published
    /// by the controller before this one (a deposed leader, whose lock this one now holds, so it
    /// can publish nothing more). Agents refuse its epoch only once they have seen this
    /// controller's, which its own jobs bring, and those come after the old ones in each queue:
    /// left there, an old job would run and its copy published again would run a second time.
    /// Jobs an agent has taken and not yet acked are not removed; their claims count.
    async fn purge_predecessors_jobs(&mut self) {
        let epoch = self.state.config.epoch;
        if epoch == 0 {
            return;
        }
        let queues: BTreeSet<QueueName> = self
            .state
            .runs
            .values()
            .filter(|r| !r.status.is_terminal())
            .flat_map(|r| r.steps.iter().map(|s| s.queue.clone()))
            .collect();
        for queue in queues {
            let broker_queue = self.names().user_queue(&queue);
            let purged = match self.broker.declare_user_queue(&queue).await {
                Ok(()) => self.broker.purge_queue(&broker_queue).await,
                Err(e) => Err(e),
            };
            match purged {
                Ok(n) => {
                    self.declared.insert(queue);
                    if n > 0 {
                        tracing::info!(
                            "removed {n} job(s) left in {broker_queue} by the controller before this \
                             one; its queued steps are published again with epoch {epoch}"
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot remove the jobs left in {broker_queue} by the controller before this \
                     one: {e}; an agent that takes one before it has seen epoch {epoch} runs it, \
                     and the copy published again as well"
                ),
            }
        }
    }

    /// Applies `first` and every command already waiting (up to [`MAX_BATCH`]), then persists
    /// what they changed with one flush, publishes their actions and settles their deliveries.
    /// Under load this writes each busy run record once per batch instead of once per event.
    async fn commands(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) {
        let mut fx = Effects::default();
        let mut deliveries = Vec::new();
        let mut replies = Vec::new();
        let mut changes = Vec::new();
        let mut reported = Vec::new();
        let mut answered = Vec::new();
        let mut next = Some(first);
        let mut submitted = Ok(());
        let mut ended_logs = Vec::new();
        let mut fresh = HashMap::new();
        // Whether every command came in a delivery, which the broker gives again to a
        // controller that dies before acking it (see `quiet` below).
        let mut redeliverable = true;
        while let Some(command) = next.take() {
            redeliverable &= matches!(command, Command::Delivery { .. });
            let (event, rerun_of) = match command {
                Command::Delivery {
                    event,
                    incoming,
                    inline,
                } => {
                    deliveries.extend(incoming);
                    if let Some(inline) = inline {
                        fresh.extend(inline.bytes);
                    }
                    (Some(event), None)
                }
                Command::Local(event) => (Some(event), None),
                Command::Rerun { submit, of } => (Some(Event::Submit(submit)), Some(of)),
                Command::AddStep {
                    run,
                    request,
                    reply,
                } => {
                    self.recall(&run);
                    match scheduler::add_step(&mut self.state, *request, &run, now_ms()) {
                        Ok((added, step_fx)) => {
                            fx.merge(step_fx);
                            replies.push((reply, added));
                        }
                        // A refusal changes nothing: answered at once.
                        Err(why) => {
                            let _ = reply.send(Err(Refused::Invalid(why)));
                        }
                    }
                    (None, None)
                }
                Command::Automation { change, reply } => {
                    changes.push((change, reply));
                    (None, None)
                }
                Command::Report {
                    run,
                    step,
                    report,
                    reply,
                } => {
                    self.recall(&run);
                    match scheduler::report(&mut self.state, &run, &step, *report, now_ms()) {
                        Ok((answer, step_fx)) => {
                            fx.merge(step_fx);
                            reported.push((reply, answer));
                        }
                        Err(why) => {
                            let _ = reply.send(Err(Refused::Invalid(why)));
                        }
                    }
                    (None, None)
                }
                Command::LogArchived {
                    run,
                    step,
                    attempt,
                    archived,
                } => {
                    self.recall(&run);
                    let step_fx =
                        scheduler::log_archived(&mut self.state, &run, &step, attempt, archived);
                    fx.merge(step_fx);
                    (None, None)
                }
                Command::Callback {
                    run,
                    step,
                    proceed,
                    reply,
                } => {
                    self.recall(&run);
                    match scheduler::answer_callback(
                        &mut self.state,
                        &run,
                        &step,
                        proceed,
                        now_ms(),
                    ) {
                        Ok((status, step_fx)) => {
                            fx.merge(step_fx);
                            answered.push((reply, status));
                        }
                        Err(why) => {
                            let _ = reply.send(Err(Refused::Invalid(why)));
                        }
                    }
                    (None, None)
                }
            };
            if let Some(event) = event {
                self.recall_for(&event);
                let finished = match &event {
                    Event::Finished(f) => {
                        Some((f.run_id.clone(), f.step.clone(), f.attempt, f.log_size))
                    }
                    _ => None,
                };
                // Kept as sent, so the run can be submitted again as it was.
                if let Event::Submit(s) = &event
                    && submitted.is_ok()
                {
                    submitted = self
                        .store
                        .put_submitted(&s.run_id, &Submitted::of(s, rerun_of));
                }
                fx.merge(scheduler::handle(&mut self.state, event, now_ms()));
                if let Some((run_id, step, attempt, size)) = finished
                    && self.archiver.is_some()
                    && self.ended_unarchived(&run_id, &step, attempt)
                {
                    ended_logs.push(EndedLog {
                        run_id,
                        step,
                        attempt,
                        size,
                    });
                }
            }
            if deliveries.len() + replies.len() + changes.len() + reported.len() + answered.len()
                < MAX_BATCH
            {
                next = commands.try_recv().ok();
            }
        }
        // Nothing to publish, and every event in a delivery that comes again if this
        // controller dies first (nobody waits for an answer to one): the change is written now
        // and flushed with a later batch (within `pending::MOST_DELAY`), its deliveries acked
        // then. A change of the controller's own (an archived log, an abort through HTTP) has
        // no such copy and is flushed at once.
        let quiet = redeliverable && fx.actions.is_empty();
        let applied = match submitted {
            Ok(()) if quiet => match self.write(&fx, &fresh) {
                Ok(()) => {
                    self.pending.add(deliveries, fx.runs, ended_logs);
                    if self.pending.due() {
                        self.flush_pending().await;
                    }
                    return;
                }
                Err(e) => Err(e),
            },
            Ok(()) => {
                attach_inputs(&mut fx.actions, &fresh, self.state.config.inline_outputs);
                self.apply_keeping(fx, &fresh).await
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => {
                self.archive_logs(ended_logs);
                for (reply, added) in replies {
                    let _ = reply.send(Ok(added));
                }
                for (reply, answer) in reported {
                    let _ = reply.send(Ok(answer));
                }
                for (reply, status) in answered {
                    let _ = reply.send(Ok(status));
                }
                for incoming in deliveries {
                    if let Err(e) = incoming.ack().await {
                        tracing::warn!("cannot ack a message from {}: {e}", incoming.queue());
                    }
                }
            }
            Err(e) => {
                for (reply, _) in replies {
                    let why = format!("cannot persist the added step: {e}; try again");
                    let _ = reply.send(Err(Refused::Unavailable(why)));
                }
                for (reply, _) in reported {
                    let why = format!("cannot persist the step report: {e}; try again");
                    let _ = reply.send(Err(Refused::Unavailable(why)));
                }
                for (reply, _) in answered {
                    let why = format!("cannot persist the callback's answer: {e}; try again");
                    let _ = reply.send(Err(Refused::Unavailable(why)));
                }
                tracing::error!(
                    "cannot persist the state change of {} message(s): {e}; they go back to their queues",
                    deliveries.len()
                );
                for incoming in deliveries {
                    let _ = incoming.requeue().await;
                }
            }
        }
        for (change, reply) in changes {
            self.change(change, reply).await;
        }
    }

    /// Whether attempt `attempt` of `step` has ended without its log archived yet.
    fn ended_unarchived(
        &self,
        run: &RunId,
        step: &drover_protocol::StepName,
        attempt: drover_protocol::AttemptNo,
    ) -> bool {
        self.state
            .runs
            .get(run)
            .and_then(|r| r.step(step))
            .and_then(|s| s.attempts.iter().find(|a| a.attempt == attempt))
            .is_some_and(|a| a.outcome.is_some() && a.log_archive.is_none())
    }

    /// Hands ended attempts, whose end is durable, to the archiver (when logs are archived).
    fn archive_logs(&self, ended: Vec<EndedLog>) {
        let Some(archiver) = &self.archiver else {
            return;
        };
        for log in ended {
            // The archiver is gone only when shutting down; the log stays in the data dir.
            let _ = archiver.send(log);
        }
    }

    /// Persists and flushes the changed records, then publishes the actions.
    async fn apply(&mut self, fx: Effects) -> Result<(), StoreError> {
        self.apply_keeping(fx, &HashMap::new()).await
    }

    /// Flushes the changes waiting for a flush and settles their deliveries.
    async fn flush_pending(&mut self) {
        if let Err(e) = self.apply(Effects::default()).await {
            tracing::error!("cannot persist the state: {e}");
        }
    }

    /// [`Owner::apply`] that first keeps the outputs in `fresh` ([`Inline`]). Changes waiting
    /// for a flush ([`pending`]) are made durable by the same flush and their deliveries acked
    /// after it (requeued if it fails).
    async fn apply_keeping(
        &mut self,
        mut fx: Effects,
        fresh: &HashMap<Digest, Bytes>,
    ) -> Result<(), StoreError> {
        self.write(&fx, fresh)?;
        if fx.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        if let Err(e) = self.store.flush().await {
            tracing::error!(
                "cannot persist the state change of {} held message(s): {e}; they go back to their queues",
                pending.deliveries.len()
            );
            for incoming in pending.deliveries {
                let _ = incoming.requeue().await;
            }
            return Err(e);
        }
        fx.runs.extend(pending.runs);
        self.note_ended(&fx.runs);
        self.publish_all(fx.actions).await;
        self.let_go_of_ended(fx.runs);
        self.archive_logs(pending.ended_logs);
        for incoming in pending.deliveries {
            if let Err(e) = incoming.ack().await {
                tracing::warn!("cannot ack a message from {}: {e}", incoming.queue());
            }
        }
        Ok(())
    }

    /// Writes what `fx` changed (and the outputs in `fresh`) to the store, without flushing.
    fn write(&mut self, fx: &Effects, fresh: &HashMap<Digest, Bytes>) -> Result<(), StoreError> {
        for (digest, bytes) in fresh {
            self.store.put_small_output(digest, bytes)?;
        }
        for id in &fx.runs {
            match (self.state.runs.get(id), fx.steps.get(id)) {
                (Some(run), Some(changed)) => self.store.put_run_steps(run, changed)?,
                (Some(run), None) => self.store.put_run(run)?,
                (None, _) => {}
            }
        }
        for id in &fx.agents {
            if let Some(agent) = self.state.agents.get(id) {
                self.store.put_agent(agent)?;
            }
        }
        for action in &fx.actions {
            if let Action::CacheInsert { key, outputs } = action {
                self.store.put_cache(key, outputs)?;
            }
        }
        Ok(())
    }

    /// Drops the ended runs among `changed` and the recalled ones from memory: their records
    /// are durable, nothing the scheduler decides depends on them, and an event that names one
    /// later reads it back ([`Owner::recall`]). So the controller holds the runs in progress,
    /// not every run it ever ran.
    fn let_go_of_ended(&mut self, changed: BTreeSet<RunId>) {
        for id in changed
            .into_iter()
            .chain(std::mem::take(&mut self.recalled))
        {
            if self
                .state
                .runs
                .get(&id)
                .is_some_and(|r| r.status.is_terminal())
            {
                self.state.runs.remove(&id);
            }
        }
    }

    /// Reads run `id` back from the store when the scheduler let go of it (it ended), so an
    /// event about it meets it as it was: a redelivered submission is still recognised, a late
    /// claim or report still answered as for an ended run.
    fn recall(&mut self, id: &RunId) {
        if self.state.runs.contains_key(id) {
            return;
        }
        match self.store.run(id) {
            Ok(Some(run)) => {
                self.state.runs.insert(id.clone(), run);
                self.recalled.push(id.clone());
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot read run {id} back from the state store: {e}"),
        }
    }

    /// Recalls every run `event` names.
    fn recall_for(&mut self, event: &Event) {
        match event {
            Event::Submit(s) => self.recall(&s.run_id),
            Event::Abort(a) => self.recall(&a.run_id),
            Event::Claimed(c) => self.recall(&c.run_id),
            Event::Finished(f) => self.recall(&f.run_id),
            Event::Heartbeat(h) => {
                for r in &h.running {
                    self.recall(&r.run_id);
                }
            }
            Event::Tick => {}
        }
    }

    /// Declares the queues the actions need, then publishes them all at once so their confirms
    /// overlap (a 10,000-job fan-out waits for one round of confirms, not 10,000 in a row).
    async fn publish_all(&mut self, actions: Vec<Action>) {
        let mut ready = Vec::with_capacity(actions.len());
        for action in actions {
            match self.declare_for(&action).await {
                Ok(()) => ready.push(action),
                Err(e) => self.publish_failed(action, e),
            }
        }
        for chunk in ready.chunks(PUBLISH_WINDOW) {
            let sends = chunk
                .iter()
                .map(|a| send(&self.publisher, self.broker.names(), a));
            let results = futures_util::future::join_all(sends).await;
            for (action, result) in chunk.iter().zip(results) {
                if let Err(e) = result {
                    self.publish_failed(action.clone(), e);
                }
            }
        }
    }

    async fn declare_for(&mut self, action: &Action) -> Result<(), AmqpError> {
        if let Action::Dispatch { queue, .. } = action
            && !self.declared.contains(queue)
        {
            self.broker.declare_user_queue(queue).await?;
            self.declared.insert(queue.clone());
        }
        Ok(())
    }

    async fn publish(&mut self, action: &Action) -> Result<(), AmqpError> {
        self.declare_for(action).await?;
        send(&self.publisher, self.broker.names(), action).await
    }

    fn publish_failed(&mut self, action: Action, error: AmqpError) {
        match &action {
            Action::Dispatch { queue, job } => {
                self.metrics.publish_failed("step_job");
                tracing::error!(
                    "cannot publish attempt {} of step {} of run {} to queue {queue}: {error}; will retry",
                    job.attempt,
                    job.step,
                    job.run_id
                );
                self.undelivered.push(action);
            }
            // An agent that is gone has no control queue: nothing left to cancel.
            Action::Cancel { agent, cancel } if matches!(error, AmqpError::Unroutable(_)) => {
                tracing::debug!(
                    "agent {agent} is gone; cancel of {}/{} dropped",
                    cancel.run_id,
                    cancel.step
                );
            }
            Action::Cancel { agent, cancel } => {
                self.metrics.publish_failed("cancel");
                tracing::warn!(
                    "cannot tell agent {agent} to cancel step {} of run {}: {error}; will retry",
                    cancel.step,
                    cancel.run_id
                );
                self.undelivered.push(action);
            }
            // No agent is bound to the control exchange: none can take the revoked jobs.
            Action::Revoke(revoke) if matches!(error, AmqpError::Unroutable(_)) => {
                tracing::debug!("no agent to tell that run {} is revoked", revoke.run_id);
            }
            Action::Revoke(revoke) => {
                self.metrics.publish_failed("revoke");
                tracing::warn!(
                    "cannot tell the agents that run {}'s queued jobs are revoked: {error}; will \
                     retry",
                    revoke.run_id
                );
                self.undelivered.push(action);
            }
            Action::CacheInsert { .. } => {}
        }
    }

    /// Publishes again what failed before, if the attempt it concerns is still waiting for it.
    async fn retry_undelivered(&mut self) {
        if self.undelivered.is_empty() || !self.broker.is_connected() {
            return;
        }
        for action in std::mem::take(&mut self.undelivered) {
            let relevant = match &action {
                Action::Dispatch { job, .. } => self
                    .state
                    .runs
                    .get(&job.run_id)
                    .and_then(|r| r.step(&job.step))
                    .is_some_and(|s| s.status == StepStatus::Queued && s.attempt == job.attempt),
                Action::Cancel { cancel, .. } => self
                    .state
                    .runs
                    .get(&cancel.run_id)
                    .and_then(|r| r.step(&cancel.step))
                    .is_some_and(|s| s.attempt == cancel.attempt && !s.status.is_terminal()),
                Action::Revoke(_) => true,
                Action::CacheInsert { .. } => false,
            };
            if !relevant {
                continue;
            }
            if let Err(e) = self.publish(&action).await {
                tracing::debug!("publish retry failed: {e}");
                self.undelivered.push(action);
            }
        }
    }

    /// Warns (at most once a minute per queue) about steps queued where no agent consumes and
    /// no live agent serves the queue (a busy one takes its jobs without a consumer).
    async fn warn_about_idle_queues(&mut self) {
        let now = now_ms();
        let mut waiting: BTreeMap<QueueName, usize> = BTreeMap::new();
        for run in self.state.runs.values().filter(|r| !r.status.is_terminal()) {
            for step in run.steps.iter().filter(|s| s.status == StepStatus::Queued) {
                *waiting.entry(step.queue.clone()).or_default() += 1;
            }
        }
        for (queue, steps) in waiting {
            let served = self.state.agents.values().any(|a| a.serves(&queue, now));
            if served
                || self
                    .idle_warned
                    .get(&queue)
                    .is_some_and(|t| t.elapsed() < IDLE_WARN_EVERY)
            {
                continue;
            }
            let broker_queue = self.names().user_queue(&queue);
            match self.broker.queue_stats(&broker_queue).await {
                Ok(Some(stats)) if stats.consumers == 0 => {
                    tracing::warn!(
                        "{steps} step(s) wait on queue {queue} ({broker_queue}) but no agent consumes it; start one with `{}`",
                        agent_command(&queue)
                    );
                    self.idle_warned.insert(queue, Instant::now());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("cannot read the stats of queue {broker_queue}: {e}"),
            }
        }
    }
}

/// The command that starts an agent for `queue`: drivers mostly wait, so theirs has no slot
/// limit.
pub(crate) fn agent_command(queue: &QueueName) -> String {
    if *queue == QueueName::drivers() {
        format!("drover agent --services-mode --queue {queue}")
    } else {
        format!("drover agent --queue {queue}")
    }
}

/// Publishes one action's message.
async fn send(publisher: &Publisher, names: &Names, action: &Action) -> Result<(), AmqpError> {
    match action {
        Action::Dispatch { queue, job } => {
            let target = Target::Job(names.user_queue(queue));
            let msg = Message::StepJob((**job).clone());
            publisher
                .publish_with_priority(&target, &msg, job.job.priority)
                .await
        }
        Action::Cancel { agent, cancel } => {
            let target = Target::Control(agent_routing_key(agent));
            publisher
                .publish(&target, &Message::Cancel(cancel.clone()))
                .await
        }
        Action::Revoke(revoke) => {
            let target = Target::Control(ALL_AGENTS_ROUTING_KEY.to_string());
            publisher
                .publish(&target, &Message::Revoke(revoke.clone()))
                .await
        }
        Action::CacheInsert { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_queue_is_served_by_an_agent_without_a_slot_limit() {
        let drivers = QueueName::drivers();
        assert_eq!(
            agent_command(&drivers),
            "drover agent --services-mode --queue drivers"
        );
        let gpu = QueueName::new("gpu").unwrap();
        assert_eq!(agent_command(&gpu), "drover agent --queue gpu");
    }

    /// A job brings the fresh outputs it reads, in the order of its inputs, while they fit.
    #[test]
    fn jobs_bring_the_fresh_outputs_they_read_while_they_fit() {
        use drover_protocol::{FileName, OutputName, StepName};
        let input = |content: &[u8]| JobInput {
            step: StepName::new("p").unwrap(),
            output: OutputName::new("out").unwrap(),
            digest: Digest::of_bytes(content),
            size: content.len() as u64,
            file_name: FileName::new("out.txt").unwrap(),
            content: None,
        };
        let mut inputs = [input(b"aaaa"), input(b"old"), input(b"bbbb"), input(b"c")];
        let fresh: HashMap<Digest, Bytes> = [&b"aaaa"[..], b"bbbb", b"c"]
            .into_iter()
            .map(|b| (Digest::of_bytes(b), Bytes::from_static(b)))
            .collect();
        bring(&mut inputs, &fresh, 6);
        let brought: Vec<Option<&[u8]>> = inputs
            .iter()
            .map(|i| i.content.as_deref().map(|b| &b[..]))
            .collect();
        assert_eq!(brought, [Some(&b"aaaa"[..]), None, None, Some(b"c")]);
    }
}
