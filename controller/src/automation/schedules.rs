//! Schedules as stored, and the pure decision of which slots are due: `due(schedules, now,
//! busy) -> firings`, with time passed in so it is tested with any clock.
//!
//! The missed-slot rule: a schedule fires at most once per decision, for the latest slot at or
//! before `now` that is after the last slot it consumed. Slots missed while the controller was
//! down (or the schedule paused) are not made up one by one: the most recent one fires once.

use super::cadence::Cadence;
use drover_api::{Firing, Skipped};
use drover_protocol::RunId;
use drover_protocol::spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One schedule; the record of the `schedules` tree, keyed by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[serde(default)]
    pub overlap: bool,
    #[serde(default)]
    pub paused: bool,
    /// What each firing submits: the spec and parameter overrides captured at `add`.
    pub spec: PipelineSpec,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub from_run: Option<RunId>,
    pub created_at: u64,
    /// The latest slot consumed (fired or skipped); slots up to it never fire again.
    #[serde(default)]
    pub last_slot: Option<u64>,
    #[serde(default)]
    pub last_fired: Option<Firing>,
    #[serde(default)]
    pub last_skipped: Option<Skipped>,
    #[serde(default)]
    pub skipped: u64,
}

impl ScheduleRecord {
    pub fn cadence(&self) -> Result<Cadence, String> {
        Cadence::parse(&self.cron, Some(&self.timezone))
    }

    /// The run the schedule submitted last, if any.
    pub fn last_run(&self) -> Option<&RunId> {
        self.last_fired.as_ref().map(|f| &f.run_id)
    }

    /// The slot after which the next due slot is looked for.
    fn consumed_until(&self) -> u64 {
        self.last_slot.unwrap_or(self.created_at)
    }

    /// The next slot that can fire, seen at `now`; `None` while paused.
    pub fn next_slot(&self, now: u64) -> Option<u64> {
        if self.paused {
            return None;
        }
        self.cadence()
            .ok()?
            .next_after(self.consumed_until().max(now))
    }
}

/// What a due slot does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Submit a run for the slot.
    Fire,
    /// Consume the slot without a run, for this reason.
    Skip(String),
}

/// A due slot of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub schedule: String,
    pub slot: u64,
    pub decision: Decision,
}

