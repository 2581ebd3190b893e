//! The owning task's side of schedules and triggers: changes asked through the HTTP API, the
//! due slots of every tick, and the triggers fired by runs that ended.
//!
//! The fire-once rule: what records that a slot or an upstream run fired (the schedule's
//! `last_slot`, the trigger's mark) is written and flushed before the run is submitted, so a
//! crash between the two loses that one run rather than submitting it twice.

use super::Owner;
use crate::automation::schedules::{Decision, ScheduleRecord, due};
use crate::automation::triggers::{TriggerRecord, check_no_loop};
use crate::scheduler::Event;
use crate::store::{StoreError, Submitted};
use drover_api::{FiredBy, FiredByKind, Firing, Skipped};
use drover_protocol::RunId;
use drover_protocol::message::{Submit, now_ms};
use drover_protocol::spec::PipelineSpec;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::oneshot;

/// A change to schedules or triggers.
pub(crate) enum Change {
    AddSchedule(Box<ScheduleRecord>),
    RemoveSchedule(String),
    /// Pauses (`true`) or resumes a schedule.
    PauseSchedule(String, bool),
    RunNow(String),
    AddTrigger(Box<TriggerRecord>),
    RemoveTrigger(String),
}

/// What a change answers.
pub(crate) enum Changed {
    Schedule(Box<ScheduleRecord>),
    Trigger(Box<TriggerRecord>),
    Fired(Firing),
}

/// Why a change was not made.
#[derive(Debug)]
pub(crate) enum Unchanged {
    NotFound(String),
    Invalid(String),
    Unavailable(String),
}

impl From<StoreError> for Unchanged {
    fn from(e: StoreError) -> Self {
        Unchanged::Unavailable(format!("cannot store the change: {e}; try again"))
    }
}

pub(crate) type Reply = oneshot::Sender<Result<Changed, Unchanged>>;

/// Schedules and triggers as the owning task holds them, and the runs ended since the
/// triggers were last looked at.
#[derive(Default)]
pub(crate) struct Automation {
    schedules: BTreeMap<String, ScheduleRecord>,
    triggers: BTreeMap<String, TriggerRecord>,
    ended: Vec<RunId>,
}

impl Owner {
    /// Loads schedules and triggers, and queues every ended run a trigger may not have seen.
    pub(super) fn load_automation(&mut self) {
        match (self.store.schedules(), self.store.triggers()) {
            (Ok(schedules), Ok(triggers)) => {
                let a = &mut self.automation;
                a.schedules = schedules.into_iter().map(|s| (s.name.clone(), s)).collect();
                a.triggers = triggers.into_iter().map(|t| (t.name.clone(), t)).collect();
                if let Some(oldest) = a.triggers.values().map(|t| t.created_at).min() {
                    // Ended runs live in the store only: their headers say enough.
                    match self.store.runs_ended_since(oldest) {
                        Ok(runs) => a.ended = runs.into_iter().map(|r| r.run_id).collect(),
                        Err(e) => tracing::error!(
                            "cannot read the ended runs triggers may not have seen: {e}"
                        ),
                    }
                }
                tracing::info!(
                    "{} schedule(s), {} trigger(s)",
                    a.schedules.len(),
                    a.triggers.len()
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot load schedules and triggers: {e}; none will fire")
            }
        }
    }

    /// Notes the runs among `changed` that have ended, for the triggers.
    pub(super) fn note_ended<'a>(&mut self, changed: impl IntoIterator<Item = &'a RunId>) {
        if self.automation.triggers.is_empty() {
            return;
        }
        for id in changed {
            if self
                .state
                .runs
                .get(id)
                .is_some_and(|r| r.status.is_terminal())
            {
                self.automation.ended.push(id.clone());
            }
        }
    }

    pub(super) async fn change(&mut self, change: Change, reply: Reply) {
        let answer = self.make_change(change).await;
        let _ = reply.send(answer);
    }

