//! Outputs that came inside a step's `Finished` (at most the jobs' inline allowance each), kept
//! in the state store under their digest: written with the record that names them and made
//! durable by the same flush, so storing one costs no file, `fsync` or directory sync of its own.

use super::{Store, StoreError};
use drover_protocol::Digest;

pub(super) const SMALL_OUTPUTS_TREE: &str = "small_outputs";

impl Store {
    /// Keeps `bytes` under `digest`; durable with the next flush, readable at once.
    pub fn put_small_output(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.small_outputs.contains_key(digest.as_str())? {
            self.small_outputs.insert(digest.as_str(), bytes)?;
        }
        Ok(())
    }

    /// The bytes kept under `digest`, if an output that came inside a result has them.
    pub fn small_output(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.small_outputs.get(digest.as_str())?.map(|v| v.to_vec()))
    }
}
