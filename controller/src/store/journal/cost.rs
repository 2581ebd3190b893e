//! The cost of the journal: `flush()` with and without it, after the writes of one submitted
//! run (header, pipeline, steps, index) or of one cache record. A measurement, not a check:
//! `cargo nextest run -p drover-controller --run-ignored only --no-capture flush_cost`.

use super::*;
use crate::scheduler::CachedOutputs;
use drover_protocol::{Names, RunId};
use drover_test_support::namespace::{AMQP_URL, fresh_namespace};
use std::time::Instant;

const FLUSHES: usize = 300;

fn summary(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{what}: mean {mean:.2?}, p50 {:.2?}, p99 {:.2?} over {} flushes",
        at(0.5),
        at(0.99),
        took.len()
    );
}

async fn measure(store: &Store, label: &str) {
    let run = crate::store::compat::samples().runs.remove(0);
    let (mut runs, mut caches) = (Vec::new(), Vec::new());
    for i in 0..FLUSHES {
        let mut fresh = run.clone();
        fresh.run_id = RunId::generate();
        store.put_run(&fresh).unwrap();
        let t = Instant::now();
        store.flush().await.unwrap();
        runs.push(t.elapsed());
        store
            .put_cache(&format!("k{i}"), &CachedOutputs::new())
            .unwrap();
        let t = Instant::now();
        store.flush().await.unwrap();
        caches.push(t.elapsed());
    }
    summary(&format!("{label}, one run written"), runs);
    summary(&format!("{label}, one cache record written"), caches);
}

#[tokio::test]
#[ignore = "a measurement; run it by name"]
async fn flush_cost() {
    let run = crate::store::compat::samples().runs.remove(0);
    let mut ops = 0;
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.recorder.start();
        store.put_run(&run).unwrap();
        let batch = store.recorder.take();
        ops += batch.len();
        let mut record = Record::new(BATCH);
        record.ops = batch;
        eprintln!(
            "one run's batch: {ops} records, {} bytes",
            encode("journal batch", &record).unwrap().len()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    measure(&store, "sled only").await;

    let ns = fresh_namespace("tjcost");
    let broker = Broker::connect(AMQP_URL, Names::new(&ns).unwrap(), "journal cost")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    attach(&store, &broker, 0).await.unwrap();
    measure(&store, "with the journal").await;
    broker.delete_journal().await.unwrap();
    broker.close().await;
}