    async fn make_change(&mut self, change: Change) -> Result<Changed, Unchanged> {
        match change {
            Change::AddSchedule(s) => {
                if self.automation.schedules.contains_key(&s.name) {
                    return Err(Unchanged::Invalid(format!(
                        "a schedule named {} exists; remove it first (drover schedule remove {})",
                        s.name, s.name
                    )));
                }
                self.store.put_schedule(&s)?;
                self.store.flush().await?;
                self.automation.schedules.insert(s.name.clone(), *s.clone());
                Ok(Changed::Schedule(s))
            }
            Change::RemoveSchedule(name) => {
                let s = self.schedule(&name)?;
                self.store.remove_schedule(&name)?;
                self.store.flush().await?;
                self.automation.schedules.remove(&name);
                Ok(Changed::Schedule(Box::new(s)))
            }
            Change::PauseSchedule(name, paused) => {
                let mut s = self.schedule(&name)?;
                if s.paused && !paused {
                    // Slots passed while paused are not made up.
                    let latest = s
                        .cadence()
                        .ok()
                        .and_then(|c| c.latest_at_or_before(now_ms()));
                    s.last_slot = s.last_slot.max(latest);
                }
                s.paused = paused;
                self.store.put_schedule(&s)?;
                self.store.flush().await?;
                self.automation.schedules.insert(name, s.clone());
                Ok(Changed::Schedule(Box::new(s)))
            }
            Change::RunNow(name) => {
                let s = self.schedule(&name)?;
                let firing = self.fire_schedule(s, None).await?;
                Ok(Changed::Fired(firing))
            }
            Change::AddTrigger(t) => {
                if self.automation.triggers.contains_key(&t.name) {
                    return Err(Unchanged::Invalid(format!(
                        "a trigger named {} exists; remove it first (drover trigger remove {})",
                        t.name, t.name
                    )));
                }
                check_no_loop(self.automation.triggers.values(), &t).map_err(Unchanged::Invalid)?;
                self.store.put_trigger(&t)?;
                self.store.flush().await?;
                self.automation.triggers.insert(t.name.clone(), *t.clone());
                Ok(Changed::Trigger(t))
            }
            Change::RemoveTrigger(name) => {
                let Some(t) = self.automation.triggers.get(&name).cloned() else {
                    return Err(Unchanged::NotFound(format!("no trigger named {name}")));
                };
                self.store.remove_trigger(&name)?;
                self.store.flush().await?;
                self.automation.triggers.remove(&name);
                Ok(Changed::Trigger(Box::new(t)))
            }
        }
    }

    fn schedule(&self, name: &str) -> Result<ScheduleRecord, Unchanged> {
        self.automation
            .schedules
            .get(name)
            .cloned()
            .ok_or_else(|| Unchanged::NotFound(format!("no schedule named {name}")))
    }

    /// Fires or skips every due slot; called on each tick.
    pub(super) async fn fire_due_slots(&mut self) {
        if self.automation.schedules.is_empty() {
            return;
        }
        let now = now_ms();
        let busy: BTreeSet<String> = self
            .automation
            .schedules
            .values()
            .filter(|s| {
                s.last_run()
                    .and_then(|r| self.state.runs.get(r))
                    .is_some_and(|r| !r.status.is_terminal())
            })
            .map(|s| s.name.clone())
            .collect();
        for slot in due(self.automation.schedules.values(), now, &busy) {
            let Some(mut s) = self.automation.schedules.get(&slot.schedule).cloned() else {
                continue;
            };
            s.last_slot = Some(slot.slot);
            let done = match slot.decision {
                Decision::Fire => self.fire_schedule(s, Some(slot.slot)).await.map(|_| ()),
                Decision::Skip(reason) => {
                    tracing::warn!("schedule {}: slot {} skipped: {reason}", s.name, slot.slot);
                    s.skipped += 1;
                    s.last_skipped = Some(Skipped {
                        slot: slot.slot,
                        at: now,
                        reason,
                    });
                    self.keep_schedule(s).await
                }
            };
            if let Err(e) = done {
                tracing::error!("schedule {}: {e}", slot.schedule);
            }
        }
    }

    /// Stores `s` durably and holds it.
    async fn keep_schedule(&mut self, s: ScheduleRecord) -> Result<(), StoreError> {
        self.store.put_schedule(&s)?;
        self.store.flush().await?;
        self.automation.schedules.insert(s.name.clone(), s);
        Ok(())
    }

