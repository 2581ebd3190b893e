//! The journal's tests, most against the shared broker: the record format, seeding an empty
//! journal from an existing store, a deposed controller's batches ignored, batches bounded in
//! size, an empty state dir rebuilt from the journal; and the fixture (`broker`, `fill`,
//! `dump`) the snapshot tests share.

use super::*;
use crate::scheduler::CachedOutputs;
use drover_protocol::Names;
use drover_test_support::namespace::{AMQP_URL, fresh_namespace};

/// A broker connection in a namespace of its own, named from `prefix`.
pub(in crate::store) async fn broker(prefix: &str) -> Broker {
    Broker::connect_with_retry(
        AMQP_URL,
        Names::new(&fresh_namespace(prefix)).unwrap(),
        "journal test",
        Duration::from_secs(10),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)")
}

/// The encoding is pinned (named fields, bytes as msgpack bin), and a reader takes a record
/// with fields and kinds it does not know.
#[test]
fn records_are_named_field_msgpack_and_unknown_fields_are_ignored() {
    let mut record = Record::new(BATCH);
    record.seq = 7;
    record.epoch = 2;
    record.written_by = "x".into();
    record.ops = vec![Op {
        tree: "cache".into(),
        key: b"k".to_vec(),
        value: None,
    }];
    let bytes = encode("journal batch", &record).unwrap();
    assert!(
        bytes.windows(3).any(|w| w == [0xc4, 1, b'k']),
        "the key is msgpack bin 8"
    );
    let value: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        value.to_string(),
        r#"{"v": 1, "kind": "batch", "seq": 7, "schema": 1, "ops": [{"tree": "cache", "key": [107], "value": nil}], "nonce": "", "written_by": "x", "epoch": 2}"#
    );
    let later = rmpv::Value::Map(vec![
        ("v".into(), 1.into()),
        ("kind".into(), "later".into()),
        ("term".into(), 3.into()),
    ]);
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &later).unwrap();
    let read: Record = rmp_serde::from_slice(&buf).unwrap();
    assert_eq!(
        (read.kind.as_str(), read.seq, read.ops.len()),
        ("later", 0, 0)
    );
}

/// A store made before the journal was turned on fills an empty journal, which a new data
/// dir then gets; another such store is refused on that journal, since it has batches.
#[tokio::test]
async fn an_existing_store_seeds_an_empty_journal_and_only_an_empty_one() {
    let broker = broker("tjseed").await;
    let (old, new, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let kept = {
        let store = Store::open(old.path()).unwrap();
        for run in &crate::store::compat::samples().runs {
            store.put_run(run).unwrap();
        }
        store.flush().await.unwrap();
        let replayed = attach(&store, &broker, 0).await.unwrap();
        assert_eq!((replayed.batches, replayed.seq), (0, 0));
        assert!(replayed.seeded > 0, "{replayed:?}");
        dump(&store.db)
    };
    let store = Store::open(new.path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    assert_eq!(dump(&store.db), kept);

    let store = Store::open(other.path()).unwrap();
    store.put_cache("k", &CachedOutputs::new()).unwrap();
    let refused = attach(&store, &broker, 0).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::JournalConflict { .. }),
        "{refused}"
    );
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// Each attach leads one epoch above the last, and a controller deposed by a later one
/// (its journal connection outlived its lock) cannot interleave: every replay ignores the
/// batches it appends after its successor's `leader` record, though their `seq` is taken.
#[tokio::test]
async fn batches_of_a_deposed_controller_are_ignored() {
    let broker = broker("tjepoch").await;
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let first = Store::open(dirs[0].path()).unwrap();
    assert_eq!(attach(&first, &broker, 0).await.unwrap().epoch, 1);
    first.put_cache("before", &CachedOutputs::new()).unwrap();
    first.flush().await.unwrap();

    let second = Store::open(dirs[1].path()).unwrap();
    let replayed = attach(&second, &broker, 0).await.unwrap();
    assert_eq!((replayed.epoch, replayed.batches), (2, 1));
    first.put_cache("deposed", &CachedOutputs::new()).unwrap();
    first.flush().await.unwrap();
    second.put_cache("after", &CachedOutputs::new()).unwrap();
    second.flush().await.unwrap();

    let third = Store::open(dirs[2].path()).unwrap();
    let replayed = attach(&third, &broker, 0).await.unwrap();
    assert_eq!(
        (replayed.epoch, replayed.batches, replayed.seq),
        (3, 2, 2),
        "the deposed batch is neither applied nor counted"
    );
    let keys: Vec<Vec<u8>> = third.cache.iter().map(|i| i.unwrap().0.to_vec()).collect();
    assert_eq!(keys, [b"after".to_vec(), b"before".to_vec()]);
    assert_eq!(dump(&third.db), dump(&second.db));
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// A flush's writes are split into batches of at most [`BATCH_BYTES`], a larger write alone.
#[test]
fn batches_are_bounded_in_size() {
    let op = |n: usize| Op {
        tree: "t".into(),
        key: vec![b'k'],
        value: Some(vec![0; n]),
    };
    let half = BATCH_BYTES / 2;
    assert_eq!(batch_len(&[op(1), op(1), op(1)]), 3);
    assert_eq!(batch_len(&[op(half), op(half), op(1)]), 1);
    assert_eq!(batch_len(&[op(half - 2), op(half - 2), op(1)]), 3);
    assert_eq!(batch_len(&[op(3 * half), op(1)]), 1);
}

/// One flush of more than [`BATCH_BYTES`] goes as several batches, all replayed.
#[tokio::test]
async fn a_large_flush_goes_in_several_batches() {
    let broker = broker("tjlarge").await;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let written = {
        let store = Store::open(first.path()).unwrap();
        attach(&store, &broker, 0).await.unwrap();
        // Three of these and their keys fit in a batch, four do not.
        for key in ["a", "b", "c", "d", "e"] {
            store.cache.insert(key, vec![7; BATCH_BYTES / 4]).unwrap();
        }
        store.flush().await.unwrap();
        dump(&store.db)
    };
    let store = Store::open(second.path()).unwrap();
    let replayed = attach(&store, &broker, 0).await.unwrap();
    assert_eq!((replayed.batches, replayed.seq), (2, 2));
    assert_eq!(dump(&store.db), written);
    broker.delete_journal().await.unwrap();
    broker.close().await;
}

/// A tree's name and its records, in key order.
pub(in crate::store) type TreeDump = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Runs, agents and cache records, flushed in two batches with a removal between.
pub(in crate::store) async fn fill(store: &Store) {
    let samples = crate::store::compat::samples();
    for run in &samples.runs {
        store.put_run(run).unwrap();
    }
    for agent in &samples.agents {
        store.put_agent(agent).unwrap();
    }
    store.put_cache("k1", &CachedOutputs::new()).unwrap();
    store.flush().await.unwrap();
    store.cache.remove("k1").unwrap();
    store.put_cache("k2", &CachedOutputs::new()).unwrap();
    store.flush().await.unwrap();
}

/// Every tree's records, but `meta`, for comparing two stores.
pub(in crate::store) fn dump(db: &sled::Db) -> Vec<TreeDump> {
    let mut names = data_trees(db);
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name).unwrap();
            let records = tree
                .iter()
                .map(|i| i.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect::<Vec<_>>();
            (name, records)
        })
        .filter(|(_, records)| !records.is_empty())
        .collect()
}

