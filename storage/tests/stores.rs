//! The same cases against every store: the directory store, the object store in memory, and the
//! object store on a real S3 API (a `moto_server` this test starts on a loopback port).

#![allow(clippy::unwrap_used)] // tests unwrap freely

use bytes::Bytes;
use drover_protocol::Digest;
use drover_storage::testing::{CREDENTIALS, Moto};
use drover_storage::{BlobError, BlobStore, LocalBlobs, ObjectBlobs, PART_SIZE, S3Location};
use futures_util::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// A store under test and how to see what an upload left behind.
struct Subject {
    store: Box<dyn BlobStore>,
    leftovers: Box<dyn Fn() -> usize>,
    _keep: Box<dyn std::any::Any>,
}

fn local() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    Subject {
        store: Box::new(LocalBlobs::open(&root).unwrap()),
        leftovers: Box::new(move || std::fs::read_dir(root.join("tmp")).unwrap().count()),
        _keep: Box::new(dir),
    }
}

fn memory() -> Subject {
    let location: S3Location = "s3://memory/p".parse().unwrap();
    let store = Arc::new(object_store::memory::InMemory::new());
    Subject {
        store: Box::new(ObjectBlobs::with_store(store, location)),
        leftovers: Box::new(|| 0),
        _keep: Box::new(()),
    }
}

fn s3() -> Subject {
    let moto = Arc::new(Moto::start());
    moto.create_bucket("drover-test");
    let location = "s3://drover-test/team/a"
        .parse::<S3Location>()
        .unwrap()
        .with_endpoint(Some(moto.endpoint()))
        .unwrap();
    let blobs = ObjectBlobs::connect_with(&location, &CREDENTIALS).unwrap();
    let seen = moto.clone();
    Subject {
        store: Box::new(blobs),
        leftovers: Box::new(move || seen.pending_uploads("drover-test")),
        _keep: Box::new(moto),
    }
}

fn body(parts: Vec<Bytes>) -> drover_storage::Body<'static> {
    futures_util::stream::iter(parts.into_iter().map(Ok)).boxed()
}

/// `len` bytes that differ from part to part (so a misplaced part changes the digest), in
/// chunks of 64 KiB as a file or socket would deliver them.
fn pattern(len: usize) -> Vec<Bytes> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    data.chunks(64 * 1024).map(Bytes::copy_from_slice).collect()
}

fn digest_of(parts: &[Bytes]) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    parts.iter().for_each(|p| h.update(p));
    Digest::from_sha256(h)
}

async fn read_back(store: &dyn BlobStore, digest: &Digest) -> (u64, Vec<u8>) {
    let blob = store.open(digest).await.unwrap().expect("stored");
    let bytes: Vec<Bytes> = blob.bytes.try_collect().await.unwrap();
    (blob.size, bytes.concat())
}

async fn stores_a_streamed_upload_under_its_digest(s: Subject) {
    let store = s.store.as_ref();
    let digest = Digest::of_bytes(b"hello, blob");
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(store.open(&digest).await.unwrap().is_none());
    let parts = vec![
        Bytes::from_static(b"hello"),
        Bytes::from_static(b", "),
        Bytes::from_static(b"blob"),
    ];
    assert_eq!(store.put(&digest, body(parts.clone())).await.unwrap(), 11);
    assert_eq!(store.stat(&digest).await.unwrap(), Some(11));
    assert_eq!(
        read_back(store, &digest).await,
        (11, b"hello, blob".to_vec())
    );
    // Storing the same content again is fine.
    assert_eq!(store.put(&digest, body(parts)).await.unwrap(), 11);
    assert_eq!((s.leftovers)(), 0);
}

async fn rejects_content_that_does_not_match_its_digest(s: Subject, len: usize) {
    let store = s.store.as_ref();
    let claimed = Digest::of_bytes(b"what was promised");
    let parts = pattern(len);
    let err = store.put(&claimed, body(parts.clone())).await.unwrap_err();
    let BlobError::DigestMismatch { expected, actual } = &err else {
        panic!("not a digest mismatch: {err}");
    };
    assert_eq!((expected, actual), (&claimed, &digest_of(&parts)));
    let text = err.to_string();
    assert!(text.contains(claimed.as_str()), "{text}");
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    assert_eq!(
        (s.leftovers)(),
        0,
        "a rejected upload left something behind"
    );
}

