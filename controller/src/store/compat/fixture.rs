//! A sled directory written by this code is committed under `controller/tests/fixtures/`;
//! each test opens a copy of it (as found, unstamped, stamped newer, damaged) with [`Store`].
//!
//! `cargo test -p drover-controller -- --ignored write_state_fixture` writes the samples into
//! `state-v<SCHEMA_VERSION>`. When the layout version is bumped, keep the older fixture: it is
//! then the input of the migration test.

use super::{Loaded, assert_loaded, dynamic_run_id, samples, tests_dir, write_samples};
use crate::scheduler::StepRecord;
use crate::store::{SCHEMA_VERSION, Store};
use std::path::{Path, PathBuf};

/// The fixture written at the current layout.
fn fixture() -> PathBuf {
    tests_dir(&format!("fixtures/state-v{SCHEMA_VERSION}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A private copy of the fixture, changed by `edit` through sled directly.
fn copy_of_fixture(edit: impl FnOnce(&sled::Db)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let db = sled::open(dir.path()).unwrap();
    edit(&db);
    db.flush().unwrap();
    dir
}

/// Asserts that `loaded` is what the committed fixture holds: the samples as they were when it
/// was written, before the dynamic run joined them (the goldens pin that one's records). Kept
/// as written so that it stays a store of the older code, which predates the attempts' log
/// size and archived log fields.
fn assert_fixture(loaded: &Loaded) {
    let mut expected = samples();
    expected.runs.retain(|r| r.run_id != dynamic_run_id());
    for attempt in expected
        .runs
        .iter_mut()
        .flat_map(|r| r.steps.iter_mut())
        .flat_map(|s| s.attempts.iter_mut())
    {
        attempt.log_size = None;
        attempt.log_archive = None;
    }
    assert_loaded(loaded, expected);
}

fn stamp_of(dir: &Path) -> (Option<u32>, Option<String>) {
    let db = open_when_released(dir);
    let meta = db.open_tree("meta").unwrap();
    let version = meta
        .get("schema_version")
        .unwrap()
        .map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap()));
    let by = meta
        .get("written_by")
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap());
    (version, by)
}

/// Opens the sled database at `dir`, waiting for a store just dropped to let go of its file
/// lock: sled's background flusher holds the database for a moment after the last handle.
fn open_when_released(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", dir.display()),
        }
    }
}

fn unstamp(db: &sled::Db) {
    assert!(db.drop_tree("meta").unwrap(), "the fixture is stamped");
}

#[test]
fn the_committed_fixture_loads_exactly() {
    let dir = copy_of_fixture(|_| {});
    assert_eq!(stamp_of(dir.path()).0, Some(SCHEMA_VERSION));
    let store = Store::open_after_drop(dir.path()).unwrap();
    assert_fixture(&store.load().unwrap());
    // The creation-time index, derived from the headers, is built when the store lacks it.
    let page = store
        .runs_page(&crate::store::RunQuery::default(), None, 10)
        .unwrap()
        .unwrap();
    let listed: Vec<_> = page.runs.iter().map(|r| r.run_id.clone()).collect();
    let mut expected: Vec<_> = super::samples().runs;
    expected.retain(|r| r.run_id != dynamic_run_id());
    expected.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.run_id.clone())));
    let expected: Vec<_> = expected.into_iter().map(|r| r.run_id).collect();
    assert_eq!(listed, expected);
}

#[test]
fn an_unversioned_store_of_the_last_release_is_checked_and_stamped() {
    let dir = copy_of_fixture(unstamp);
    assert_eq!(stamp_of(dir.path()), (None, None));
    {
        let store = Store::open_after_drop(dir.path()).unwrap();
        assert_fixture(&store.load().unwrap());
    }
    let ours = env!("CARGO_PKG_VERSION").to_string();
    assert_eq!(stamp_of(dir.path()), (Some(SCHEMA_VERSION), Some(ours)));
}

#[test]
fn an_empty_store_is_stamped_with_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open_after_drop(dir.path()).unwrap());
    assert_eq!(stamp_of(dir.path()).0, Some(SCHEMA_VERSION));
}

#[test]
fn a_store_of_a_newer_layout_is_refused_with_the_release_to_run() {
    let newer = SCHEMA_VERSION + 1;
    let dir = copy_of_fixture(|db| {
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", newer.to_be_bytes().to_vec())
            .unwrap();
        meta.insert("written_by", "7.0.0").unwrap();
    });
    let err = Store::open_after_drop(dir.path())
        .err()
        .unwrap()
        .to_string();
    let path = dir.path().display().to_string();
    assert!(err.contains(&format!("layout version {newer}")), "{err}");
    assert!(
        err.contains(&format!("reads layout versions up to {SCHEMA_VERSION}")),
        "{err}"
    );
    assert!(err.contains("run drover 7.0.0 or newer"), "{err}");
    assert!(err.contains(&format!("move {path} aside")), "{err}");
    assert_eq!(stamp_of(dir.path()).0, Some(newer), "left as found");
}

