//! The controller's blob store: the configured one, with the outputs that came inside results
//! (kept in the state store, [`Store::small_output`]) read in front of it. Uploads go to the
//! configured store as before.

use crate::store::Store;
use bytes::Bytes;
use drover_protocol::Digest;
use drover_storage::{Blob, BlobError, BlobStore, Body};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;

/// `blobs` behind the small outputs of `store`.
pub struct WithSmallOutputs {
    store: Store,
    blobs: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for WithSmallOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithSmallOutputs")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

impl WithSmallOutputs {
    pub fn new(store: Store, blobs: Arc<dyn BlobStore>) -> Self {
        Self { store, blobs }
    }

    fn small(&self, digest: &Digest) -> Result<Option<Vec<u8>>, BlobError> {
        self.store.small_output(digest).map_err(|e| BlobError::Io {
            path: format!("the state store's output {digest}"),
            error: std::io::Error::other(e.to_string()),
        })
    }
}

impl BlobStore for WithSmallOutputs {
    fn describe(&self) -> String {
        self.blobs.describe()
    }

    fn stat<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>, BlobError>> {
        async move {
            match self.small(digest)? {
                Some(bytes) => Ok(Some(bytes.len() as u64)),
                None => self.blobs.stat(digest).await,
            }
        }
        .boxed()
    }

    fn open<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<Blob>, BlobError>> {
        async move {
            match self.small(digest)? {
                Some(bytes) => Ok(Some(Blob {
                    size: bytes.len() as u64,
                    bytes: futures_util::stream::once(async move {
                        Ok::<_, BlobError>(Bytes::from(bytes))
                    })
                    .boxed(),
                })),
                None => self.blobs.open(digest).await,
            }
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        expected: &'a Digest,
        body: Body<'a>,
    ) -> BoxFuture<'a, Result<u64, BlobError>> {
        self.blobs.put(expected, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_storage::LocalBlobs;
    use futures_util::TryStreamExt;

    async fn read(blobs: &dyn BlobStore, digest: &Digest) -> Option<Vec<u8>> {
        let blob = blobs.open(digest).await.unwrap()?;
        let chunks: Vec<Bytes> = blob.bytes.try_collect().await.unwrap();
        let bytes = chunks.concat();
        assert_eq!(bytes.len() as u64, blob.size);
        Some(bytes)
    }

    #[tokio::test]
    async fn small_outputs_are_read_first_and_the_rest_from_the_blob_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let local: Arc<dyn BlobStore> =
            Arc::new(LocalBlobs::open(&dir.path().join("blobs")).unwrap());
        let blobs = WithSmallOutputs::new(store.clone(), local.clone());

        let small = Digest::of_bytes(b"42\n");
        store.put_small_output(&small, b"42\n").unwrap();
        let uploaded = Digest::of_bytes(b"uploaded");
        let body =
            futures_util::stream::once(async { Ok(Bytes::from_static(b"uploaded")) }).boxed();
        blobs.put(&uploaded, body).await.unwrap();
        let neither = Digest::of_bytes(b"neither");

        assert_eq!(blobs.stat(&small).await.unwrap(), Some(3));
        assert_eq!(read(&blobs, &small).await.unwrap(), b"42\n");
        assert_eq!(blobs.stat(&uploaded).await.unwrap(), Some(8));
        assert_eq!(read(&blobs, &uploaded).await.unwrap(), b"uploaded");
        assert_eq!(
            local.stat(&uploaded).await.unwrap(),
            Some(8),
            "uploads go to the blob store"
        );
        assert_eq!(
            local.stat(&small).await.unwrap(),
            None,
            "no file for a small output"
        );
        assert_eq!(blobs.stat(&neither).await.unwrap(), None);
        assert!(read(&blobs, &neither).await.is_none());
    }

    #[tokio::test]
    async fn a_small_output_outlives_the_store_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of_bytes(b"kept");
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_small_output(&digest, b"kept").unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open_after_drop(dir.path()).unwrap();
        assert_eq!(store.small_output(&digest).unwrap().unwrap(), b"kept");
    }
}
