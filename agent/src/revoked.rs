//! Revoked jobs: what the controller's `Revoke` notices said must not run, remembered for a
//! while so a job of an aborted run that is taken off its queue later is dropped, not run.

use drover_protocol::RunId;
use drover_protocol::message::{AttemptRef, Revoke};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a notice is kept. A job of a revoked run taken later than that runs until the
/// controller refuses its claim.
pub const KEEP: Duration = Duration::from_secs(3 * 60 * 60);

/// At most this many notices are kept; the oldest goes first. A whole run is one notice.
pub const MAX_KEPT: usize = 10_000;

/// What one notice revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Run(RunId),
    Attempt(AttemptRef),
}

impl Key {
    fn of(revoke: &Revoke) -> Key {
        match &revoke.step {
            None => Key::Run(revoke.run_id.clone()),
            Some(s) => Key::Attempt(AttemptRef {
                run_id: revoke.run_id.clone(),
                step: s.step.clone(),
                attempt: s.attempt,
            }),
        }
    }
}

/// The notices kept, with their reasons, oldest first in `order`, and the jobs dropped.
#[derive(Default)]
pub struct Revoked {
    inner: Mutex<Kept>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Kept {
    reasons: HashMap<Key, String>,
    order: VecDeque<(Instant, Key)>,
}

impl Revoked {
    /// Remembers `revoke` as of `now`, forgetting what is older than [`KEEP`] or beyond
    /// [`MAX_KEPT`].
    pub fn add(&self, revoke: &Revoke, now: Instant) {
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = Key::of(revoke);
        if kept
            .reasons
            .insert(key.clone(), revoke.reason.clone())
            .is_none()
        {
            kept.order.push_back((now, key));
        }
        while let Some((at, _)) = kept.order.front() {
            let stale = now.saturating_duration_since(*at) > KEEP;
            if !stale && kept.order.len() <= MAX_KEPT {
                break;
            }
            if let Some((_, old)) = kept.order.pop_front() {
                kept.reasons.remove(&old);
            }
        }
    }

    /// Why `attempt` must not run, if a notice kept says so.
    pub fn reason(&self, attempt: &AttemptRef) -> Option<String> {
        let kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if kept.reasons.is_empty() {
            return None;
        }
        let run = Key::Run(attempt.run_id.clone());
        kept.reasons
            .get(&run)
            .or_else(|| kept.reasons.get(&Key::Attempt(attempt.clone())))
            .cloned()
    }

    /// Counts a job dropped because a notice named it.
    pub fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs dropped since the agent started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Whether `revoke` names `attempt`.
pub fn names(revoke: &Revoke, attempt: &AttemptRef) -> bool {
    revoke.run_id == attempt.run_id
        && revoke
            .step
            .as_ref()
            .is_none_or(|s| s.step == attempt.step && s.attempt == attempt.attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::message::RevokedStep;
    use drover_protocol::{AttemptNo, StepName};

    fn run(n: u32) -> RunId {
        RunId::new(format!("{n:032x}")).unwrap()
    }

    fn attempt(run_id: RunId, step: &str, n: u32) -> AttemptRef {
        AttemptRef {
            run_id,
            step: StepName::new(step).unwrap(),
            attempt: AttemptNo(n),
        }
    }

    fn whole(run_id: RunId) -> Revoke {
        Revoke {
            run_id,
            step: None,
            reason: "aborted on request".into(),
            epoch: 0,
        }
    }

    #[test]
    fn a_revoked_run_covers_every_attempt_of_it_and_no_other_run() {
        let revoked = Revoked::default();
        revoked.add(&whole(run(1)), Instant::now());
        let reason = revoked.reason(&attempt(run(1), "a", 3));
        assert_eq!(reason.as_deref(), Some("aborted on request"));
        assert_eq!(revoked.reason(&attempt(run(2), "a", 3)), None);
    }

    #[test]
    fn a_revoked_attempt_covers_that_attempt_alone() {
        let revoked = Revoked::default();
        let one = Revoke {
            step: Some(RevokedStep {
                step: StepName::new("a").unwrap(),
                attempt: AttemptNo(2),
            }),
            ..whole(run(1))
        };
        revoked.add(&one, Instant::now());
        assert!(revoked.reason(&attempt(run(1), "a", 2)).is_some());
        assert_eq!(revoked.reason(&attempt(run(1), "a", 3)), None);
        assert_eq!(revoked.reason(&attempt(run(1), "b", 2)), None);
        assert!(names(&one, &attempt(run(1), "a", 2)));
        assert!(!names(&one, &attempt(run(1), "b", 2)));
        assert!(names(&whole(run(1)), &attempt(run(1), "b", 2)));
    }

    #[test]
    fn notices_are_forgotten_after_keep_or_beyond_the_cap() {
        let revoked = Revoked::default();
        let start = Instant::now();
        revoked.add(&whole(run(0)), start);
        // A later notice pushes out the one older than KEEP.
        revoked.add(&whole(run(1)), start + KEEP + Duration::from_secs(1));
        assert_eq!(revoked.reason(&attempt(run(0), "a", 1)), None);
        assert!(revoked.reason(&attempt(run(1), "a", 1)).is_some());
        for n in 2..(MAX_KEPT as u32 + 3) {
            revoked.add(&whole(run(n)), start + KEEP + Duration::from_secs(2));
        }
        let kept = revoked.inner.lock().unwrap();
        assert_eq!(kept.order.len(), MAX_KEPT);
        assert_eq!(kept.reasons.len(), MAX_KEPT);
        drop(kept);
        assert_eq!(revoked.reason(&attempt(run(2), "a", 1)), None);
        assert!(
            revoked
                .reason(&attempt(run(MAX_KEPT as u32 + 2), "a", 1))
                .is_some()
        );
    }
}