#[test]
fn an_unversioned_store_with_a_record_that_does_not_decode_is_refused_by_name() {
    let run = samples().runs[0].run_id.clone();
    let dir = copy_of_fixture(|db| {
        unstamp(db);
        let mut key = run.as_str().as_bytes().to_vec();
        key.push(b'/');
        key.extend_from_slice(&4u32.to_be_bytes());
        let steps = db.open_tree("run_steps").unwrap();
        let mut step: serde_json::Value =
            rmp_serde::from_slice(&steps.get(&key).unwrap().unwrap()).unwrap();
        step["status"] = "hibernating".into();
        steps
            .insert(key, rmp_serde::to_vec_named(&step).unwrap())
            .unwrap();
    });
    let err = Store::open_after_drop(dir.path())
        .err()
        .unwrap()
        .to_string();
    let path = dir.path().display().to_string();
    assert!(
        err.contains(&format!("step record \"{run}/4\" does not decode")),
        "{err}"
    );
    assert!(err.contains("hibernating"), "{err}");
    assert!(err.contains(&format!("move {path} aside")), "{err}");
    assert_eq!(stamp_of(dir.path()).0, None, "not stamped");
}

#[tokio::test]
async fn runs_of_the_layout_before_version_1_are_split_into_header_pipeline_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    let expected = samples();
    {
        let db = sled::open(dir.path()).unwrap();
        let runs = db.open_tree("runs").unwrap();
        for run in &expected.runs {
            let bytes = rmp_serde::to_vec_named(run).unwrap();
            runs.insert(run.run_id.as_str(), bytes).unwrap();
        }
        let cache = db.open_tree("cache").unwrap();
        for (key, outputs) in &expected.cache {
            cache
                .insert(key.as_str(), rmp_serde::to_vec_named(outputs).unwrap())
                .unwrap();
        }
        let agents = db.open_tree("agents").unwrap();
        for agent in &expected.agents {
            let bytes = rmp_serde::to_vec_named(agent).unwrap();
            agents.insert(agent.info.id.as_str(), bytes).unwrap();
        }
        db.flush().unwrap();
    }
    {
        let store = Store::open_after_drop(dir.path()).unwrap();
        assert_loaded(&store.load().unwrap(), samples());
        assert!(
            !store.db.tree_names().iter().any(|n| n.as_ref() == b"runs"),
            "the old tree is gone once its runs are split"
        );
    }
    assert_eq!(stamp_of(dir.path()).0, Some(SCHEMA_VERSION));
}

#[test]
fn records_ignore_unknown_fields_and_default_the_ones_older_data_lacks() {
    let train = samples().runs[0].steps[1].clone();
    assert_eq!(
        train.attempts.len(),
        2,
        "the sample step with most fields set"
    );
    let mut value: serde_json::Value =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&train).unwrap()).unwrap();
    let step = value.as_object_mut().unwrap();
    step.insert("added_later".into(), serde_json::json!({"nested": [1, 2]}));
    for field in ["attempts", "failures", "outputs", "cache_key", "cache_hit"] {
        step.remove(field).unwrap();
    }
    for field in [
        "agent",
        "lease_until",
        "retry_at",
        "abort_requested",
        "message",
    ] {
        step.remove(field).unwrap();
    }
    step.remove("started_at").unwrap();
    step.remove("ended_at").unwrap();
    let bytes = rmp_serde::to_vec_named(&value).unwrap();
    let read: StepRecord = rmp_serde::from_slice(&bytes).unwrap();

    let mut expected = StepRecord::new(&samples().runs[0].pipeline.as_ref().unwrap().steps[1]);
    expected.status = train.status;
    expected.attempt = train.attempt;
    assert_eq!(read, expected);
}

/// Rewrites the committed fixture from the samples; run on purpose only (see the module doc).
#[tokio::test]
#[ignore = "rewrites controller/tests/fixtures; run on purpose"]
async fn write_state_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    {
        let store = Store::open(&dir).unwrap();
        write_samples(&store).await;
    }
    // Git keeps no empty directories; the fixture must open without them.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let _ = std::fs::remove_dir(&path);
        }
    }
    let copy = copy_of_fixture(|_| {});
    assert_loaded(
        &Store::open(copy.path()).unwrap().load().unwrap(),
        samples(),
    );
}
