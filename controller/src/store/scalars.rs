//! The scalars steps report, one record per series in the tree `step_scalars`, keyed
//! `<run>\0<step>\0<title>\0<series>` so that one step's series (or one run's) are a prefix
//! scan. A series keeps at most [`MAX_POINTS_PER_SERIES`] points: past that it keeps every other
//! one and doubles its stride, so it stays evenly sampled over its whole length, however long
//! the step reports.
//!
//! Scalars are not run state: the HTTP handler writes them directly (after checking that the
//! reporting attempt is the step's current, running one) and they reach disk with sled's
//! periodic flush, not before anything is published.

use super::journaled::{Recorder, Tree};
use super::{StoreError, decode, encode};
use drover_api::scalars::{MAX_POINTS_PER_SERIES, MAX_SERIES_PER_STEP};
use drover_api::{ScalarPoint, SeriesView};
use drover_protocol::{RunId, StepName};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(super) const SCALARS_TREE: &str = "step_scalars";

/// One series as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSeries {
    /// `(iteration, value)` of every `stride`-th point reported, in the order reported.
    pub points: Vec<(i64, f64)>,
    pub stride: u64,
    /// How many points were reported.
    pub count: u64,
    /// The latest point reported.
    pub last: (i64, f64),
}

impl Default for StoredSeries {
    fn default() -> Self {
        Self {
            points: Vec::new(),
            stride: 1,
            count: 0,
            last: (0, 0.0),
        }
    }
}

impl StoredSeries {
    /// Adds one reported point, keeping at most `limit` points (see the module's doc).
    pub fn push(&mut self, iteration: i64, value: f64, limit: usize) {
        if self.count.is_multiple_of(self.stride) {
            self.points.push((iteration, value));
        }
        self.count += 1;
        self.last = (iteration, value);
        if self.points.len() > limit {
            // Kept points are the reported ones numbered 0, stride, 2*stride, ...: keeping the
            // even positions leaves those numbered 0, 2*stride, ..., which the doubled stride
            // continues.
            let mut position = 0;
            self.points.retain(|_| {
                position += 1;
                position % 2 == 1
            });
            self.stride *= 2;
        }
    }
}

