//! Archiving against the real directory store (the bucket store shares its contract, tested in
//! `drover-storage`): a log is stored only once complete, read back byte for byte when its file
//! is gone or short, and a blob that does not match its digest is refused.

use super::*;
use drover_protocol::message::LogChunk;
use drover_storage::LocalBlobs;
use std::path::PathBuf;
use std::time::Duration;

struct Setup {
    _dir: tempfile::TempDir,
    logs: LogStore,
    blobs: LocalBlobs,
    archive: LogArchive,
    ended: EndedLog,
}

fn setup(patience: Duration, reported: Option<u64>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs"))
        .unwrap()
        .with_tail_patience(patience);
    let blobs = LocalBlobs::open(&dir.path().join("blobs")).unwrap();
    let archive = LogArchive::new(logs.clone(), Arc::new(blobs.clone()));
    let ended = EndedLog {
        run_id: RunId::generate(),
        step: StepName::new("train").unwrap(),
        attempt: AttemptNo(2),
        size: reported,
    };
    Setup {
        _dir: dir,
        logs,
        blobs,
        archive,
        ended,
    }
}

impl Setup {
    async fn append(&self, offset: u64, data: &[u8]) {
        let chunk = LogChunk {
            run_id: self.ended.run_id.clone(),
            step: self.ended.step.clone(),
            attempt: self.ended.attempt,
            offset,
            data: data.to_vec(),
        };
        self.logs.append(&chunk).await.unwrap();
    }

    fn path(&self) -> PathBuf {
        let e = &self.ended;
        self.logs.path_of(&e.run_id, &e.step, e.attempt)
    }

    async fn restore(&self, archived: &ArchivedLog) -> Result<bool, ArchiveError> {
        let e = &self.ended;
        self.archive
            .restore(&e.run_id, &e.step, e.attempt, archived)
            .await
    }
}

/// Raw bytes, invalid UTF-8 and `\r` included, over several of the store's blocks.
fn log_text() -> Vec<u8> {
    let mut text = Vec::new();
    for i in 0..200_000 {
        text.extend_from_slice(format!("line {i}\r").as_bytes());
        text.extend_from_slice(b"\xff\n");
    }
    text
}

#[tokio::test]
async fn a_log_is_archived_only_once_complete_and_read_back_when_its_file_is_gone() {
    let text = log_text();
    let s = setup(Duration::from_secs(600), Some(text.len() as u64));
    let half = text.len() / 2;
    s.append(0, &text[..half]).await;

    // Its last chunks are still on their way: the archive waits for them.
    let early = tokio::time::timeout(Duration::from_millis(300), s.archive.archive(&s.ended)).await;
    assert!(early.is_err(), "archived an incomplete log: {early:?}");
    let archiving = tokio::spawn({
        let (archive, ended) = (s.archive.clone(), s.ended.clone());
        async move { archive.archive(&ended).await }
    });
    s.append(half as u64, &text[half..]).await;
    let archived = archiving.await.unwrap().unwrap().unwrap();
    assert_eq!(archived.digest, Digest::of_bytes(&text));
    assert_eq!(archived.size, text.len() as u64);
    assert_eq!(
        std::fs::read(s.blobs.path_of(&archived.digest)).unwrap(),
        text
    );

    // The data dir is lost: the log comes back from the store, once.
    std::fs::remove_dir_all(s.path().parent().unwrap().parent().unwrap()).unwrap();
    assert!(s.restore(&archived).await.unwrap());
    assert_eq!(std::fs::read(s.path()).unwrap(), text);
    assert!(!s.restore(&archived).await.unwrap());

    // A chunk delivered late began the file again: it is replaced by the whole log.
    std::fs::write(s.path(), &text[half..half + 10]).unwrap();
    assert!(s.restore(&archived).await.unwrap());
    assert_eq!(std::fs::read(s.path()).unwrap(), text);
}

