//! The controller URLs a client is given (`--url`, repeated or whitespace-separated): which
//! addresses count as listed (the only ones the token is sent to and redirects are followed
//! to), the order they are tried in, and the error when none answers as the active controller.

use reqwest::Url;
use std::fmt;
use std::time::{Duration, Instant};

/// The listed controller URLs, in order.
#[derive(Debug, Clone)]
pub struct Controllers {
    bases: Vec<String>,
    parsed: Vec<Url>,
}

impl Controllers {
    /// The URLs as given (each without trailing slashes); at least one, each an http(s) URL.
    pub fn new(urls: Vec<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !urls.is_empty(),
            "no controller URL: set --url (or DROVER_URL, or `url` in drover.toml)"
        );
        let mut parsed = Vec::new();
        for url in &urls {
            let u = Url::parse(url).map_err(|e| {
                anyhow::anyhow!("--url {url:?} is not a URL ({e}); e.g. http://127.0.0.1:8470")
            })?;
            anyhow::ensure!(
                matches!(u.scheme(), "http" | "https") && u.host().is_some(),
                "--url {url:?} is not an http:// or https:// URL with a host"
            );
            parsed.push(u);
        }
        Ok(Self {
            bases: urls,
            parsed,
        })
    }

    pub fn len(&self) -> usize {
        self.bases.len()
    }

    pub fn base(&self, i: usize) -> &str {
        &self.bases[i]
    }

    /// The indices to try: the one that answered last (if any) first, then the others in order.
    pub fn order(&self, last: Option<usize>) -> Vec<usize> {
        let rest = (0..self.len()).filter(|i| Some(*i) != last);
        last.into_iter().chain(rest).collect()
    }

    /// The listed URL `target` lies under (same scheme, host and port, and a path at or below
    /// the listed one's), the one with the longest path when several do.
    pub fn listed_at(&self, target: &Url) -> Option<usize> {
        self.parsed
            .iter()
            .enumerate()
            .filter(|(_, base)| {
                let prefix = base.path().trim_end_matches('/');
                base.scheme() == target.scheme()
                    && base.host_str() == target.host_str()
                    && base.port_or_known_default() == target.port_or_known_default()
                    && target
                        .path()
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|(_, base)| base.path().trim_end_matches('/').len())
            .map(|(i, _)| i)
    }
}

/// What one listed controller answered when it was skipped.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub url: String,
    pub answer: String,
    /// It answered 503 as a controller that is starting or standing by: one is there, and may
    /// become (or stay behind) the active one.
    pub inactive: bool,
}

/// No listed URL answered as an active controller.
#[derive(Debug)]
pub struct NoActiveController {
    pub skipped: Vec<Skipped>,
}

impl NoActiveController {
    /// Whether waiting may help: a controller answered that it is starting or standing by, or
    /// there are several to fail over between (a takeover in progress).
    pub fn may_come_back(&self) -> bool {
        self.skipped.len() > 1 || self.skipped.iter().any(|s| s.inactive)
    }
}

impl fmt::Display for NoActiveController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.skipped.as_slice() {
            [one] if !one.inactive => write!(
                f,
                "cannot reach the controller at {}: {}; is it running? (set --url or DROVER_URL)",
                one.url, one.answer
            ),
            all => {
                write!(f, "no controller answered as the active one:")?;
                for s in all {
                    write!(f, "\n  {}: {}", s.url, s.answer)?;
                }
                write!(
                    f,
                    "\nlist every controller of the namespace with --url (repeated) or \
                     DROVER_URL (separated by spaces); a standby takes over within seconds of \
                     the active one's end"
                )
            }
        }
    }
}

impl std::error::Error for NoActiveController {}

/// How long a wait goes on while no listed controller answers as active, when one answered as
/// starting or standing by, or several are listed: a takeover takes about a second when the
/// active controller's process ends, and two missed 10 s heartbeats when its machine is gone.
pub const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Whether `e` is no controller answering during a failover that may still end, counting the
/// time since the first such error in `since`.
pub fn failing_over(e: &anyhow::Error, since: &mut Option<Instant>) -> bool {
    let Some(none) = e.downcast_ref::<NoActiveController>() else {
        return false;
    };
    let first = *since.get_or_insert_with(Instant::now);
    none.may_come_back() && first.elapsed() < FAILOVER_PATIENCE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controllers(urls: &[&str]) -> Controllers {
        Controllers::new(urls.iter().map(|u| u.to_string()).collect()).unwrap()
    }

    #[test]
    fn listed_means_the_same_origin_at_or_below_the_listed_path() {
        let c = controllers(&["http://a:8470", "https://b/drover"]);
        for ok in [
            "http://a:8470/api/v1/runs",
            "http://a:8470",
            "https://b:443/drover/api/v1/runs?x=1",
            "https://b/drover",
        ] {
            assert!(c.listed_at(&Url::parse(ok).unwrap()).is_some(), "{ok}");
        }
        for no in [
            "http://a:8471/api",
            "https://a:8470/api",
            "http://evil.example/api",
            "http://a.evil.example:8470/",
            "https://b/droverx/api",
            "https://b/other",
            "http://b/drover/api",
        ] {
            assert!(c.listed_at(&Url::parse(no).unwrap()).is_none(), "{no}");
        }
    }

    #[test]
    fn a_target_belongs_to_the_listed_url_with_the_longest_path() {
        let c = controllers(&["https://b", "http://a:1", "https://b/drover"]);
        let at = |u: &str| c.listed_at(&Url::parse(u).unwrap());
        assert_eq!(at("http://a:1/api/v1/runs"), Some(1));
        assert_eq!(at("https://b/drover/api"), Some(2));
        assert_eq!(at("https://b/other"), Some(0));
        assert_eq!(at("http://b/other"), None);
    }

    #[test]
    fn the_last_answering_controller_is_tried_first_then_the_others_in_order() {
        let c = controllers(&["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(c.order(None), [0, 1, 2]);
        assert_eq!(c.order(Some(1)), [1, 0, 2]);
    }

    #[test]
    fn bad_urls_are_refused_naming_them() {
        for bad in ["127.0.0.1:8470", "ftp://a", "http://"] {
            let e = Controllers::new(vec![bad.to_string()]).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(Controllers::new(Vec::new()).is_err());
    }

    #[test]
    fn the_error_names_each_url_and_its_answer() {
        let skipped = |url: &str, answer: &str, inactive| Skipped {
            url: url.into(),
            answer: answer.into(),
            inactive,
        };
        let one = NoActiveController {
            skipped: vec![skipped("http://a:1", "connection refused", false)],
        };
        assert!(!one.may_come_back());
        assert!(
            one.to_string()
                .contains("cannot reach the controller at http://a:1")
        );
        let two = NoActiveController {
            skipped: vec![
                skipped("http://a:1", "connection refused", false),
                skipped("http://b:2", "503 (standby): standing by", true),
            ],
        };
        assert!(two.may_come_back());
        let text = two.to_string();
        assert!(
            text.contains("http://a:1: connection refused")
                && text.contains("http://b:2: 503 (standby): standing by"),
            "{text}"
        );
    }
}
