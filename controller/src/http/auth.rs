//! Bearer-token authentication: with a token configured, every route but `/healthz` needs it.
//!
//! Programs send `Authorization: Bearer <token>`. A browser opens any page once with
//! `?token=<token>` (or types it into the login form a 401 page shows): the answer sets an
//! HttpOnly, SameSite=Strict cookie derived from the token and redirects to the same URL without
//! it, so the token leaves the address bar and later fetches and event streams carry the cookie.

use super::App;
use super::pages::esc;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::net::IpAddr;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Everything: the admin token.
    Admin,
    /// GET and HEAD only: the read token (`--read-token`), for dashboards.
    Read,
}

/// The configured tokens and the cookies that stand for them.
#[derive(Clone)]
pub(crate) struct Auth {
    token: String,
    /// The read-only token and its cookie value, when one is configured.
    read: Option<(String, String)>,
    /// `drover_<8 hex>`: distinct per token, so controllers on one host (cookies ignore ports)
    /// do not overwrite each other's cookie.
    cookie_name: String,
    /// A hash of the token, so the cookie does not hold the token itself.
    cookie_value: String,
}

impl Auth {
    pub fn new(token: &str, read_token: Option<&str>) -> Self {
        let hex = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
        let name_hash = hex(token.as_bytes());
        Self {
            token: token.to_string(),
            read: read_token.map(|read| {
                (
                    read.to_string(),
                    hex(format!("drover-ui-read:{read}").as_bytes()),
                )
            }),
            cookie_name: format!("drover_{}", &name_hash[..8]),
            cookie_value: hex(format!("drover-ui:{token}").as_bytes()),
        }
    }

    /// What the token sent as a bearer or query token allows.
    fn token_access(&self, given: &str) -> Option<Access> {
        if same(given, &self.token) {
            return Some(Access::Admin);
        }
        self.read
            .as_ref()
            .is_some_and(|(read, _)| same(given, read))
            .then_some(Access::Read)
    }

    /// What the bearer header or the cookie allows.
    fn accepts(&self, headers: &HeaderMap) -> Option<Access> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.token_access(t.trim()));
        bearer.or_else(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .filter(|(k, _)| *k == self.cookie_name)
                .find_map(|(_, v)| self.cookie_access(v))
        })
    }

    fn cookie_access(&self, value: &str) -> Option<Access> {
        if same(value, &self.cookie_value) {
            return Some(Access::Admin);
        }
        self.read
            .as_ref()
            .is_some_and(|(_, cookie)| same(value, cookie))
            .then_some(Access::Read)
    }

    fn set_cookie(&self, access: Access) -> String {
        let value = match (access, &self.read) {
            (Access::Read, Some((_, cookie))) => cookie,
            _ => &self.cookie_value,
        };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name
        )
    }
}

/// Compares without stopping at the first difference, so timing reveals nothing but the length.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Characters a token may hold: it travels in a header and a query string.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty; unset DROVER_TOKEN or give --token a value".into());
    }
    if let Some(c) = token
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '"' | '\\' | '&' | '#'))
    {
        return Err(format!(
            "the token holds {c:?}; use letters, digits and punctuation other than ; , \" \\ & #"
        ));
    }
    Ok(())
}

/// Refuses to serve an open API where others can reach it, and says what it is doing.
pub fn check_exposure(
    ip: IpAddr,
    token: Option<&str>,
    read_token: Option<&str>,
    allow_unauthenticated: bool,
) -> Result<(), String> {
    if let Some(read) = read_token {
        check_token(read).map_err(|e| format!("bad --read-token: {e}"))?;
        if token.is_none() {
            return Err("--read-token needs --token (DROVER_TOKEN): without one the API is open to everyone anyway".into());
        }
        if token == Some(read) {
            return Err("--read-token must differ from --token".into());
        }
    }
    match token {
        Some(token) => check_token(token).map_err(|e| format!("bad --token: {e}")),
        None if ip.is_loopback() => Ok(()),
        None if allow_unauthenticated => Ok(()),
        None => Err(format!(
            "refusing to serve the HTTP API on {ip} without a token: anyone who can reach it could read artifacts and abort runs; set --token (DROVER_TOKEN) or pass --allow-unauthenticated"
        )),
    }
}

