//! The controller's byte routes on an S3 artifact store (a `moto_server` started here): the same
//! streamed upload, download, existence check and digest refusal as on the local store, with
//! nothing landing in the data dir; a bucket that does not exist stops the start.

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod support;

use drover_controller::{Controller, ControllerConfig};
use drover_protocol::{Digest, Names};
use drover_storage::PART_SIZE;
use drover_storage::testing::Moto;
use drover_test_support::{AMQP_URL, delete_namespace, fresh_namespace};
use support::Running;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path, moto: &Moto, bucket: &str) -> ControllerConfig {
    let names = Names::new(&fresh_namespace("ts")).unwrap();
    support::with_bucket(support::config(&names, dir), moto, bucket)
}

#[tokio::test]
async fn blob_routes_stream_to_and_from_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("ctl-blobs");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &moto, "ctl-blobs");
    let ns = config.names.namespace().to_string();
    let controller = Running::start(config).await;
    let http = reqwest::Client::new();
    let url = |d: &Digest| format!("{}/api/v1/blobs/{d}", controller.url());

    // One small blob (a single PUT) and one of several parts (a multipart upload).
    for len in [3_000, 2 * PART_SIZE + 12_345] {
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of_bytes(&content);
        let head = http.head(url(&digest)).send().await.unwrap();
        assert_eq!(head.status().as_u16(), 404);
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            content.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        let put = http.put(url(&digest)).body(body).send().await.unwrap();
        assert_eq!(put.status().as_u16(), 201, "{}", put.text().await.unwrap());
        let head = http.head(url(&digest)).send().await.unwrap();
        assert_eq!(head.status().as_u16(), 200);
        assert_eq!(head.headers()["content-length"], len.to_string().as_str());
        let got = http.get(url(&digest)).send().await.unwrap();
        assert_eq!(got.headers()["content-length"], len.to_string().as_str());
        assert_eq!(got.bytes().await.unwrap().as_ref(), content.as_slice());
        let hex = digest.as_str();
        assert!(
            moto.keys("ctl-blobs", "ctl/blobs/")
                .contains(&format!("ctl/blobs/{}/{hex}", &hex[..2])),
            "{:?}",
            moto.keys("ctl-blobs", "")
        );
    }

    // Content that does not hash to its name is refused and leaves nothing, not even parts.
    let wrong = Digest::of_bytes(b"promised");
    let big = vec![7u8; PART_SIZE + 1];
    for body in [b"delivered".to_vec(), big] {
        let resp = http.put(url(&wrong)).body(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains(wrong.as_str()), "{text}");
    }
    assert_eq!(
        http.head(url(&wrong))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(moto.pending_uploads("ctl-blobs"), 0);
    let missing = http
        .get(url(&Digest::of_bytes(b"never stored")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // The data dir holds no artifact: the bucket does.
    let local = dir.path().join("blobs");
    assert!(!local.exists(), "{} exists", local.display());

    controller.stop().await;
    delete_namespace(AMQP_URL, &ns, &[] as &[&str])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_bucket_stops_the_start_with_a_hint() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let err = Controller::start(
        config(dir.path(), &moto, "never-created"),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("no bucket, no controller");
    let text = format!("{err:#}");
    assert!(text.contains("s3://never-created/ctl"), "{text}");
    assert!(text.contains("--s3-endpoint"), "{text}");
    assert!(text.contains("NoSuchBucket"), "{text}");
}
