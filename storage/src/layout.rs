//! Where a blob lives: `<first 2 hex>/<sha256>` under the store's `blobs` root, in both stores.
//!
//! Locally that root is `<data-dir>/blobs/`; in a bucket it is `<prefix>/blobs/`, so one bucket
//! can hold several deployments side by side under different prefixes.

use drover_protocol::Digest;

/// `ab/<sha256>`: the two-level fan-out keeps directories (and S3 listings) small.
pub fn relative(digest: &Digest) -> String {
    let hex = digest.as_str();
    format!("{}/{hex}", &hex[..2])
}

/// The object key of a blob in a bucket: `<prefix>/blobs/ab/<sha256>`, or `blobs/ab/<sha256>`
/// without a prefix. `prefix` is a validated [`crate::S3Location`] prefix (no empty segments).
pub fn object_key(prefix: &str, digest: &Digest) -> String {
    if prefix.is_empty() {
        format!("blobs/{}", relative(digest))
    } else {
        format!("{prefix}/blobs/{}", relative(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fan_out_on_the_first_two_hex_digits() {
        let d = Digest::of_bytes(b"hello");
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(relative(&d), format!("2c/{hex}"));
        assert_eq!(object_key("", &d), format!("blobs/2c/{hex}"));
        assert_eq!(
            object_key("team-a/prod", &d),
            format!("team-a/prod/blobs/2c/{hex}")
        );
    }
}
