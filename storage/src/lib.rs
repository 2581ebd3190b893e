//! drover's artifact stores: content-addressed blobs (sha256) in the controller's data dir
//! ([`LocalBlobs`]) or in an S3-compatible bucket ([`ObjectBlobs`]), behind one small trait.
//!
//! Both stores stream bytes in and out (nothing is buffered whole) and only ever make a blob
//! visible under its digest once its content was hashed and matched: a stored blob is always
//! complete and correct. Where a store lives is a [`StoreLocation`] (`local` or
//! `s3://bucket[/prefix]`); the key layout is in [`layout`].

mod hashed;
pub mod layout;
mod local;
mod location;
mod object;
#[cfg(feature = "testing")]
pub mod testing;

pub use hashed::{BLOCK, HashedFile, hash_file};
pub use local::LocalBlobs;
pub use location::{LocationError, S3Location, StoreLocation};
pub use object::{ObjectBlobs, PART_SIZE, PARTS_IN_FLIGHT};

use bytes::Bytes;
use drover_protocol::Digest;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// Why a blob could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("digest mismatch: the upload was named {expected} but its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("blob store i/o error at {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{store}: {error}")]
    Remote {
        store: String,
        error: object_store::Error,
    },
    #[error("cannot use the artifact store {store}: {reason}")]
    Config { store: String, reason: String },
}

/// Bytes on their way into a store; an `Err` item aborts the upload.
pub type Body<'a> = BoxStream<'a, Result<Bytes, std::io::Error>>;

/// Bytes on their way out of a store.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// A stored blob, opened for streaming.
pub struct Blob {
    pub size: u64,
    pub bytes: ByteStream,
}

/// A content-addressed blob store. Object-safe (`Arc<dyn BlobStore>`), so the controller and
/// the agents pick an implementation from configuration at run time.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Where the blobs live, for messages: a directory or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// The blob's size, or `None` when it is not stored.
    fn stat<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>, BlobError>>;

    /// Opens a stored blob for streaming, or `None` when it is not stored.
    fn open<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<Blob>, BlobError>>;

    /// Streams `body` into the store while hashing it; keeps it under `expected` only if the
    /// hash matches. Returns the stored size. Storing content that is already there is fine.
    fn put<'a>(
        &'a self,
        expected: &'a Digest,
        body: Body<'a>,
    ) -> BoxFuture<'a, Result<u64, BlobError>>;
}
