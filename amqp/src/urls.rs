//! Broker address lists: several URLs in one setting (whitespace-separated, since commas are
//! legal in passwords), each given a short AMQP heartbeat, a connect timeout and a small frame
//! size unless it names its own.

/// Seconds between AMQP heartbeats unless a URL says `heartbeat=N`. lapin closes a connection
/// that has heard nothing for more than two heartbeat intervals, checking at least every half
/// interval, so a silently dead broker or network is noticed 20 to 25 s after the last frame,
/// under the controller's default 30 s lease; the connection is replaced on its next use.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// The URLs of a broker setting, in order; empty when the setting holds none.
pub fn split(spec: &str) -> Vec<String> {
    spec.split_whitespace().map(str::to_string).collect()
}

/// Milliseconds a connection attempt may take unless a URL says `connection_timeout=N`, so an
/// unreachable first broker of a list delays the next one by at most this much.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 10_000;

/// Largest AMQP frame asked for unless a URL says `frame_max=N`. lapin keeps a send and a
/// receive ring of 32 frames per connection and writes both whole when they grow to the agreed
/// frame size, so the broker's 128 KiB default costs 8 MiB of resident memory per connection;
/// 16 KiB costs at most 1 MiB. A message
/// larger than a frame is sent as several frames, which matters only for messages far larger
/// than drover's (jobs and events of a few KiB, log chunks of at most 64 KiB).
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// `url` with `heartbeat`, `connection_timeout` and `frame_max` in its query, each unless it
/// sets it already.
pub fn with_defaults(url: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let query = base
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .to_string();
    let mut out = base.to_string();
    for (key, value) in [
        ("heartbeat", DEFAULT_HEARTBEAT_SECS.to_string()),
        ("connection_timeout", DEFAULT_CONNECT_TIMEOUT_MS.to_string()),
        ("frame_max", DEFAULT_FRAME_MAX.to_string()),
    ] {
        if query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(key))
        {
            continue;
        }
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&format!("{key}={value}"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Every URL of a setting with its password hidden, for messages.
pub fn redact_all(spec: &str) -> String {
    spec.split_whitespace()
        .map(super::redact)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_any_whitespace_and_keeps_commas() {
        assert_eq!(
            split(" amqp://u:p,w@a:5672/%2f\n\tamqp://u:p@b:5672/%2f  "),
            ["amqp://u:p,w@a:5672/%2f", "amqp://u:p@b:5672/%2f"]
        );
        assert!(split("  ").is_empty());
    }

    #[test]
    fn adds_a_heartbeat_a_timeout_and_a_frame_size_unless_the_url_names_them() {
        assert_eq!(
            with_defaults("amqp://a:5672/%2f"),
            "amqp://a:5672/%2f?heartbeat=10&connection_timeout=10000&frame_max=16384"
        );
        assert_eq!(
            with_defaults("amqp://a:5672/%2f?frame_max=8192"),
            "amqp://a:5672/%2f?frame_max=8192&heartbeat=10&connection_timeout=10000"
        );
        assert_eq!(
            with_defaults("amqp://a:5672/%2f?heartbeat=0&connection_timeout=500"),
            "amqp://a:5672/%2f?heartbeat=0&connection_timeout=500&frame_max=16384"
        );
        let parsed: lapin::uri::AMQPUri = with_defaults("amqp://a:5672/%2f").parse().unwrap();
        assert_eq!(parsed.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        assert_eq!(parsed.query.frame_max, Some(DEFAULT_FRAME_MAX));
    }

    #[test]
    fn hides_every_password() {
        assert_eq!(
            redact_all("amqp://u:one@a/%2f amqp://u:two@b/%2f"),
            "amqp://u:***@a/%2f amqp://u:***@b/%2f"
        );
    }
}
