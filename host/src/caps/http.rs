//! Outbound HTTP allow-list for wasi:http guests (`--http-outbound`,
//! `berth.dev/http-outbound`): origins as `scheme://host[:port]`, where the
//! host may start with `*.` to allow every subdomain (not the bare domain).
//! A request is allowed only when the URI the guest sends to matches; no
//! inbound header takes part in the decision.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOrigin {
    pub scheme: String,
    /// Lowercase host, or `*.suffix`.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("outbound origin {0:?} is not of the form http[s]://HOST[:PORT] (HOST may start with *.), e.g. https://api.example.com")]
pub struct OriginError(pub String);

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

impl std::str::FromStr for HttpOrigin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || OriginError(s.to_string());
        let (scheme, rest) = s.split_once("://").ok_or_else(err)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(err());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(err());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p.parse::<u16>().map_err(|_| err())?)),
            _ => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)) {
            return Err(err());
        }
        Ok(HttpOrigin { port: port.unwrap_or_else(|| default_port(&scheme)), scheme, host })
    }
}

impl HttpOrigin {
    /// Parses a comma-separated list, appending to `out`.
    pub fn parse_list(list: &str, out: &mut Vec<HttpOrigin>) -> Result<(), OriginError> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(item.parse()?);
        }
        Ok(())
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(suffix) && host.as_bytes()[host.len() - suffix.len() - 1] == b'.',
            None => self.host == host,
        };
        self.scheme == scheme && host_ok && self.port == port
    }
}

/// Whether a request to `uri` is allowed by `allowed`.
pub fn allows(allowed: &[HttpOrigin], uri: &http::Uri) -> bool {
    let Some(scheme) = uri.scheme_str().map(str::to_ascii_lowercase) else { return false };
    let Some(host) = uri.host().map(str::to_ascii_lowercase) else { return false };
    let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
    allowed.iter().any(|o| o.matches(&scheme, &host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn origins_match_exactly() {
        let mut list = Vec::new();
        HttpOrigin::parse_list("https://api.example.com, http://*.svc.cluster.local:8080,http://127.0.0.1:9000/", &mut list).unwrap();
        assert!(allows(&list, &uri("https://api.example.com/v1?x=1")));
        assert!(allows(&list, &uri("https://API.example.com:443/")));
        assert!(!allows(&list, &uri("http://api.example.com/")), "scheme differs");
        assert!(!allows(&list, &uri("https://api.example.com:8443/")), "port differs");
        assert!(!allows(&list, &uri("https://api.example.com.evil.net/")));
        assert!(!allows(&list, &uri("https://evilapi.example.com/")));
        assert!(allows(&list, &uri("http://db.ns.svc.cluster.local:8080/")));
        assert!(!allows(&list, &uri("http://svc.cluster.local:8080/")), "*. needs a subdomain");
        assert!(!allows(&list, &uri("http://x.svc.cluster.local.evil:8080/")));
        assert!(allows(&list, &uri("http://127.0.0.1:9000/ping")));
        assert!(!allows(&list, &uri("http://127.0.0.1:9001/ping")));
        assert!(!allows(&list, &uri("/relative")));
        assert!(!allows(&[], &uri("https://api.example.com/")), "empty list denies all");
        for bad in ["api.example.com", "ftp://x", "https://", "https://a/b", "https://a:port", "https://*", "https://a.*.b", "https://u@a"] {
            assert!(bad.parse::<HttpOrigin>().is_err(), "{bad}");
        }
    }
}
