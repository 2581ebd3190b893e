//! CSRF tokens for writes to a controller without an access token: any web page can make the
//! victim's browser post to a loopback address, so every POST must carry a token only this
//! controller's own pages (and clients that can read its answers) can have.
//!
//! `GET /api/v1/csrf` sets a cookie holding a random nonce and answers the token, the nonce
//! with its HMAC under a secret drawn when the process starts. A POST must send the token in
//! the `x-drover-csrf` header along with the cookie: another site can neither read the answer
//! nor forge the MAC, and the Host and Origin checks of [`super::guard`] stay in front. With a
//! token configured, writes need the admin token instead ([`super::auth`]).

use super::{ApiError, App};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_api::CsrfToken;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// The header a write carries its token in.
pub const HEADER: &str = CsrfToken::HEADER;

/// The per-process secret and the cookie name derived from the public URL (cookies ignore
/// ports, so controllers on one host keep apart).
pub(crate) struct Csrf {
    secret: [u8; 32],
    cookie: String,
}

impl Csrf {
    pub fn new(public_url: &str) -> Self {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let url_hash = hex::encode(Sha256::digest(public_url.as_bytes()));
        Self {
            secret,
            cookie: format!("drover_csrf_{}", &url_hash[..8]),
        }
    }

    fn mac(&self, nonce: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(nonce.as_bytes());
        mac
    }

    /// A fresh nonce and its token.
    fn issue(&self) -> (String, String) {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let tag = hex::encode(self.mac(&nonce).finalize().into_bytes());
        let token = format!("{nonce}.{tag}");
        (nonce, token)
    }

    /// Whether the request carries a token of this process matching its cookie.
    fn verify(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let token = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("no CSRF token (header x-drover-csrf)")?;
        let (nonce, tag) = token.split_once('.').ok_or("a malformed CSRF token")?;
        let tag = hex::decode(tag).map_err(|_| "a malformed CSRF token")?;
        self.mac(nonce)
            .verify_slice(&tag)
            .map_err(|_| "a CSRF token this controller did not issue")?;
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v);
        match cookie {
            Some(c) if c == nonce => Ok(()),
            Some(_) => Err("a CSRF token that does not match its cookie"),
            None => Err("a CSRF token without its cookie"),
        }
    }
}

/// `GET /api/v1/csrf`: a token, and the cookie it goes with.
pub async fn token(State(app): State<App>) -> Response {
    let (nonce, token) = app.csrf.issue();
    let cookie = format!("{}={nonce}", app.csrf.cookie);
    let set = format!("{cookie}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = Json(CsrfToken { token, cookie }).into_response();
    if let Ok(value) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Without an access token, refuses a POST that carries no valid CSRF token.
pub(crate) async fn require(State(app): State<App>, request: Request, next: Next) -> Response {
    if app.auth.is_some() || request.method() != Method::POST {
        return next.run(request).await;
    }
    match app.csrf.verify(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(why) => ApiError::forbidden(format!(
            "this controller has no token, so a POST must carry a CSRF token: this one has {why}; get one (and its cookie) from GET /api/v1/csrf, or set --token"
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>, cookie: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(HEADER, HeaderValue::from_str(t).unwrap());
        }
        if let Some(c) = cookie {
            h.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn a_token_is_valid_only_with_its_cookie_and_only_in_its_process() {
        let csrf = Csrf::new("http://127.0.0.1:8470");
        let (nonce, token) = csrf.issue();
        let cookie = format!("other=1; {}={nonce}", csrf.cookie);
        assert_eq!(csrf.verify(&headers(Some(&token), Some(&cookie))), Ok(()));
        assert!(csrf.verify(&headers(None, Some(&cookie))).is_err());
        assert!(csrf.verify(&headers(Some(&token), None)).is_err());
        let (other_nonce, _) = csrf.issue();
        let wrong = format!("{}={other_nonce}", csrf.cookie);
        assert!(csrf.verify(&headers(Some(&token), Some(&wrong))).is_err());
        let forged = format!("{nonce}.{}", "0".repeat(64));
        assert!(csrf.verify(&headers(Some(&forged), Some(&cookie))).is_err());
        let restarted = Csrf::new("http://127.0.0.1:8470");
        assert_eq!(restarted.cookie, csrf.cookie, "the name follows the URL");
        assert!(
            restarted
                .verify(&headers(Some(&token), Some(&cookie)))
                .is_err()
        );
    }
}
