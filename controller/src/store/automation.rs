//! Schedules and triggers, each keyed by name, and the fire-once marks of triggers: one key
//! per (trigger, upstream run), written and flushed before the downstream run is submitted.

use super::{Store, StoreError, decode, decode_all, encode};
use crate::automation::schedules::ScheduleRecord;
use crate::automation::triggers::TriggerRecord;
use drover_protocol::RunId;

pub(super) const SCHEDULES_TREE: &str = "schedules";
pub(super) const TRIGGERS_TREE: &str = "triggers";
pub(super) const TRIGGER_FIRED_TREE: &str = "trigger_fired";

fn fired_key(trigger: &str, upstream: &RunId) -> String {
    format!("{trigger}/{upstream}")
}

impl Store {
    pub fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError> {
        self.schedules
            .insert(schedule.name.as_str(), encode("schedule", schedule)?)?;
        Ok(())
    }

    pub fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        self.schedules.remove(name)?;
        Ok(())
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        decode_all("schedule", &self.schedules)
    }

    pub fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.schedules
            .get(name)?
            .map(|v| decode("schedule", name, &v))
            .transpose()
    }

    pub fn put_trigger(&self, trigger: &TriggerRecord) -> Result<(), StoreError> {
        self.triggers
            .insert(trigger.name.as_str(), encode("trigger", trigger)?)?;
        Ok(())
    }

    /// Removes a trigger and its fire-once marks.
    pub fn remove_trigger(&self, name: &str) -> Result<(), StoreError> {
        self.triggers.remove(name)?;
        let prefix = format!("{name}/");
        for key in self.trigger_fired.scan_prefix(prefix.as_bytes()).keys() {
            self.trigger_fired.remove(key?)?;
        }
        Ok(())
    }

    /// Every trigger, by name.
    pub fn triggers(&self) -> Result<Vec<TriggerRecord>, StoreError> {
        decode_all("trigger", &self.triggers)
    }

    /// Marks that `upstream` fired `trigger` (submitting `run`); false when it already had.
    pub fn mark_trigger_fired(
        &self,
        trigger: &str,
        upstream: &RunId,
        run: &RunId,
    ) -> Result<bool, StoreError> {
        let swapped = self.trigger_fired.compare_and_swap(
            fired_key(trigger, upstream),
            None,
            run.as_str().as_bytes().to_vec(),
        )?;
        Ok(swapped.is_ok())
    }

    /// Whether `upstream` already fired `trigger`.
    pub fn trigger_fired(&self, trigger: &str, upstream: &RunId) -> Result<bool, StoreError> {
        Ok(self
            .trigger_fired
            .contains_key(fired_key(trigger, upstream))?)
    }
}
