//! The error body every failing `/api/v1` request answers with: a stable code and a message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of failure; stable, so clients can branch on it. Each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed (a bad query value, a body that does not hash to its digest).
    BadRequest,
    /// 401: a token is required, or the one sent is wrong.
    Unauthorized,
    /// 403: refused whatever the token: a request naming another host, or a write from another
    /// site, to a controller without a token.
    Forbidden,
    /// 404: no such run, step, artifact, blob or route.
    NotFound,
    /// 413: the body is larger than the controller accepts (an artifact past
    /// `--max-artifact-size`).
    TooLarge,
    /// 500: the controller failed (its store, its disk).
    Internal,
    /// 503: the controller cannot do it now (broker down, shutting down, too little free space
    /// for an upload).
    Unavailable,
    /// A code this client does not know (from a newer controller).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a controller sends.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// The header of a 503 from a controller that is not acting on its namespace (one of
/// [`INACTIVE_STATES`]): `starting` while it takes the namespace's lock and replays its state,
/// `standby` while another controller is active, `disconnected` on a write while it has lost
/// the broker connection that holds the lock (another controller may take over meanwhile). A
/// client with several controller URLs moves on to the next; any other 503 (too little free
/// space) is the active controller's own answer.
pub const INACTIVE_HEADER: &str = "x-drover-inactive";

/// The values of [`INACTIVE_HEADER`]; a client treats every one alike (tries the next URL).
pub const INACTIVE_STATES: [&str; 3] = ["starting", "standby", "disconnected"];

/// The header of an answer to a read from a controller that has lost its broker connection:
/// it answers from what it last knew, which may be stale. Its value says for how long, e.g.
/// `disconnected for 2.4s`.
pub const STALE_HEADER: &str = "x-drover-stale";

/// `{"code": "not_found", "message": "run ... has no step \"x\""}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}
