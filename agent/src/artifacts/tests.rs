//! Direct transfers: route choice, a multi-part round trip through a real S3 API (moto), the
//! digest check on the way down, a missing blob, a small file sent twice.

use super::*;
use crate::config::ArtifactTransfer;
use drover_protocol::message::{ArtifactStoreRef, JobInput};
use drover_protocol::{OutputName, StepName};
use drover_storage::testing::{CREDENTIALS, Moto};
use drover_storage::{ObjectBlobs, PART_SIZE, S3Location};
use object_store::ObjectStoreExt;
use std::sync::Arc;

fn job(store: Option<ArtifactStoreRef>) -> drover_protocol::message::StepJob {
    let mut job = crate::workdir::tests::job();
    job.artifact_store = store;
    job
}

fn store_ref(endpoint: &str) -> ArtifactStoreRef {
    ArtifactStoreRef {
        url: "s3://agent-test/p".into(),
        endpoint: Some(endpoint.into()),
        region: None,
    }
}

fn input(digest: Digest) -> JobInput {
    JobInput {
        step: StepName::new("make").unwrap(),
        output: OutputName::new("out").unwrap(),
        digest,
        size: 0,
        file_name: drover_protocol::FileName::new("out.bin").unwrap(),
        content: None,
    }
}

fn credentials() -> Vec<(String, String)> {
    CREDENTIALS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An input the job brought is written once its bytes hash to the input's digest.
#[tokio::test]
async fn an_input_the_job_brings_is_checked_then_written() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("in/out.bin");
    let given = input(Digest::of_bytes(b"hello"));
    let wrong = write_given(&given, b"hellO", &dest).unwrap_err();
    assert!(matches!(wrong, TransferError::Corrupt { .. }), "{wrong}");
    assert!(!dest.exists());
    write_given(&given, b"hello", &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
}

/// A small output is read whole with its reference; a larger one, or a pipe, is not read.
#[test]
fn only_a_regular_file_within_the_allowance_is_read_as_a_small_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.txt");
    std::fs::write(&file, b"42\n").unwrap();
    let (artifact, bytes) = read_small(&file, 3).unwrap().expect("3 bytes fit in 3");
    assert_eq!(bytes, b"42\n");
    assert_eq!(artifact.digest, Digest::of_bytes(b"42\n"));
    assert_eq!((artifact.size, artifact.file_name.as_str()), (3, "n.txt"));
    assert!(read_small(&file, 2).unwrap().is_none(), "3 bytes in 2");
    // No writer will ever open it: reading it would wait forever.
    let pipe = dir.path().join("pipe");
    nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(read_small(&pipe, 1 << 16).unwrap().is_none(), "a pipe");
}

#[test]
fn jobs_naming_a_bucket_go_direct_unless_told_otherwise() {
    let http = reqwest::Client::new();
    let direct = Routes::new(ArtifactTransfer::Direct, None, credentials());
    let named = job(Some(store_ref("http://127.0.0.1:9")));
    let route = direct.for_job(&named, &http, "http://ctl").unwrap();
    assert_eq!(route.describe(), "s3://agent-test/p at http://127.0.0.1:9");
    let local = direct.for_job(&job(None), &http, "http://ctl").unwrap();
    assert_eq!(local.describe(), "controller http://ctl");

    let through = Routes::new(ArtifactTransfer::Controller, None, credentials());
    let route = through.for_job(&named, &http, "http://ctl").unwrap();
    assert_eq!(route.describe(), "controller http://ctl");

    // This host reaches the bucket at another address than the controller does.
    let moved = Routes::new(
        ArtifactTransfer::Direct,
        Some("http://127.0.0.2:9000".into()),
        credentials(),
    );
    let route = moved.for_job(&named, &http, "http://ctl").unwrap();
    assert_eq!(
        route.describe(),
        "s3://agent-test/p at http://127.0.0.2:9000"
    );

    let bad = job(Some(ArtifactStoreRef {
        url: "s3://Not_A_Bucket".into(),
        endpoint: None,
        region: None,
    }));
    let err = direct.for_job(&bad, &http, "http://ctl").err().unwrap();
    assert!(err.to_string().contains("s3://Not_A_Bucket"), "{err}");
}

#[tokio::test]
async fn a_file_of_several_parts_goes_up_and_comes_back_verified() {
    let moto = Moto::start();
    moto.create_bucket("agent-test");
    let routes = Routes::new(ArtifactTransfer::Direct, None, credentials());
    let route = routes
        .for_job(
            &job(Some(store_ref(&moto.endpoint()))),
            &reqwest::Client::new(),
            "",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let content: Vec<u8> = (0..2 * PART_SIZE + 999).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &content).unwrap();

    let artifact = upload(&route, &path).await.unwrap();
    assert_eq!(artifact.digest, Digest::of_bytes(&content));
    assert_eq!(artifact.size, content.len() as u64);
    assert_eq!(artifact.file_name.as_str(), "big.bin");
    let hex = artifact.digest.as_str();
    assert_eq!(
        moto.keys("agent-test", ""),
        vec![format!("p/blobs/{}/{hex}", &hex[..2])]
    );
    // Already there: checked, not sent again.
    upload(&route, &path).await.unwrap();

    let dest = dir.path().join("in/make/out/big.bin");
    download(&route, &input(artifact.digest), &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert_eq!(moto.pending_uploads("agent-test"), 0);
}

#[tokio::test]
async fn a_download_that_does_not_match_its_digest_fails() {
    let memory = Arc::new(object_store::memory::InMemory::new());
    let location: S3Location = "s3://mem".parse().unwrap();
    let claimed = Digest::of_bytes(b"the real thing");
    // Bytes that bypassed the store's own check, e.g. written by hand into the bucket.
    let key = drover_storage::layout::object_key("", &claimed);
    memory
        .put(&key.as_str().into(), b"tampered".to_vec().into())
        .await
        .unwrap();
    let route = Route::Store(Arc::new(ObjectBlobs::with_store(memory, location)));
    let dir = tempfile::tempdir().unwrap();
    let err = download(&route, &input(claimed.clone()), &dir.path().join("x"))
        .await
        .unwrap_err();
    let TransferError::Corrupt { expected, got, .. } = &err else {
        panic!("not a digest check: {err}");
    };
    assert_eq!(expected, claimed.as_str());
    assert_eq!(got, Digest::of_bytes(b"tampered").as_str());

    let missing = Digest::of_bytes(b"never stored");
    let err = download(&route, &input(missing.clone()), &dir.path().join("y"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Missing { .. }), "{err}");
    assert!(err.to_string().contains(missing.as_str()), "{err}");
}

#[test]
fn only_uploads_bigger_than_a_round_trip_ask_first() {
    assert!(!asked_first(0));
    assert!(!asked_first(SENT_WITHOUT_ASKING));
    assert!(asked_first(SENT_WITHOUT_ASKING + 1));
    assert!(asked_first(2 * PART_SIZE as u64));
}

#[tokio::test]
async fn a_small_file_sent_twice_is_stored_once() {
    let memory = Arc::new(object_store::memory::InMemory::new());
    let location: S3Location = "s3://mem".parse().unwrap();
    let route = Route::Store(Arc::new(ObjectBlobs::with_store(memory, location)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.txt");
    std::fs::write(&path, b"42\n").unwrap();
    let first = upload(&route, &path).await.unwrap();
    let again = upload(&route, &path).await.unwrap();
    assert_eq!(first, again);
    let dest = dir.path().join("in/n.txt");
    download(&route, &input(first.digest), &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"42\n");
}
