//! Typed identifiers: parsed once at the edge, so the rest of the code never re-checks a bare string.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: String,
}

fn id_error(kind: &'static str, value: &str, reason: impl Into<String>) -> IdError {
    IdError {
        kind,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks a name made of `[A-Za-z0-9_.-]`, not `.`/`..`, 1..=max bytes: safe as a path component.
fn check_name(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(id_error(kind, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(id_error(kind, value, format!("longer than {max} bytes")));
    }
    if value == "." || value == ".." {
        return Err(id_error(kind, value, "must not be '.' or '..'"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(id_error(
            kind,
            value,
            format!("contains {c:?}; use letters, digits, '_', '-' and '.' only"),
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        ///
        /// A value of up to 24 bytes (most step, output, queue and agent names) is held inline:
        /// making, copying or dropping it allocates nothing.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            pub fn new(value: impl Into<CompactString>) -> Result<Self, IdError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Written as a plain string, without making a `String` of it first.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        /// Read as a plain string and checked as [`Self::new`] checks it.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = CompactString::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A pipeline run: 32 lowercase hex digits (a UUIDv7, so ids sort by creation time).
    RunId,
    "run id",
    |v| {
        if v.len() == 32 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(id_error("run id", v, "expected 32 lowercase hex digits"))
        }
    }
);

impl RunId {
    /// A fresh, time-ordered run id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string().into())
    }
}

string_id!(
    /// A step's name within its pipeline; also a path component in work and data dirs.
    StepName,
    "step name",
    |v| {
        check_name("step name", v, 128)?;
        if v.contains('.') {
            return Err(id_error("step name", v, "must not contain '.' (it separates step and output in ${STEP.OUTPUT})"));
        }
        if v == "pipeline" {
            return Err(id_error("step name", v, "'pipeline' is reserved for ${pipeline.NAME} parameters"));
        }
        Ok(())
    }
);

string_id!(
    /// A declared output (artifact) name of a step; a path component, so no separators or `..`.
    OutputName,
    "output name",
    |v| check_name("output name", v, 128)
);

string_id!(
    /// A user queue name as written by the user (`default`, `gpu`), before namespacing.
    QueueName,
    "queue name",
    |v| check_name("queue name", v, 200)
);

impl QueueName {
    /// The queue the controller takes submissions and aborts from
    /// ([`crate::names::SERVICES_QUEUE`]).
    pub fn services() -> Self {
        Self(CompactString::const_new(crate::names::SERVICES_QUEUE))
    }

    /// The queue drivers run from ([`crate::names::DRIVERS_QUEUE`]).
    pub fn drivers() -> Self {
        Self(CompactString::const_new(crate::names::DRIVERS_QUEUE))
    }

    /// Whether this is `services` or `drivers`, which no ordinary step may run on.
    pub fn is_reserved(&self) -> bool {
        self.0 == crate::names::SERVICES_QUEUE || self.0 == crate::names::DRIVERS_QUEUE
    }
}

string_id!(
    /// An agent's identity: `<host>-<pid>-<suffix>` by default.
    AgentId,
    "agent id",
    |v| check_name("agent id", v, 200)
);

string_id!(
    /// A sha256 content digest: 64 lowercase hex digits.
    Digest,
    "digest",
    |v| {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(id_error("digest", v, "expected 64 lowercase hex digits (sha256)"))
        }
    }
);

impl Digest {
    /// The digest of a finished sha256 hasher.
    pub fn from_sha256(hasher: sha2::Sha256) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(hasher.finalize()).into())
    }

    /// The digest of a byte slice.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(bytes);
        Self::from_sha256(hasher)
    }
}

/// The base name of an artifact's file as its step wrote it (`model.pkl`): shown to users and
/// used as a file name in a consumer's workdir and in downloads, so it is one path component:
/// not empty, not `.` or `..`, no `/`, `\\` or NUL, at most [`FileName::MAX_LEN`] bytes.
///
/// [`FileName::new`] refuses anything else; decoding a message or record sanitizes instead
/// ([`FileName::sanitized`]), so a peer's odd file name never costs the result it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct FileName(String);

impl FileName {
    /// The longest file name most file systems accept.
    pub const MAX_LEN: usize = 255;

    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let v = value.into();
        if v.is_empty() || v == "." || v == ".." {
            return Err(id_error("file name", &v, "must not be empty, '.' or '..'"));
        }
        if v.len() > Self::MAX_LEN {
            let reason = format!("longer than {} bytes", Self::MAX_LEN);
            return Err(id_error("file name", &v, reason));
        }
        if let Some(c) = v.chars().find(|c| matches!(c, '/' | '\\' | '\0')) {
            let reason = format!("contains {c:?}; a file name is one path component");
            return Err(id_error("file name", &v, reason));
        }
        Ok(Self(v))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A valid file name for any string: separators and NUL become `_`, an over-long name is
    /// cut at a character boundary, and one with nothing usable left becomes `artifact`.
    pub fn sanitized(name: &str) -> Self {
        let mut clean = String::with_capacity(name.len().min(Self::MAX_LEN));
        for c in name.chars() {
            let c = if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            };
            if clean.len() + c.len_utf8() > Self::MAX_LEN {
                break;
            }
            clean.push(c);
        }
        if clean.is_empty() || clean == "." || clean == ".." {
            clean = "artifact".to_string();
        }
        Self(clean)
    }
}

impl From<String> for FileName {
    fn from(value: String) -> Self {
        Self::new(value.as_str()).unwrap_or_else(|_| Self::sanitized(&value))
    }
}

impl From<FileName> for String {
    fn from(name: FileName) -> String {
        name.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The attempt number of a step within a run, starting at 1; a retry gets the next number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct AttemptNo(pub u32);

impl AttemptNo {
    pub const FIRST: AttemptNo = AttemptNo(1);

    pub fn next(self) -> AttemptNo {
        AttemptNo(self.0 + 1)
    }
}

impl fmt::Display for AttemptNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_directories() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "a b", "x\\y"] {
            assert!(OutputName::new(bad).is_err(), "{bad:?} accepted");
            assert!(StepName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(OutputName::new("data_frame.v2").is_ok());
        assert!(OutputName::new("x".repeat(129)).is_err());
    }

    #[test]
    fn file_names_are_one_path_component() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "x\\y"] {
            assert!(FileName::new(bad).is_err(), "{bad:?} accepted");
            let clean = FileName::sanitized(bad);
            assert!(
                FileName::new(clean.as_str()).is_ok(),
                "{clean:?} from {bad:?}"
            );
        }
        assert!(FileName::new("my model (v2).pkl").is_ok());
        assert!(FileName::new("x".repeat(256)).is_err());
        assert_eq!(FileName::sanitized("a/b").as_str(), "a_b");
        assert_eq!(FileName::sanitized("..").as_str(), "artifact");
        assert_eq!(FileName::sanitized(&"é".repeat(200)).as_str().len(), 254);
        let decoded: FileName = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(decoded.as_str(), "a_b");
    }

    #[test]
    fn the_services_queue_is_a_valid_queue_name() {
        assert_eq!(
            QueueName::new(crate::names::SERVICES_QUEUE).unwrap(),
            QueueName::services()
        );
    }

    #[test]
    fn pipeline_is_not_a_step_name() {
        let err = StepName::new("pipeline").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn run_ids_are_hex_and_time_ordered() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert!(RunId::new(a.as_str()).is_ok());
        assert!(a <= b);
        assert!(RunId::new("not-a-run").is_err());
    }

    #[test]
    fn digest_of_bytes_is_sha256() {
        assert_eq!(
            Digest::of_bytes(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
