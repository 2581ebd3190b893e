//! Waiting on a condition with a deadline instead of sleeping for a guessed time: the condition
//! is polled until it holds, and when it never does the error names what was awaited and the
//! last value observed, so a failure says why.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long to wait for what, and how often to look.
#[derive(Debug, Clone)]
pub struct Deadline {
    what: String,
    within: Duration,
    every: Duration,
}

impl Deadline {
    /// Waits up to `within` for `what` (a phrase such as "the controller's URL"), looking every
    /// 50 ms.
    pub fn new(what: impl Into<String>, within: Duration) -> Self {
        Self {
            what: what.into(),
            within,
            every: Duration::from_millis(50),
        }
    }

    /// Looks every `every` instead (a measurement that needs a finer grain, or a costly check).
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// What is awaited.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// One look at a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<T> {
    /// It holds, with this value.
    Ready(T),
    /// Not yet; what was seen instead.
    NotYet(String),
    /// It never will (say, the process that should get ready exited): stop waiting.
    Failed(String),
}

/// What a condition may return: a [`Check`], an `Option` (`None`: not yet), a `Result` (`Err`:
/// not yet, with what was seen) or a `bool`.
pub trait Observation {
    type Value;
    fn check(self) -> Check<Self::Value>;
}

impl<T> Observation for Check<T> {
    type Value = T;
    fn check(self) -> Check<T> {
        self
    }
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn check(self) -> Check<T> {
        match self {
            Some(v) => Check::Ready(v),
            None => Check::NotYet("nothing yet".into()),
        }
    }
}

impl<T, E: fmt::Display> Observation for Result<T, E> {
    type Value = T;
    fn check(self) -> Check<T> {
        match self {
            Ok(v) => Check::Ready(v),
            Err(e) => Check::NotYet(e.to_string()),
        }
    }
}

impl Observation for bool {
    type Value = ();
    fn check(self) -> Check<()> {
        if self {
            Check::Ready(())
        } else {
            Check::NotYet("false".into())
        }
    }
}

/// A condition that did not hold in time, or that gave up.
#[derive(Clone, thiserror::Error)]
pub struct WaitError {
    /// What was awaited.
    pub what: String,
    /// How long it was awaited.
    pub waited: Duration,
    /// The last value observed (or why the condition gave up).
    pub last: String,
    /// Whether the condition gave up ([`Check::Failed`]) rather than running out of time.
    pub gave_up: bool,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waited = self.waited.as_secs_f64();
        if self.gave_up {
            write!(
                f,
                "gave up waiting for {} after {waited:.1} s: {}",
                self.what, self.last
            )
        } else {
            write!(
                f,
                "timed out after {waited:.1} s waiting for {}; last observed: {}",
                self.what, self.last
            )
        }
    }
}

/// The message itself, so that `unwrap` and `expect` in tests print it readably.
impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The bookkeeping both forms of [`eventually`] share.
struct Looking {
    deadline: Deadline,
    started: Instant,
}

impl Looking {
    fn start(deadline: Deadline) -> Self {
        Self {
            deadline,
            started: Instant::now(),
        }
    }

    /// `Ok(Some)` when it holds, `Ok(None)` to look again, `Err` to stop.
    fn record<O: Observation>(&self, seen: O) -> Result<Option<O::Value>, WaitError> {
        let (last, gave_up) = match seen.check() {
            Check::Ready(v) => return Ok(Some(v)),
            Check::NotYet(_) if self.started.elapsed() < self.deadline.within => {
                return Ok(None);
            }
            Check::NotYet(last) => (last, false),
            Check::Failed(reason) => (reason, true),
        };
        Err(WaitError {
            what: self.deadline.what.clone(),
            waited: self.started.elapsed(),
            last,
            gave_up,
        })
    }

    /// Until the next look: the poll interval, or less so the last look is at the deadline.
    fn pause(&self) -> Duration {
        let left = self.deadline.within.saturating_sub(self.started.elapsed());
        self.deadline.every.min(left)
    }
}

/// Polls `condition` until it holds and returns its value; fails when it has not held by the
/// deadline (naming the last observation) or when it gives up.
pub fn eventually<O: Observation>(
    deadline: Deadline,
    mut condition: impl FnMut() -> O,
) -> Result<O::Value, WaitError> {
    let looking = Looking::start(deadline);
    loop {
        if let Some(v) = looking.record(condition())? {
            return Ok(v);
        }
        std::thread::sleep(looking.pause());
    }
}

/// [`eventually`] for an asynchronous condition, sleeping on the tokio timer between looks.
pub async fn eventually_async<O, F, Fut>(
    deadline: Deadline,
    mut condition: F,
) -> Result<O::Value, WaitError>
where
    O: Observation,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let looking = Looking::start(deadline);
    loop {
        if let Some(v) = looking.record(condition().await)? {
            return Ok(v);
        }
        tokio::time::sleep(looking.pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(what: &str) -> Deadline {
        Deadline::new(what, Duration::from_millis(300)).every(Duration::from_millis(5))
    }

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut looks = 0;
        let v = eventually(quick("three looks"), || {
            looks += 1;
            (looks == 3).then_some(looks * 10)
        })
        .unwrap();
        assert_eq!((v, looks), (30, 3));
    }

    #[test]
    fn a_timeout_names_what_was_awaited_and_the_last_observation() {
        let mut looks = 0;
        let started = Instant::now();
        let err = eventually(quick("the answer"), || {
            looks += 1;
            Err::<(), _>(format!("saw {looks}"))
        })
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300), "{err}");
        assert!(!err.gave_up);
        assert_eq!(err.last, format!("saw {looks}"));
        let shown = format!("{err:?}");
        assert!(shown.starts_with("timed out after 0.3 s waiting for the answer"));
        assert!(shown.ends_with(&format!("last observed: saw {looks}")));
    }

    #[test]
    fn a_failed_check_stops_before_the_deadline() {
        let err = eventually(Deadline::new("a process", Duration::from_secs(60)), || {
            Check::<()>::Failed("it exited".into())
        })
        .unwrap_err();
        assert!(err.gave_up);
        assert!(err.waited < Duration::from_secs(1), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "gave up waiting for a process after {:.1} s: it exited",
                err.waited.as_secs_f64()
            )
        );
    }

    #[test]
    fn options_and_bools_are_observations() {
        assert_eq!(Some(4).check(), Check::Ready(4));
        assert_eq!(None::<u8>.check(), Check::NotYet("nothing yet".into()));
        assert_eq!(true.check(), Check::Ready(()));
        assert_eq!(false.check(), Check::NotYet("false".into()));
        assert_eq!(Err::<u8, _>("no").check(), Check::NotYet("no".into()));
    }

    #[test]
    fn the_last_look_is_at_the_deadline_not_a_poll_interval_later() {
        let d = Deadline::new("x", Duration::from_millis(100)).every(Duration::from_secs(10));
        let started = Instant::now();
        let err = eventually(d, || false).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    }

    #[tokio::test]
    async fn the_async_form_waits_for_another_task() {
        let counter = Arc::new(AtomicU32::new(0));
        let writer = counter.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                writer.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        });
        let seen = eventually_async(quick("five increments"), || {
            let n = counter.load(Ordering::SeqCst);
            async move { if n == 5 { Ok(n) } else { Err(n) } }
        })
        .await
        .unwrap();
        assert_eq!(seen, 5);
        let err = eventually_async(quick("six increments"), || {
            let n = counter.load(Ordering::SeqCst);
            async move { (n == 6).then_some(()) }
        })
        .await
        .unwrap_err();
        assert_eq!(err.what, "six increments");
    }
}