async fn an_interrupted_upload_leaves_nothing(s: Subject, len: usize) {
    let store = s.store.as_ref();
    let mut parts: Vec<Result<Bytes, std::io::Error>> = pattern(len).into_iter().map(Ok).collect();
    parts.push(Err(std::io::Error::other("connection reset")));
    let digest = Digest::of_bytes(b"never complete");
    let err = store
        .put(&digest, futures_util::stream::iter(parts).boxed())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(
        (s.leftovers)(),
        0,
        "an interrupted upload left something behind"
    );
}

/// Several parts and a short last one: multipart on object stores, streamed back intact.
async fn a_blob_of_several_parts_round_trips(s: Subject) {
    let store = s.store.as_ref();
    let parts = pattern(3 * PART_SIZE + PART_SIZE / 2);
    let digest = digest_of(&parts);
    let size = store.put(&digest, body(parts.clone())).await.unwrap();
    assert_eq!(size as usize, 3 * PART_SIZE + PART_SIZE / 2);
    assert_eq!(store.stat(&digest).await.unwrap(), Some(size));
    let (read_size, bytes) = read_back(store, &digest).await;
    assert_eq!(read_size, size);
    assert_eq!(Digest::of_bytes(&bytes), digest);
    assert_eq!((s.leftovers)(), 0);
}

macro_rules! on_every_store {
    ($($case:ident $(($arg:expr))?),* $(,)?) => {
        $(mod $case {
            #[tokio::test]
            async fn local() { super::$case(super::local() $(, $arg)?).await }
            #[tokio::test]
            async fn memory() { super::$case(super::memory() $(, $arg)?).await }
            #[tokio::test]
            async fn s3() { super::$case(super::s3() $(, $arg)?).await }
        })*
    };
}

on_every_store!(
    stores_a_streamed_upload_under_its_digest,
    rejects_content_that_does_not_match_its_digest(100),
    an_interrupted_upload_leaves_nothing(100),
    a_blob_of_several_parts_round_trips,
);

/// The multipart paths: a mismatch or a cut after several parts aborts the upload.
mod multipart {
    use super::*;

    #[tokio::test]
    async fn a_mismatch_after_several_parts_is_aborted_on_s3() {
        rejects_content_that_does_not_match_its_digest(s3(), 2 * PART_SIZE + 1).await
    }

    #[tokio::test]
    async fn a_cut_after_several_parts_is_aborted_on_s3() {
        an_interrupted_upload_leaves_nothing(s3(), 2 * PART_SIZE + 1).await
    }

    #[tokio::test]
    async fn blobs_land_under_prefix_blobs_fan_out_digest() {
        let moto = Moto::start();
        moto.create_bucket("layout");
        let location = "s3://layout/deploy/one"
            .parse::<S3Location>()
            .unwrap()
            .with_endpoint(Some(moto.endpoint()))
            .unwrap();
        let store = ObjectBlobs::connect_with(&location, &CREDENTIALS).unwrap();
        store.check().await.unwrap();
        let digest = Digest::of_bytes(b"where am i");
        store
            .put(&digest, body(vec![Bytes::from_static(b"where am i")]))
            .await
            .unwrap();
        let hex = digest.as_str();
        assert_eq!(
            moto.keys("layout", ""),
            vec![format!("deploy/one/blobs/{}/{hex}", &hex[..2])]
        );
    }

    #[tokio::test]
    async fn a_missing_bucket_fails_the_check_with_the_stores_words() {
        let moto = Moto::start();
        let location = "s3://nobody-made-this"
            .parse::<S3Location>()
            .unwrap()
            .with_endpoint(Some(moto.endpoint()))
            .unwrap();
        let store = ObjectBlobs::connect_with(&location, &CREDENTIALS).unwrap();
        let err = store.check().await.unwrap_err().to_string();
        assert!(err.contains("s3://nobody-made-this"), "{err}");
        assert!(err.contains("NoSuchBucket"), "{err}");
    }
}
