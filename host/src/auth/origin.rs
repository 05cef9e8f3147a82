//! Where a request comes from, as a browser would tell it: the `Host` allow-list (against DNS
//! rebinding) and the cross-site check (against requests forged by other web pages). Both are
//! pure functions of the request's headers, the peer address and the [`OriginPolicy`].
//!
//! A page on another site can make a browser send "simple" requests (form posts, `no-cors`
//! fetches with `text/plain`) that carry the session cookie, or, with auth off, no credential at
//! all. It cannot add an `Authorization` header without a CORS preflight, which this host never
//! grants; so requests with a bearer credential are exempt from the cross-site check, and every
//! other request with an unsafe method must come from the host's own origin or a trusted one.

use axum::http::{header, HeaderMap, Method};
use std::net::IpAddr;

/// The settings behind the checks (from the host config).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Enforce the `Host` allow-list.
    pub check_host: bool,
    /// Host names (lower case, no port) accepted in `Host`; `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lower case) accepted besides the host's own.
    pub trusted_origins: Vec<String>,
    /// Peers whose `X-Forwarded-Host` / `Forwarded: host=` are believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("Host header missing: this host answers only requests naming it")]
    NoHost,
    #[error("Host {0:?} is not one this host answers to (DNS rebinding protection): add it to allowed_hosts")]
    HostNotAllowed(String),
    #[error("Cross-site request refused (Origin {0}): use the API from the host's own pages, a trusted origin (trusted_origins) or with a token")]
    CrossSite(String),
}

impl OriginPolicy {
    /// The policy for a host listening on `listen`: loopback names, the listen address and the
    /// configured names. `enforce` says whether the `Host` check runs at all.
    pub fn new(
        listen: std::net::SocketAddr,
        extra_hosts: &[String],
        trusted_origins: &[String],
        trusted_proxies: &[IpAddr],
        enforce: bool,
    ) -> OriginPolicy {
        let mut allowed: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !listen.ip().is_unspecified() {
            allowed.push(listen.ip().to_string());
        }
        allowed.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        OriginPolicy {
            check_host: enforce,
            allowed_hosts: allowed,
            trusted_origins: trusted_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
            trusted_proxies: trusted_proxies.to_vec(),
        }
    }

    /// The `host[:port]` the browser used: the forwarded one when the peer is a trusted proxy,
    /// else the `Host` header.
    pub fn effective_host(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<String> {
        if peer.is_some_and(|p| self.trusted_proxies.contains(&p)) {
            if let Some(h) = forwarded_host(headers) {
                return Some(h);
            }
        }
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
    }

    /// The `Host` allow-list (when enforced).
    pub fn check_host(&self, host: Option<&str>) -> Result<(), OriginError> {
        if !self.check_host || self.allowed_hosts.iter().any(|h| h == "*") {
            return Ok(());
        }
        let host = host.ok_or(OriginError::NoHost)?;
        let name = host_name(host);
        if self.allowed_hosts.contains(&name) {
            Ok(())
        } else {
            Err(OriginError::HostNotAllowed(truncate(host)))
        }
    }

    /// The cross-site check for a request with an unsafe method and no bearer credential.
    pub fn check_same_origin(
        &self,
        method: &Method,
        headers: &HeaderMap,
        host: Option<&str>,
    ) -> Result<(), OriginError> {
        // A WebSocket upgrade is a GET that a cross-site page can make a browser send, with
        // its cookies, and that then acts: it is checked like a POST.
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !upgrade {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = normalize_origin(origin.to_str().unwrap_or("null"));
            let own = host.is_some_and(|h| {
                origin == format!("http://{h}") || origin == format!("https://{h}")
            });
            if own || self.trusted_origins.contains(&origin) {
                return Ok(());
            }
            return Err(OriginError::CrossSite(truncate(&origin)));
        }
        // No Origin: not a browser, or an old one; `Sec-Fetch-Site` still tells a forged one.
        match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some("same-origin") | Some("none") | None => Ok(()),
            Some(other) => Err(OriginError::CrossSite(format!(
                "unknown, Sec-Fetch-Site {other}"
            ))),
        }
    }
}

/// Whether the request carries `Authorization: Bearer ...` (a token or the cluster secret),
/// which no other site's page can make a browser send.
pub fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
}

/// `scheme://host[:port]` in lower case without a trailing slash, as browsers send it.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Checks a configured origin: `http(s)://host[:port]`, nothing after.
pub fn valid_origin(origin: &str) -> bool {
    let o = normalize_origin(origin);
    let Some(rest) = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])
}