/// Writes to several trees, flushed in two batches with a removal between, then checks
/// that a store on a new, empty directory gets exactly the same records from the journal,
/// and that a store reopened on its directory reads on without applying them again.
#[tokio::test]
async fn an_empty_state_dir_is_rebuilt_from_the_journal() {
    let broker = broker("tjournal").await;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let written = {
        let store = Store::open(first.path()).unwrap();
        let replayed = attach(&store, &broker, 0).await.unwrap();
        assert_eq!(replayed.seq, 0);
        fill(&store).await;
        dump(&store.db)
    };
    let trees: Vec<&str> = written.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        trees,
        [
            "agents",
            "cache",
            "run_headers",
            "run_index",
            "run_pipelines",
            "run_steps"
        ]
    );

    let store = Store::open(second.path()).unwrap();
    let replayed = attach(&store, &broker, 0).await.unwrap();
    assert_eq!((replayed.batches, replayed.seq), (2, 2));
    assert_eq!(dump(&store.db), written);
    assert!(store.cache.get("k1").unwrap().is_none());
    store.put_cache("k3", &CachedOutputs::new()).unwrap();
    store.flush().await.unwrap();
    let expected = dump(&store.db);
    drop(store);

    let store = Store::open_after_drop(second.path()).unwrap();
    let replayed = attach(&store, &broker, 0).await.unwrap();
    assert_eq!((replayed.batches, replayed.seq), (0, 3));
    assert_eq!(dump(&store.db), expected);
    drop(store);

    let store = Store::open_after_drop(first.path()).unwrap();
    let replayed = attach(&store, &broker, 0).await.unwrap();
    assert_eq!(
        (replayed.batches, replayed.seq),
        (1, 3),
        "k3 reaches the first dir"
    );
    assert_eq!(dump(&store.db), expected);
    // A write never flushed (the controller died before it published anything that
    // follows from it) leaves the dirty mark: the next start rebuilds from the journal.
    store.put_cache("k4", &CachedOutputs::new()).unwrap();
    drop(store);
    let store = Store::open_after_drop(first.path()).unwrap();
    let replayed = attach(&store, &broker, 0).await.unwrap();
    assert_eq!((replayed.batches, replayed.seq), (3, 3));
    assert_eq!(dump(&store.db), expected);

    broker.delete_journal().await.unwrap();
    broker.close().await;
}
