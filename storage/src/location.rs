//! Where artifacts live, as configured (`--artifact-store`): `local`, the controller's data dir
//! served over its HTTP API, or `s3://bucket[/prefix]` on an S3-compatible server.

use drover_protocol::message::ArtifactStoreRef;
use std::fmt;
use std::str::FromStr;

/// Why a store location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid artifact store {value:?}: {reason}")]
pub struct LocationError {
    pub value: String,
    pub reason: String,
}

fn refuse(value: &str, reason: impl Into<String>) -> LocationError {
    LocationError {
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The configured artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreLocation {
    /// `<data-dir>/blobs` on the controller; agents move bytes through its HTTP API.
    #[default]
    Local,
    /// A bucket every party reads and writes directly.
    S3(S3Location),
}

impl FromStr for StoreLocation {
    type Err = LocationError;

    fn from_str(value: &str) -> Result<Self, LocationError> {
        if value == "local" {
            Ok(StoreLocation::Local)
        } else if value.starts_with("s3://") {
            Ok(StoreLocation::S3(value.parse()?))
        } else {
            Err(refuse(value, "expected `local` or `s3://bucket[/prefix]`"))
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Local => f.write_str("local"),
            StoreLocation::S3(s3) => write!(f, "{}", s3.url()),
        }
    }
}

/// A bucket and a key prefix, with the endpoint and region to reach it by. Credentials are not
/// part of it: they come from each process's own environment (`AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    bucket: String,
    /// Segments joined by `/`, no leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    /// The S3 API's base URL for S3-compatible servers (`http://127.0.0.1:9000`); `None`: AWS.
    pub endpoint: Option<String>,
    /// `None`: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
}

impl FromStr for S3Location {
    type Err = LocationError;

    /// Parses `s3://bucket[/prefix]` (no endpoint or region yet).
    fn from_str(value: &str) -> Result<Self, LocationError> {
        let rest = value
            .strip_prefix("s3://")
            .ok_or_else(|| refuse(value, "expected `s3://bucket[/prefix]`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|why| refuse(value, why))?;
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() {
            if prefix.len() > 512 {
                return Err(refuse(value, "the prefix is longer than 512 bytes"));
            }
            for segment in prefix.split('/') {
                check_segment(segment).map_err(|why| refuse(value, why))?;
            }
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
        })
    }
}

impl S3Location {
    /// Sets the endpoint (`http://` or `https://` URL) of an S3-compatible server.
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Result<Self, LocationError> {
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(refuse(
                e,
                "the S3 endpoint must be an http:// or https:// URL",
            ));
        }
        self.endpoint = endpoint.map(|e| e.trim_end_matches('/').to_string());
        Ok(self)
    }

    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region.filter(|r| !r.is_empty());
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `s3://bucket` or `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// What the controller tells agents in every job.
    pub fn to_ref(&self) -> ArtifactStoreRef {
        ArtifactStoreRef {
            url: self.url(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
        }
    }

    /// The store a job names.
    pub fn from_ref(store: &ArtifactStoreRef) -> Result<Self, LocationError> {
        Ok(store
            .url
            .parse::<S3Location>()?
            .with_endpoint(store.endpoint.clone())?
            .with_region(store.region.clone()))
    }
}

/// S3's bucket naming rules: 3 to 63 of `[a-z0-9.-]`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len()) {
        return Err("a bucket name has 3 to 63 characters".into());
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(format!(
            "the bucket name contains {c:?}; use lowercase letters, digits, '.' and '-'"
        ));
    }
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err("a bucket name starts and ends with a letter or digit".into());
    }
    Ok(())
}

/// A prefix segment: `[A-Za-z0-9_.-]+`, not `.` or `..` (keys stay portable and unambiguous).
fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("the prefix has an empty segment (`//`)".into());
    }
    if segment == "." || segment == ".." {
        return Err("the prefix must not hold `.` or `..` segments".into());
    }
    if let Some(c) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "the prefix contains {c:?}; use letters, digits, '_', '-', '.' and '/'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_s3_urls() {
        assert_eq!("local".parse::<StoreLocation>(), Ok(StoreLocation::Local));
        let StoreLocation::S3(s3) = "s3://my-bucket/team-a/prod/".parse().unwrap() else {
            panic!("not s3");
        };
        assert_eq!((s3.bucket(), s3.prefix()), ("my-bucket", "team-a/prod"));
        assert_eq!(s3.url(), "s3://my-bucket/team-a/prod");
        let root: S3Location = "s3://my.bucket".parse().unwrap();
        assert_eq!((root.prefix(), root.url().as_str()), ("", "s3://my.bucket"));
        assert_eq!(
            StoreLocation::S3(root).to_string(),
            "s3://my.bucket",
            "display is the url"
        );
    }

    #[test]
    fn refuses_what_s3_or_the_key_layout_would_not_take() {
        for bad in [
            "",
            "s3:/bucket",
            "file:///tmp",
            "s3://",
            "s3://ab",
            "s3://Bucket",
            "s3://-bucket",
            "s3://bucket_x",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket/a b",
        ] {
            let err = bad.parse::<StoreLocation>().unwrap_err();
            assert!(err.to_string().contains("invalid artifact store"), "{err}");
        }
    }

    #[test]
    fn a_job_reference_round_trips_without_credentials() {
        let s3: S3Location = "s3://bucket/p".parse().unwrap();
        let s3 = s3
            .with_endpoint(Some("http://127.0.0.1:9000/".into()))
            .unwrap()
            .with_region(Some("eu-west-1".into()));
        let r = s3.to_ref();
        assert_eq!(r.url, "s3://bucket/p");
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(S3Location::from_ref(&r).unwrap(), s3);
        assert!(
            s3.clone()
                .with_endpoint(Some("127.0.0.1:9000".into()))
                .is_err()
        );
    }
}