/// The slots due at `now`: for each active schedule, the latest slot at or before `now` and
/// after the last one it consumed, at most one per schedule. `busy` names the schedules whose
/// last run is unfinished: their slot is skipped unless they allow overlap.
pub fn due<'a>(
    schedules: impl IntoIterator<Item = &'a ScheduleRecord>,
    now: u64,
    busy: &BTreeSet<String>,
) -> Vec<Due> {
    let mut found = Vec::new();
    for schedule in schedules {
        if schedule.paused {
            continue;
        }
        let Ok(cadence) = schedule.cadence() else {
            continue;
        };
        let Some(slot) = cadence.latest_at_or_before(now) else {
            continue;
        };
        if slot <= schedule.consumed_until() {
            continue;
        }
        let decision = match schedule.last_run() {
            Some(run) if busy.contains(&schedule.name) && !schedule.overlap => {
                Decision::Skip(format!(
                    "run {run} of this schedule is still running (add the schedule with --overlap to fire anyway)"
                ))
            }
            _ => Decision::Fire,
        };
        found.push(Due {
            schedule: schedule.name.clone(),
            slot,
            decision,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05 10:00:00 UTC.
    const T0: u64 = 1_767_607_200_000;

    fn every_two_seconds(name: &str) -> ScheduleRecord {
        ScheduleRecord {
            name: name.into(),
            cron: "*/2 * * * * *".into(),
            timezone: "UTC".into(),
            overlap: false,
            paused: false,
            spec: PipelineSpec::from_toml("[pipeline]\nname = \"p\"\n").unwrap(),
            params: BTreeMap::new(),
            from_run: None,
            created_at: T0 + 100,
            last_slot: None,
            last_fired: None,
            last_skipped: None,
            skipped: 0,
        }
    }

    /// Applies what `due` decided as the owning task does.
    fn consume(s: &mut ScheduleRecord, d: &Due, now: u64) {
        s.last_slot = Some(d.slot);
        match &d.decision {
            Decision::Fire => {
                s.last_fired = Some(Firing {
                    slot: Some(d.slot),
                    at: now,
                    run_id: RunId::generate(),
                    upstream: None,
                })
            }
            Decision::Skip(reason) => {
                s.skipped += 1;
                s.last_skipped = Some(Skipped {
                    slot: d.slot,
                    at: now,
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Every slot fired while ticking every `step` ms from `from` to `to`.
    fn fired_slots(s: &mut ScheduleRecord, from: u64, to: u64, step: u64) -> Vec<u64> {
        let mut slots = Vec::new();
        let mut now = from;
        while now <= to {
            for d in due([&*s], now, &BTreeSet::new()) {
                consume(s, &d, now);
                slots.push(d.slot);
            }
            now += step;
        }
        slots
    }

    #[test]
    fn each_slot_fires_once_however_often_the_decision_runs() {
        let mut s = every_two_seconds("a");
        let slots = fired_slots(&mut s, T0, T0 + 5_000, 250);
        assert_eq!(slots, [T0 + 2_000, T0 + 4_000]);
        assert_eq!(s.next_slot(T0 + 5_000), Some(T0 + 6_000));
    }

    #[test]
    fn nothing_before_the_schedule_was_added_fires() {
        let s = every_two_seconds("a");
        assert!(due([&s], T0 + 1_999, &BTreeSet::new()).is_empty());
        assert_eq!(due([&s], T0 + 2_000, &BTreeSet::new())[0].slot, T0 + 2_000);
    }

    #[test]
    fn missed_slots_fire_once_for_the_latest() {
        let mut s = every_two_seconds("a");
        s.last_slot = Some(T0 + 2_000);
        // Down from 3 s to 61 s: 29 slots missed, one firing for the latest.
        let found = due([&s], T0 + 61_000, &BTreeSet::new());
        assert_eq!(
            found,
            [Due {
                schedule: "a".into(),
                slot: T0 + 60_000,
                decision: Decision::Fire
            }]
        );
        consume(&mut s, &found[0], T0 + 61_000);
        assert!(due([&s], T0 + 61_500, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_busy_schedule_skips_with_its_reason_unless_it_overlaps() {
        let mut s = every_two_seconds("a");
        let first = due([&s], T0 + 2_000, &BTreeSet::new());
        consume(&mut s, &first[0], T0 + 2_000);
        let run = s.last_run().unwrap().clone();
        let busy = BTreeSet::from(["a".to_string()]);
        let second = due([&s], T0 + 4_000, &busy);
        let Decision::Skip(reason) = &second[0].decision else {
            panic!("{second:?}")
        };
        assert!(reason.contains(run.as_str()), "{reason}");
        assert!(reason.contains("--overlap"), "{reason}");
        consume(&mut s, &second[0], T0 + 4_000);
        assert_eq!(s.skipped, 1);
        assert!(
            due([&s], T0 + 5_000, &busy).is_empty(),
            "a skipped slot is consumed"
        );

        s.overlap = true;
        assert_eq!(due([&s], T0 + 6_000, &busy)[0].decision, Decision::Fire);
    }

    #[test]
    fn paused_schedules_do_not_fire_and_have_no_next_slot() {
        let mut s = every_two_seconds("a");
        s.paused = true;
        assert!(due([&s], T0 + 10_000, &BTreeSet::new()).is_empty());
        assert_eq!(s.next_slot(T0), None);
    }

    #[test]
    fn schedules_are_decided_independently() {
        let a = every_two_seconds("a");
        let mut b = every_two_seconds("b");
        b.cron = "*/3 * * * * *".into();
        let busy = BTreeSet::from(["b".to_string()]);
        let found = due([&a, &b], T0 + 3_000, &busy);
        let slots: Vec<(&str, u64)> = found
            .iter()
            .map(|d| (d.schedule.as_str(), d.slot))
            .collect();
        assert_eq!(slots, [("a", T0 + 2_000), ("b", T0 + 3_000)]);
        assert_eq!(found[1].decision, Decision::Fire, "b never ran: not busy");
    }
}
