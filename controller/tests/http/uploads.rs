//! Upload limits: a blob past `--max-artifact-size` is refused with `too_large`, whether its
//! length is declared or not, and an upload that would leave less than `--min-free-space` on
//! the data dir's file system is refused with `unavailable`.

use super::server::Server;
use drover_api::{ApiError, ErrorCode};
use drover_protocol::Digest;

async fn put(s: &Server, bytes: Vec<u8>, declared: bool) -> (u16, Option<ApiError>) {
    let digest = Digest::of_bytes(&bytes);
    let request = s.request(reqwest::Method::PUT, &format!("/api/v1/blobs/{digest}"));
    let request = if declared {
        request.body(bytes)
    } else {
        // A stream of unknown length: sent chunked, with no Content-Length.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(300).map(|c| Ok(c.to_vec())).collect();
        request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.ok())
}

#[tokio::test]
async fn an_artifact_past_the_limit_is_refused_declared_or_not() {
    let s = Server::start_with(|c| c.max_artifact_size = 1000).await;
    assert_eq!(put(&s, vec![b'a'; 1000], true).await.0, 201);
    assert_eq!(put(&s, vec![b'b'; 1000], false).await.0, 201);
    for declared in [true, false] {
        let (status, error) = put(&s, vec![b'c'; 5000], declared).await;
        let error = error.unwrap();
        assert_eq!(
            (status, error.code),
            (413, ErrorCode::TooLarge),
            "{error:?}"
        );
        assert!(error.message.contains("--max-artifact-size"), "{error:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_upload_that_would_fill_the_disk_is_refused() {
    let s = Server::start_with(|c| c.min_free_space = u64::MAX / 4).await;
    let (status, error) = put(&s, b"small".to_vec(), true).await;
    let error = error.unwrap();
    assert_eq!(
        (status, error.code),
        (503, ErrorCode::Unavailable),
        "{error:?}"
    );
    assert!(error.message.contains("--min-free-space"), "{error:?}");
    s.stop().await;
}