/// Why a batch of points was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScalarsError {
    #[error(
        "step {step} already has {MAX_SERIES_PER_STEP} series; series {series:?} of title {title:?} would be one more (report fewer distinct titles and series)"
    )]
    TooManySeries {
        step: StepName,
        title: String,
        series: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn prefix(run: &RunId, step: Option<&StepName>) -> Vec<u8> {
    let mut key = run.as_str().as_bytes().to_vec();
    key.push(0);
    if let Some(step) = step {
        key.extend_from_slice(step.as_str().as_bytes());
        key.push(0);
    }
    key
}

fn series_key(run: &RunId, step: &StepName, title: &str, series: &str) -> Vec<u8> {
    let mut key = prefix(run, Some(step));
    key.extend_from_slice(title.as_bytes());
    key.push(0);
    key.extend_from_slice(series.as_bytes());
    key
}

/// `(step, title, series)` of a key, when it is one of ours.
fn split_key(key: &[u8]) -> Option<(StepName, String, String)> {
    let mut parts = key.split(|b| *b == 0).skip(1);
    let step = StepName::new(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    let title = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let series = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((step, title, series))
}

/// The scalars tree.
#[derive(Clone)]
pub struct ScalarTree {
    tree: Tree,
    /// Held while a batch is read, extended and written, so two batches of a step (from two
    /// connections of its channel) do not lose each other's points.
    appending: std::sync::Arc<std::sync::Mutex<()>>,
    /// `(run, step)` of every batch written, for live views; nobody listening is fine.
    changes: tokio::sync::broadcast::Sender<(RunId, StepName)>,
}

impl ScalarTree {
    pub fn open(db: &sled::Db, recorder: &Arc<Recorder>) -> Result<Self, StoreError> {
        Ok(Self {
            tree: Tree::open(db, SCALARS_TREE, recorder)?,
            appending: Default::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Appends `points` to the series of `step`; titles and series are checked by the caller
    /// (no NUL). Refuses the whole batch when it would give the step too many series.
    pub fn append(
        &self,
        run: &RunId,
        step: &StepName,
        points: &[ScalarPoint],
    ) -> Result<(), ScalarsError> {
        let _appending = self
            .appending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut known = self
            .tree
            .scan_prefix(prefix(run, Some(step)))
            .keys()
            .count();
        let mut batch: Vec<(Vec<u8>, StoredSeries)> = Vec::new();
        for point in points {
            let key = series_key(run, step, &point.title, &point.series);
            let index = match batch.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let stored = match self.tree.get(&key).map_err(StoreError::from)? {
                        Some(bytes) => decode("scalar series", &key_text(&key), &bytes)?,
                        None => {
                            known += 1;
                            if known > MAX_SERIES_PER_STEP {
                                return Err(ScalarsError::TooManySeries {
                                    step: step.clone(),
                                    title: point.title.clone(),
                                    series: point.series.clone(),
                                });
                            }
                            StoredSeries::default()
                        }
                    };
                    batch.push((key, stored));
                    batch.len() - 1
                }
            };
            batch[index]
                .1
                .push(point.iteration, point.value, MAX_POINTS_PER_SERIES);
        }
        let mut writes = Vec::with_capacity(batch.len());
        for (key, series) in batch {
            writes.push((key, encode("scalar series", &series)?));
        }
        self.tree.insert_all(writes).map_err(StoreError::from)?;
        let _ = self.changes.send((run.clone(), step.clone()));
        Ok(())
    }

    /// Tells of every batch written from now on.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<(RunId, StepName)> {
        self.changes.subscribe()
    }

    /// Every series of the run (or of one step), in key order: step, title, series.
    pub fn read(
        &self,
        run: &RunId,
        step: Option<&StepName>,
    ) -> Result<Vec<SeriesView>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix(run, step)) {
            let (key, bytes) = item?;
            let Some((step, title, series)) = split_key(&key) else {
                tracing::warn!("scalars: skipping an unreadable key {:?}", key_text(&key));
                continue;
            };
            let stored: StoredSeries = decode("scalar series", &key_text(&key), &bytes)?;
            out.push(SeriesView {
                step,
                title,
                series,
                points: stored.points,
                stride: stored.stride,
                count: stored.count,
                last: stored.last,
            });
        }
        Ok(out)
    }
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(n: i64, limit: usize) -> StoredSeries {
        let mut series = StoredSeries::default();
        for i in 0..n {
            series.push(i, i as f64 / 2.0, limit);
        }
        series
    }

    #[test]
    fn a_series_within_the_limit_keeps_every_point() {
        let series = pushed(8, 8);
        assert_eq!(series.stride, 1);
        assert_eq!(series.count, 8);
        let iterations: Vec<i64> = series.points.iter().map(|p| p.0).collect();
        assert_eq!(iterations, (0..8).collect::<Vec<_>>());
        assert_eq!(series.last, (7, 3.5));
    }

    #[test]
    fn a_longer_series_keeps_every_other_point_and_doubles_its_stride() {
        let series = pushed(9, 8);
        assert_eq!(series.stride, 2);
        let iterations: Vec<i64> = series.points.iter().map(|p| p.0).collect();
        assert_eq!(iterations, vec![0, 2, 4, 6, 8]);
        // The next points follow the new stride: 9 is skipped, 10 kept.
        let mut series = series;
        series.push(9, 0.0, 8);
        series.push(10, 0.0, 8);
        let iterations: Vec<i64> = series.points.iter().map(|p| p.0).collect();
        assert_eq!(iterations, vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(series.last, (10, 0.0));
        assert_eq!(series.count, 11);
    }

    #[test]
    fn a_long_series_stays_evenly_sampled_within_the_limit() {
        let limit = 100;
        let series = pushed(100_000, limit);
        assert!(series.points.len() <= limit, "{}", series.points.len());
        assert!(series.points.len() > limit / 2, "{}", series.points.len());
        assert_eq!(series.stride, 1024);
        for (k, (iteration, value)) in series.points.iter().enumerate() {
            assert_eq!(*iteration, k as i64 * 1024);
            assert_eq!(*value, *iteration as f64 / 2.0);
        }
        assert_eq!(series.last, (99_999, 99_999.0 / 2.0));
        assert_eq!(series.count, 100_000);
    }

    #[test]
    fn one_step_is_read_by_its_prefix_and_a_step_has_a_bounded_number_of_series() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .temporary(true)
            .path(dir.path())
            .open()
            .unwrap();
        let recorder = Arc::new(Recorder::new(db.open_tree("meta").unwrap()));
        let tree = ScalarTree::open(&db, &recorder).unwrap();
        let run = RunId::generate();
        let a = StepName::new("a").unwrap();
        let ab = StepName::new("ab").unwrap();
        let point = |series: &str, iteration| ScalarPoint {
            title: "loss".into(),
            series: series.into(),
            iteration,
            value: 1.5,
        };
        tree.append(&run, &a, &[point("x", 0), point("x", 1), point("y", 0)])
            .unwrap();
        tree.append(&run, &ab, &[point("x", 0)]).unwrap();
        let of_a = tree.read(&run, Some(&a)).unwrap();
        assert_eq!(of_a.len(), 2);
        assert_eq!(
            (of_a[0].series.as_str(), of_a[0].points.clone()),
            ("x", vec![(0, 1.5), (1, 1.5)])
        );
        assert_eq!(of_a[1].series, "y");
        assert_eq!(tree.read(&run, None).unwrap().len(), 3);
        assert!(tree.read(&RunId::generate(), None).unwrap().is_empty());

        let many: Vec<ScalarPoint> = (0..MAX_SERIES_PER_STEP)
            .map(|i| point(&format!("s{i}"), 0))
            .collect();
        let refused = tree.append(&run, &ab, &many).unwrap_err();
        assert!(
            refused.to_string().contains("already has 1000 series"),
            "{refused}"
        );
        // Nothing of a refused batch is stored.
        assert_eq!(tree.read(&run, Some(&ab)).unwrap().len(), 1);
    }
}