/// The host name of `host[:port]` (brackets of an IPv6 literal removed).
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// The host the last proxy saw: `X-Forwarded-Host` (its last value), else `Forwarded: host=`
/// of the last element (each proxy appends its own).
fn forwarded_host(headers: &HeaderMap) -> Option<String> {
    let last = |v: &str| v.rsplit(',').next().map(|s| s.trim().to_string());
    if let Some(h) = headers
        .get_all("x-forwarded-host")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(last)
        .filter(|s| !s.is_empty())
    {
        return Some(h.to_ascii_lowercase());
    }
    let element = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(last)?;
    element
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim_matches('"').to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// Keeps echoed header values short in error messages.
fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn policy() -> OriginPolicy {
        OriginPolicy::new(
            "127.0.0.1:8000".parse().unwrap(),
            &["ferry.lab".into()],
            &["http://localhost:5173".into()],
            &["10.0.0.9".parse().unwrap()],
            true,
        )
    }

    #[test]
    fn host_allow_list_takes_loopback_listen_and_configured_names() {
        let p = policy();
        for ok in [
            "localhost:8000",
            "127.0.0.1:8000",
            "[::1]:8000",
            "FERRY.lab",
            "ferry.lab:80",
        ] {
            assert_eq!(p.check_host(Some(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "127.0.0.1.evil.example",
            "localhost.evil:8000",
        ] {
            assert!(
                matches!(p.check_host(Some(bad)), Err(OriginError::HostNotAllowed(_))),
                "{bad}"
            );
        }
        assert_eq!(p.check_host(None), Err(OriginError::NoHost));
        let off = OriginPolicy {
            check_host: false,
            ..policy()
        };
        assert_eq!(off.check_host(Some("evil.example")), Ok(()));
    }

    #[test]
    fn forwarded_host_is_believed_only_from_trusted_proxies() {
        let p = policy();
        let h = headers(&[
            ("host", "127.0.0.1:8000"),
            ("x-forwarded-host", "localhost:5173"),
        ]);
        assert_eq!(
            p.effective_host(&h, Some("10.0.0.9".parse().unwrap()))
                .as_deref(),
            Some("localhost:5173")
        );
        assert_eq!(
            p.effective_host(&h, Some("10.0.0.8".parse().unwrap()))
                .as_deref(),
            Some("127.0.0.1:8000")
        );
        let f = headers(&[
            ("host", "x"),
            (
                "forwarded",
                "for=1.2.3.4;host=a.b, for=5.6.7.8;host=\"dash.lab:443\";proto=https",
            ),
        ]);
        assert_eq!(
            p.effective_host(&f, Some("10.0.0.9".parse().unwrap()))
                .as_deref(),
            Some("dash.lab:443")
        );
    }

    #[test]
    fn unsafe_methods_need_the_own_or_a_trusted_origin() {
        let p = policy();
        let post = Method::POST;
        let own = headers(&[("origin", "http://127.0.0.1:8000")]);
        assert_eq!(
            p.check_same_origin(&post, &own, Some("127.0.0.1:8000")),
            Ok(())
        );
        let trusted = headers(&[("origin", "http://localhost:5173/")]);
        assert_eq!(
            p.check_same_origin(&post, &trusted, Some("127.0.0.1:8000")),
            Ok(())
        );
        for bad in ["http://evil.example", "null", "http://127.0.0.1:8001"] {
            let h = {
                let mut h = HeaderMap::new();
                h.insert("origin", HeaderValue::from_str(bad).unwrap());
                h
            };
            assert!(
                p.check_same_origin(&post, &h, Some("127.0.0.1:8000"))
                    .is_err(),
                "{bad}"
            );
        }
        let fetch_site = headers(&[("sec-fetch-site", "same-site")]);
        assert!(p
            .check_same_origin(&post, &fetch_site, Some("127.0.0.1:8000"))
            .is_err());
        assert_eq!(
            p.check_same_origin(&post, &HeaderMap::new(), Some("127.0.0.1:8000")),
            Ok(()),
            "not a browser"
        );
        let evil = headers(&[("origin", "http://evil.example")]);
        assert_eq!(
            p.check_same_origin(&Method::GET, &evil, Some("127.0.0.1:8000")),
            Ok(()),
            "reads are not forged actions"
        );
        let evil_upgrade = headers(&[("origin", "http://evil.example"), ("upgrade", "websocket")]);
        assert!(
            p.check_same_origin(&Method::GET, &evil_upgrade, Some("127.0.0.1:8000"))
                .is_err(),
            "a WebSocket upgrade acts: checked like a POST"
        );
    }

    #[test]
    fn configured_origins_are_checked() {
        assert!(valid_origin("https://dash.lab:8443"));
        assert!(valid_origin("http://localhost:5173/"));
        for bad in [
            "dash.lab",
            "ftp://x",
            "http://",
            "http://a/b",
            "https://a?x",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }
}