/// The middleware.
pub(crate) async fn require_token(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &app.auth else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let allowed = |access: Access| access == Access::Admin || reads;
    if path == "/healthz" {
        return next.run(request).await;
    }
    match auth.accepts(request.headers()) {
        Some(access) if allowed(access) => return next.run(request).await,
        Some(_) => return read_only(),
        None => {}
    }
    let query = request.uri().query().unwrap_or("");
    let (given, rest) = split_token(query);
    let api = path.starts_with("/api/") || path == "/metrics";
    if let Some(access) = given.as_deref().and_then(|t| auth.token_access(t)) {
        if !allowed(access) {
            return read_only();
        }
        if api || request.method() != Method::GET {
            return next.run(request).await;
        }
        // A page opened with the token: remember it in a cookie and drop it from the URL.
        let target = local_target(path);
        // A foreign target is replaced by `/`, where its query would mean nothing.
        let location = if rest.is_empty() || target != path {
            target.to_string()
        } else {
            format!("{target}?{rest}")
        };
        let mut response = StatusCode::SEE_OTHER.into_response();
        let headers = response.headers_mut();
        if let (Ok(loc), Ok(cookie)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&auth.set_cookie(access)),
        ) {
            headers.insert(header::LOCATION, loc);
            headers.insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    let why = if given.is_some() {
        "wrong token"
    } else {
        "this controller requires a token"
    };
    if api || request.method() != Method::GET {
        let mut response = super::ApiError::unauthorized(format!(
            "{why}: send `Authorization: Bearer <token>` (the CLI and agents read --token / DROVER_TOKEN)"
        ))
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"drover\""),
        );
        return response;
    }
    let policy = HeaderValue::from_str(&login_policy()).unwrap_or(HeaderValue::from_static(
        super::guard::CONTENT_SECURITY_POLICY,
    ));
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_SECURITY_POLICY, policy)],
        Html(login_page(why, path)),
    )
        .into_response()
}

/// The login page's own style, the one inline thing a page of the controller holds.
const LOGIN_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:30em;margin:5em auto;\
color:#1f2933}input,button{font:inherit;padding:4px 8px}";

/// The usual policy, with the login page's style allowed by its hash (the stylesheet of the
/// other pages needs the token).
fn login_policy() -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(LOGIN_STYLE));
    super::guard::CONTENT_SECURITY_POLICY.replacen(
        "style-src 'self'",
        &format!("style-src 'self' 'sha256-{hash}'"),
        1,
    )
}

/// The answer to a write sent with the read-only token.
fn read_only() -> Response {
    super::ApiError::forbidden(
        "the read-only token allows GET and HEAD only; send the admin token (--token / DROVER_TOKEN) to change anything",
    )
    .into_response()
}

/// `path` when a browser reads it as a path on this host, else `/`.
///
/// The login form posts to it and the redirect goes to it, so `//evil.example/x` (another host
/// to a browser, as is `/\\evil.example`, browsers reading `\\` as `/`) must never get there:
/// only one `/` followed by neither `/` nor `\\`, and no spaces or control characters (browsers
/// drop tabs and newlines from URLs, so `/\t/evil.example` would become `//evil.example`).
fn local_target(path: &str) -> &str {
    let mut chars = path.chars();
    let local = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && path.chars().all(|c| c.is_ascii_graphic());
    if local { path } else { "/" }
}

