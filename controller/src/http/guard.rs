//! Protections every answer gets: security headers, the Host and Origin checks that keep other
//! web sites away from a controller without a token, and request logs without the token.
//!
//! Without a token, a page on another site could still reach a loopback controller through the
//! victim's browser: by DNS rebinding (its own name resolving to 127.0.0.1, so the browser sends
//! that name as `Host`) or by a cross-site form post. A rebinding attack needs a name it
//! controls, so a `Host` that is an IP address, `localhost` or the public URL's host is
//! accepted, any other name refused; a write whose `Origin` is another host is refused.

use super::{ApiError, App};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// Scripts, styles, images and connections from this origin only, nothing inline but style
/// attributes (the UI sets some), no framing, no plugins, forms back to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every answer that does not set its own policy.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// Without a token: refuses a `Host` that may be a rebound name and a write from another site.
pub(crate) async fn same_site(State(app): State<App>, request: Request, next: Next) -> Response {
    if app.auth.is_some() {
        return next.run(request).await;
    }
    match check_same_site(
        request.method(),
        request.headers(),
        host_of(&app.public_url),
    ) {
        Ok(()) => next.run(request).await,
        Err(message) => ApiError::forbidden(message).into_response(),
    }
}

fn check_same_site(
    method: &Method,
    headers: &HeaderMap,
    public_host: Option<&str>,
) -> Result<(), String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host
        && !trusted_host(host_of(host).unwrap_or(""), public_host)
    {
        return Err(format!(
            "this controller has no token and does not answer for host {host:?}; open it by address, as localhost or at its --public-url, or set --token"
        ));
    }
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if writes && let Some(origin) = origin {
        let same = host.is_some_and(|h| authority_of(origin) == Some(h));
        if !same && !trusted_origin(origin, public_host) {
            return Err(format!(
                "this controller has no token and refuses {method} from the page at {origin:?}"
            ));
        }
    }
    Ok(())
}

/// A host no rebinding attack can send: an IP address, `localhost`, or the public URL's host.
fn trusted_host(host: &str, public_host: Option<&str>) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || public_host.is_some_and(|p| p.eq_ignore_ascii_case(&host))
}

/// An origin of this controller: a loopback address, `localhost` or the public URL's host.
fn trusted_origin(origin: &str, public_host: Option<&str>) -> bool {
    let Some(host) = authority_of(origin).and_then(host_of) else {
        return false; // `null` (a sandboxed frame, a file) or garbage
    };
    let host = host.to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host == "localhost"
        || public_host.is_some_and(|p| p.eq_ignore_ascii_case(&host))
}

/// `host[:port]` of `scheme://host[:port][/...]`.
fn authority_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then_some(authority)
}

/// The host of an authority (`host:port`, `[v6]:port`) or of a URL.
fn host_of(text: &str) -> Option<&str> {
    let authority = authority_of(text).unwrap_or(text);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// The URI as request logs show it: the value of a `token` query parameter replaced.
pub(crate) fn redacted(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=<redacted>"
            } else {
                pair
            }
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn rebound_names_are_refused() {
        let public = Some("drover.example.org");
        for host in [
            "127.0.0.1:8470",
            "localhost:8470",
            "app.localhost",
            "[::1]:8470",
            "10.1.2.3:8470",
            "drover.example.org",
            "DROVER.example.org:443",
        ] {
            let h = HeaderMap::from_iter([(header::HOST, HeaderValue::from_static(host))]);
            assert!(check_same_site(&Method::GET, &h, public).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8470",
            "localhost.evil.example",
            "",
        ] {
            let h = HeaderMap::from_iter([(header::HOST, HeaderValue::from_static(host))]);
            assert!(
                check_same_site(&Method::GET, &h, public).is_err(),
                "{host:?}"
            );
        }
    }

    #[test]
    fn writes_from_other_sites_are_refused() {
        let public = host_of("https://drover.example.org/");
        assert_eq!(public, Some("drover.example.org"));
        let ok = [
            &[("host", "127.0.0.1:8470")][..],
            &[
                ("host", "127.0.0.1:8470"),
                ("origin", "http://127.0.0.1:8470"),
            ],
            &[
                ("host", "10.0.0.2:8470"),
                ("origin", "http://10.0.0.2:8470"),
            ],
            &[
                ("host", "localhost:8470"),
                ("origin", "http://localhost:8470"),
            ],
            &[
                ("host", "drover.example.org"),
                ("origin", "https://drover.example.org"),
            ],
        ];
        for pairs in ok {
            assert!(
                check_same_site(&Method::POST, &headers(pairs), public).is_ok(),
                "{pairs:?}"
            );
        }
        let refused = [
            &[
                ("host", "127.0.0.1:8470"),
                ("origin", "https://evil.example"),
            ][..],
            &[("host", "127.0.0.1:8470"), ("origin", "null")],
            &[("host", "127.0.0.1:8470"), ("origin", "http://10.9.9.9")],
        ];
        for pairs in refused {
            assert!(
                check_same_site(&Method::POST, &headers(pairs), public).is_err(),
                "{pairs:?}"
            );
            assert!(
                check_same_site(&Method::GET, &headers(pairs), public).is_ok(),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn tokens_are_not_logged() {
        let uri: Uri = "/api/v1/runs?status=x&token=s3cret&b=1".parse().unwrap();
        let shown = redacted(&uri);
        assert_eq!(shown, "/api/v1/runs?status=x&token=<redacted>&b=1");
        let uri: Uri = "/runs/x".parse().unwrap();
        assert_eq!(redacted(&uri), "/runs/x");
    }
}