    /// Records the firing durably, then submits the schedule's pipeline.
    async fn fire_schedule(
        &mut self,
        mut s: ScheduleRecord,
        slot: Option<u64>,
    ) -> Result<Firing, StoreError> {
        let run_id = RunId::generate();
        let firing = Firing {
            slot,
            at: now_ms(),
            run_id: run_id.clone(),
            upstream: None,
        };
        s.last_fired = Some(firing.clone());
        let fired_by = FiredBy {
            kind: FiredByKind::Schedule,
            name: s.name.clone(),
            slot,
            upstream: None,
        };
        let (spec, params) = (s.spec.clone(), s.params.clone());
        self.keep_schedule(s).await?;
        self.submit_fired(run_id, spec, params, fired_by).await?;
        Ok(firing)
    }

    /// Fires every trigger the runs ended since the last call ask for, once per upstream run.
    pub(super) async fn fire_triggers(&mut self) {
        for upstream in std::mem::take(&mut self.automation.ended) {
            // An ended run is let go of once durable: its header in the store says enough.
            let stored;
            let run = match self.state.runs.get(&upstream) {
                Some(run) => run,
                None => match self.store.run_summary(&upstream) {
                    Ok(Some(run)) => {
                        stored = run;
                        &stored
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!("cannot read run {upstream} for its triggers: {e}");
                        continue;
                    }
                },
            };
            let (project, name, status) = (run.project.clone(), run.name.clone(), run.status);
            let ended_at = run.ended_at.unwrap_or(run.created_at);
            let fired: Vec<TriggerRecord> = self
                .automation
                .triggers
                .values()
                .filter(|t| t.fired_by(&project, &name, status, ended_at))
                .cloned()
                .collect();
            for t in fired {
                if let Err(e) = self.fire_trigger(t.clone(), &upstream).await {
                    tracing::error!("trigger {} for run {upstream}: {e}", t.name);
                }
            }
        }
    }

    /// Marks durably that `upstream` fired `t`, then submits its pipeline with the upstream
    /// run's id as its parameter.
    async fn fire_trigger(
        &mut self,
        mut t: TriggerRecord,
        upstream: &RunId,
    ) -> Result<(), StoreError> {
        let run_id = RunId::generate();
        if !self.store.mark_trigger_fired(&t.name, upstream, &run_id)? {
            return Ok(());
        }
        t.fired += 1;
        t.last_fired = Some(Firing {
            slot: None,
            at: now_ms(),
            run_id: run_id.clone(),
            upstream: Some(upstream.clone()),
        });
        self.store.put_trigger(&t)?;
        self.store.flush().await?;
        let mut params = t.params.clone();
        params.insert(t.param_name.clone(), upstream.to_string());
        let fired_by = FiredBy {
            kind: FiredByKind::Trigger,
            name: t.name.clone(),
            slot: None,
            upstream: Some(upstream.clone()),
        };
        let spec = t.spec.clone();
        self.automation.triggers.insert(t.name.clone(), t);
        tracing::info!(
            "run {upstream} fired trigger {}: run {run_id}",
            fired_by.name
        );
        self.submit_fired(run_id, spec, params, fired_by).await
    }

    /// Submits a run as `drover run` would, recording what fired it.
    async fn submit_fired(
        &mut self,
        run_id: RunId,
        spec: PipelineSpec,
        params: BTreeMap<String, String>,
        fired_by: FiredBy,
    ) -> Result<(), StoreError> {
        let submit = Submit {
            run_id: run_id.clone(),
            spec,
            params,
            submitted_by: Some(format!("{} {}", kind_name(fired_by.kind), fired_by.name)),
            // A firing always runs on agents, even from a run its submitter executed.
            external: false,
        };
        let mut submitted = Submitted::of(&submit, None);
        submitted.fired_by = Some(fired_by);
        self.store.put_submitted(&run_id, &submitted)?;
        let fx = crate::scheduler::handle(&mut self.state, Event::Submit(submit), now_ms());
        self.apply(fx).await
    }
}

fn kind_name(kind: FiredByKind) -> &'static str {
    match kind {
        FiredByKind::Schedule => "schedule",
        FiredByKind::Trigger => "trigger",
    }
}