#[tokio::test]
async fn a_log_missing_its_tail_after_the_patience_is_archived_as_stored() {
    let stored: &[u8] = b"the first bytes of a hundred reported\n";
    let s = setup(Duration::from_millis(200), Some(100));
    s.append(0, stored).await;
    let archived = s.archive.archive(&s.ended).await.unwrap().unwrap();
    assert_eq!(archived.size, stored.len() as u64);
    assert_eq!(archived.digest, Digest::of_bytes(stored));
}

#[tokio::test]
async fn an_attempt_that_logged_nothing_has_nothing_archived() {
    let s = setup(Duration::from_secs(600), Some(0));
    assert_eq!(s.archive.archive(&s.ended).await.unwrap(), None);
    // An agent that reported no size had its whole log stored before it reported.
    let s = setup(Duration::from_secs(600), None);
    assert_eq!(s.archive.archive(&s.ended).await.unwrap(), None);
    s.append(0, b"done\n").await;
    let archived = s.archive.archive(&s.ended).await.unwrap().unwrap();
    assert_eq!(archived.digest, Digest::of_bytes(b"done\n"));
}

#[tokio::test]
async fn a_stored_log_that_does_not_match_its_digest_is_not_restored() {
    let s = setup(Duration::from_secs(600), Some(5));
    s.append(0, b"done\n").await;
    let archived = s.archive.archive(&s.ended).await.unwrap().unwrap();
    std::fs::remove_file(s.path()).unwrap();
    std::fs::write(s.blobs.path_of(&archived.digest), b"DONE\n").unwrap();
    let refused = s.restore(&archived).await.unwrap_err();
    assert!(
        matches!(&refused, ArchiveError::Corrupt { size: 5, .. }),
        "{refused}"
    );
    let dir = s.path().parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "a refused log left a file behind"
    );

    std::fs::remove_file(s.blobs.path_of(&archived.digest)).unwrap();
    let missing = s.restore(&archived).await.unwrap_err();
    assert!(matches!(missing, ArchiveError::Missing(_)), "{missing}");
}

/// The cost of archiving, off the owner task: `cargo nextest run -p drover-controller
/// --run-ignored only --no-capture archive_cost` (moto_server on `PATH`). Times `archive` of
/// 200 complete 4 KiB logs, one after the other, into a bucket and into the directory store.
#[tokio::test]
#[ignore = "a measurement; run on purpose"]
async fn archive_cost() {
    use drover_storage::testing::{CREDENTIALS, Moto};
    use drover_storage::{ObjectBlobs, S3Location};
    let moto = Moto::start();
    moto.create_bucket("logs");
    let location = "s3://logs/ctl"
        .parse::<S3Location>()
        .unwrap()
        .with_endpoint(Some(moto.endpoint()))
        .unwrap();
    let bucket: Arc<dyn BlobStore> =
        Arc::new(ObjectBlobs::connect_with(&location, &CREDENTIALS).unwrap());
    for (name, store) in [("s3 (moto)", Some(bucket)), ("local", None)] {
        let s = setup(Duration::from_secs(600), None);
        let archive = match store {
            Some(store) => LogArchive::new(s.logs.clone(), store),
            None => s.archive.clone(),
        };
        let mut took = Vec::new();
        for i in 0..200u32 {
            let ended = EndedLog {
                attempt: AttemptNo(i + 1),
                ..s.ended.clone()
            };
            let text: Vec<u8> =
                format!("{i:>8} log line of 64 bytes, padded to its length ...........\n")
                    .repeat(64)
                    .into_bytes();
            s.logs
                .append(&LogChunk {
                    run_id: ended.run_id.clone(),
                    step: ended.step.clone(),
                    attempt: ended.attempt,
                    offset: 0,
                    data: text,
                })
                .await
                .unwrap();
            let start = std::time::Instant::now();
            let archived = archive.archive(&ended).await.unwrap().unwrap();
            took.push(start.elapsed());
            assert_eq!(archived.size, 4096);
        }
        took.sort();
        let total: Duration = took.iter().sum();
        eprintln!(
            "archive of a 4 KiB log into {name}: p50 {:?}, p99 {:?}, mean {:?}",
            took[took.len() / 2],
            took[took.len() * 99 / 100],
            total / took.len() as u32
        );
    }
}