/// The `token` parameter (percent-decoded) and the rest of the query string as it was.
pub(super) fn split_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("token=") {
            Some(value) => token = Some(percent_decode(value)),
            None => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b as u8);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn login_page(why: &str, path: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>drover: token required</title>\
<style>{LOGIN_STYLE}</style></head><body><main>\
<h1>drover</h1><p>{}. Enter the controller's token (its <code>--token</code> / <code>DROVER_TOKEN</code>); \
it is kept in a cookie for this browser.</p>\
<form method=\"get\" action=\"{}\"><input type=\"password\" name=\"token\" autofocus \
placeholder=\"token\"> <button type=\"submit\">Open</button></form></main></body></html>",
        esc(why),
        esc(local_target(path))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_header_cookie_or_query() {
        let auth = Auth::new("s3cret", None);
        let mut headers = HeaderMap::new();
        assert_eq!(auth.accepts(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(auth.accepts(&headers), Some(Access::Admin));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert_eq!(auth.accepts(&headers), None);
        let cookie = auth.set_cookie(Access::Admin);
        let pair = cookie.split(';').next().unwrap();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        assert_eq!(auth.accepts(&headers), Some(Access::Admin));
        assert!(
            !pair.contains("s3cret"),
            "the cookie does not hold the token"
        );
        assert_eq!(
            split_token("a=1&token=s%33cret&b=2"),
            (Some("s3cret".into()), "a=1&b=2".into())
        );
        assert_eq!(split_token(""), (None, String::new()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn the_read_token_reads_only() {
        let auth = Auth::new("admin-t", Some("read-t"));
        assert_eq!(auth.token_access("admin-t"), Some(Access::Admin));
        assert_eq!(auth.token_access("read-t"), Some(Access::Read));
        assert_eq!(auth.token_access("read-"), None);
        let headers = |name, value: &str| {
            HeaderMap::from_iter([(name, HeaderValue::from_str(value).unwrap())])
        };
        let bearer = headers(header::AUTHORIZATION, "Bearer read-t");
        assert_eq!(auth.accepts(&bearer), Some(Access::Read));
        let read_cookie = auth.set_cookie(Access::Read);
        let admin_cookie = auth.set_cookie(Access::Admin);
        assert_ne!(read_cookie, admin_cookie);
        assert!(!read_cookie.contains("read-t"), "{read_cookie}");
        let pair = read_cookie.split(';').next().unwrap();
        assert_eq!(
            auth.accepts(&headers(header::COOKIE, pair)),
            Some(Access::Read)
        );
        // Without a read token, its cookie value means nothing.
        let admin_only = Auth::new("admin-t", None);
        assert_eq!(admin_only.accepts(&headers(header::COOKIE, pair)), None);
        assert_eq!(admin_only.token_access("read-t"), None);
    }

    #[test]
    fn targets_never_name_another_host() {
        for local in ["/", "/runs/x", "/%2F%2Fevil.example", "/a//b", "/a\\b"] {
            assert_eq!(local_target(local), local);
        }
        for foreign in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example",
            "%2F%2Fevil.example",
            "/\t/evil.example",
            "",
            "evil.example",
        ] {
            assert_eq!(local_target(foreign), "/", "{foreign:?}");
            let page = login_page("why", foreign);
            assert!(!page.contains("evil"), "{page}");
        }
    }

    #[test]
    fn open_apis_stay_on_loopback_unless_allowed() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(check_exposure(lo, None, None, false).is_ok());
        assert!(check_exposure(lo, None, Some("r3ad"), false).is_err());
        assert!(check_exposure(lo, Some("same"), Some("same"), false).is_err());
        assert!(check_exposure(any, Some("t0ken"), Some("r3ad"), false).is_ok());
        assert!(
            check_exposure(any, None, None, false)
                .unwrap_err()
                .contains("--token")
        );
        assert!(check_exposure(any, None, None, true).is_ok());
        assert!(check_exposure(any, Some("t0ken"), None, false).is_ok());
        assert!(check_exposure(lo, Some("has space"), None, false).is_err());
        assert!(check_token("").is_err());
    }
}
