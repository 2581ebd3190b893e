//! Snapshots against the shared broker: a replay from one gives the store it was taken of
//! (writes going on meanwhile) and reads only the journal after it; an incomplete one is passed
//! over for the one before; a journal that retention cut before a replay's start is refused.

use super::*;
use crate::scheduler::CachedOutputs;
use crate::store::journal::attach;
use crate::store::journal::tests::{broker, dump, fill};
use drover_amqp::StreamBounds;

async fn snapshot(store: &Store, broker: &Broker) -> Taken {
    take(store, store.journal.get().unwrap(), broker)
        .await
        .unwrap()
}

/// A snapshot, then two more batches: a store on an empty dir gets the same records, from the
/// snapshot and the journal's records after its mark alone (the mark, the end of the snapshot,
/// the two batches, its own start and leader records), applying only those two batches. That
/// store then leads and takes a snapshot while another task writes and flushes (the trees are
/// read while they change): a third store gets its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_a_snapshot_gives_the_same_store_and_reads_only_the_tail() {
    let broker = broker("tsnap").await;
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let store = Store::open(dirs[0].path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    fill(&store).await;
    let taken = snapshot(&store, &broker).await;
    assert_eq!(taken.seq, 2);
    for key in ["k3", "k4"] {
        store.put_cache(key, &CachedOutputs::new()).unwrap();
        store.flush().await.unwrap();
    }
    let second = Store::open(dirs[1].path()).unwrap();
    let replayed = attach(&second, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, Some(2));
    assert_eq!(
        (
            replayed.batches,
            replayed.seq,
            replayed.records,
            replayed.epoch
        ),
        (2, 4, 6, 2)
    );
    assert_eq!(dump(&second.db), dump(&store.db));
    drop(store);

    let writer = {
        let store = second.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .put_cache(&format!("during{i}"), &CachedOutputs::new())
                    .unwrap();
                if i % 3 == 0 {
                    store.cache.remove(format!("during{}", i / 2)).unwrap();
                }
                store.flush().await.unwrap();
            }
        })
    };
    let taken = snapshot(&second, &broker).await;
    writer.await.unwrap();
    second.put_cache("k5", &CachedOutputs::new()).unwrap();
    second.flush().await.unwrap();
    let third = Store::open(dirs[2].path()).unwrap();
    let replayed = attach(&third, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, Some(taken.seq));
    assert_eq!(replayed.batches, replayed.seq - taken.seq);
    assert_eq!(dump(&third.db), dump(&second.db));
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// Of two snapshots, the later missing its last chunk (its writer died while publishing), the
/// replay loads the earlier and reads the journal from its mark.
#[tokio::test]
async fn an_incomplete_snapshot_is_ignored_for_the_one_before() {
    let broker = broker("tsnapcut").await;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(first.path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    fill(&store).await;
    let taken = snapshot(&store, &broker).await;
    store.put_cache("k3", &CachedOutputs::new()).unwrap();
    store.flush().await.unwrap();
    let written = dump(&store.db);
    let mut cut = ChunkOut::new(CHUNK, "cut");
    cut.count = 2;
    cut.seq = 3;
    cut.offset = taken.offset + 3;
    store
        .journal
        .get()
        .unwrap()
        .publisher()
        .publish_raw(&Target::Snapshot, &encode("snapshot chunk", &cut).unwrap())
        .await
        .unwrap();

    let rebuilt = Store::open(second.path()).unwrap();
    let replayed = attach(&rebuilt, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, Some(taken.seq));
    assert_eq!((replayed.batches, replayed.seq), (1, 3));
    assert_eq!(dump(&rebuilt.db), written);
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// Bounds small enough that retention drops segments after a few batches.
const TINY: StreamBounds = StreamBounds {
    journal: 4000,
    snapshot: 1 << 20,
    segment: 1000,
};

/// A controller another one took over from takes no snapshot: its check of the journal finds
/// the later leader record and refuses (`Deposed`), before any chunk is published, so a new
/// store replays the journal alone and gets the successor's state.
#[tokio::test]
async fn a_deposed_controller_takes_no_snapshot() {
    let broker = broker("tsnapdep").await;
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let first = Store::open(dirs[0].path()).unwrap();
    attach(&first, &broker, 0).await.unwrap();
    fill(&first).await;
    let second = Store::open(dirs[1].path()).unwrap();
    assert_eq!(attach(&second, &broker, 0).await.unwrap().epoch, 2);
    second.put_cache("k3", &CachedOutputs::new()).unwrap();
    second.flush().await.unwrap();

    match take(&first, first.journal.get().unwrap(), &broker).await {
        Err(StoreError::Deposed {
            ours: 1, later: 2, ..
        }) => {}
        other => panic!("expected Deposed {{ ours: 1, later: 2 }}, got {other:?}"),
    }
    let third = Store::open(dirs[2].path()).unwrap();
    let replayed = attach(&third, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, None);
    assert_eq!(dump(&third.db), dump(&second.db));
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// Writes `n` batches of about 1 kB each.
async fn grow(store: &Store, n: usize) {
    for i in 0..n {
        store.cache.insert(format!("g{i}"), vec![7; 1000]).unwrap();
        store.flush().await.unwrap();
    }
}

/// Retention dropped the journal's first records and no snapshot covers them: a replay on an
/// empty dir is refused, naming the offsets. A store of the same namespace declared with other
/// bounds (as before they existed) keeps the stream's arguments and goes on.
#[tokio::test]
async fn a_journal_cut_by_retention_without_a_snapshot_is_refused() {
    let broker = broker("tsnapgap").await.with_stream_bounds(TINY);
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(first.path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    grow(&store, 30).await;

    let unbounded = broker.clone().with_stream_bounds(StreamBounds::default());
    let declared = unbounded.declare_journal().await.unwrap();
    assert!(
        declared
            .iter()
            .all(|d| matches!(d, drover_amqp::Declared::KeptExisting { .. })),
        "{declared:?}"
    );
    let rebuilt = Store::open(second.path()).unwrap();
    let refused = attach(&rebuilt, &unbounded, 0).await.unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::JournalGap { expected: 0, found, .. } if found > 0
        ),
        "{refused}"
    );
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// A journal cut by retention with a snapshot taken after the cut: a replay on an empty dir
/// starts from the snapshot and gets the whole store; a store whose own offset was cut away
/// rebuilds from it too.
#[tokio::test]
async fn a_snapshot_after_the_cut_rebuilds_the_store() {
    let broker = broker("tsnapcover").await.with_stream_bounds(TINY);
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let behind = Store::open(dirs[0].path()).unwrap();
    attach(&behind, &broker, 0).await.unwrap();
    grow(&behind, 1).await;
    drop(behind);
    let store = Store::open(dirs[1].path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    grow(&store, 30).await;
    let taken = snapshot(&store, &broker).await;
    let written = dump(&store.db);

    let rebuilt = Store::open(dirs[2].path()).unwrap();
    let replayed = attach(&rebuilt, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, Some(taken.seq));
    assert_eq!(dump(&rebuilt.db), written);

    let behind = Store::open_after_drop(dirs[0].path()).unwrap();
    let replayed = attach(&behind, &broker, 0).await.unwrap();
    assert_eq!(replayed.snapshot, Some(taken.seq));
    assert_eq!(dump(&behind.db), written);
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// The replay a snapshot saves: attaching an empty dir to a journal of `RUNS` submitted runs
/// (one flush each), without a snapshot and then with one taken after the last run. A
/// measurement, not a check:
/// `cargo nextest run -p drover-controller --run-ignored only --no-capture replay_cost`.
#[tokio::test]
#[ignore = "a measurement; run it by name"]
async fn replay_cost() {
    const RUNS: usize = 2000;
    let broker = broker("tsnapcost").await;
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let store = Store::open(dirs[0].path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    let run = crate::store::compat::samples().runs.remove(0);
    for _ in 0..RUNS {
        let mut fresh = run.clone();
        fresh.run_id = drover_protocol::RunId::generate();
        store.put_run(&fresh).unwrap();
        store.flush().await.unwrap();
    }
    let time = |dir: &tempfile::TempDir| {
        let (dir, broker) = (dir.path().to_path_buf(), broker.clone());
        async move {
            let store = Store::open(&dir).unwrap();
            let t = std::time::Instant::now();
            let replayed = attach(&store, &broker, 0).await.unwrap();
            (t.elapsed(), replayed)
        }
    };
    let (full, replayed) = time(&dirs[1]).await;
    eprintln!(
        "{RUNS} runs, no snapshot: {full:.2?}, {} journal records",
        replayed.records
    );
    // A third store leads now (the first was deposed); it takes the snapshot.
    drop(store);
    let store = Store::open(dirs[2].path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    let taken = snapshot(&store, &broker).await;
    let fresh = tempfile::tempdir().unwrap();
    let (from_snapshot, replayed) = time(&fresh).await;
    eprintln!(
        "{RUNS} runs, from a snapshot ({} records, {} bytes): {from_snapshot:.2?}, {} journal \
         records; {:.2}x the time without",
        taken.records,
        taken.bytes,
        replayed.records,
        from_snapshot.as_secs_f64() / full.as_secs_f64()
    );
    broker.delete_journal().await.unwrap();
    broker.close().await;
}
