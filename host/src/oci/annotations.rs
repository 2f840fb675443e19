//! berth's own annotations (`berth.dev/...`).
use crate::caps::net::{NetPolicy, RuleError};
use std::collections::HashMap;
use std::time::Duration;

pub const NET_CONNECT: &str = "berth.dev/net-connect";
pub const NET_LISTEN: &str = "berth.dev/net-listen";
pub const NET_LOOKUP: &str = "berth.dev/net-lookup";
pub const TIMEOUT: &str = "berth.dev/timeout";
pub const HTTP_LISTEN: &str = "berth.dev/http-listen";
pub const HTTP_OUTBOUND: &str = "berth.dev/http-outbound";
/// Requests a served component handles at once (more wait, then get 503).
pub const HTTP_MAX_CONCURRENCY: &str = "berth.dev/http-max-concurrency";
/// Largest request body a served component is given (larger: 413).
pub const HTTP_MAX_BODY: &str = "berth.dev/http-max-body";
/// Connections a served component keeps open at once (more wait to be accepted).
pub const HTTP_MAX_CONNECTIONS: &str = "berth.dev/http-max-connections";
/// How long a client may take to send a request's head (then: closed).
pub const HTTP_HEADER_TIMEOUT: &str = "berth.dev/http-header-timeout";
/// The guest environment variable that sets where a wasi:http guest is served.
pub const HTTP_ADDR_ENV: &str = "BERTH_HTTP_ADDR";
/// Where wasi:http guests are served when nothing says otherwise.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {key}: {error}")]
    Net { key: &'static str, error: RuleError },
    #[error("annotation {key}={value:?} is not a positive duration; use e.g. 30s, 500ms or 2m")]
    Duration { key: &'static str, value: String },
    #[error("{key}={value:?} is not a listen address; use IP:PORT, e.g. 0.0.0.0:8080 or 127.0.0.1:3000")]
    Addr { key: &'static str, value: String },
    #[error("annotation {key}={value:?} is not a boolean; use true or false")]
    Bool { key: &'static str, value: String },
    #[error("annotation {key}={value:?} is not a number from 1 to {max}")]
    Count { key: &'static str, value: String, max: usize },
    #[error("annotation {key}={value:?}: {reason}")]
    Size { key: &'static str, value: String, reason: String },
}

/// Reads `berth.dev/http-max-concurrency`.
pub fn http_max_concurrency(a: &HashMap<String, String>) -> Result<Option<usize>, AnnotationError> {
    count(a, HTTP_MAX_CONCURRENCY, 100_000)
}

/// Reads `berth.dev/http-max-connections`.
pub fn http_max_connections(a: &HashMap<String, String>) -> Result<Option<usize>, AnnotationError> {
    count(a, HTTP_MAX_CONNECTIONS, 1_000_000)
}

/// Reads `berth.dev/http-header-timeout`.
pub fn http_header_timeout(a: &HashMap<String, String>) -> Result<Option<Duration>, AnnotationError> {
    duration(a, HTTP_HEADER_TIMEOUT)
}

fn count(a: &HashMap<String, String>, key: &'static str, max: usize) -> Result<Option<usize>, AnnotationError> {
    a.get(key)
        .map(|v| v.trim().parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| AnnotationError::Count { key, value: v.clone(), max }))
        .transpose()
}

fn duration(a: &HashMap<String, String>, key: &'static str) -> Result<Option<Duration>, AnnotationError> {
    a.get(key).map(|v| parse_duration(v).ok_or_else(|| AnnotationError::Duration { key, value: v.clone() })).transpose()
}

/// Reads `berth.dev/http-max-body` (a size: `1048576`, `512KiB`, `16MiB`).
pub fn http_max_body(a: &HashMap<String, String>) -> Result<Option<u64>, AnnotationError> {
    a.get(HTTP_MAX_BODY)
        .map(|v| crate::size::parse_size(v).map_err(|e| AnnotationError::Size { key: HTTP_MAX_BODY, value: v.clone(), reason: e.to_string() }))
        .transpose()
}

/// Reads the network policy from `berth.dev/net-*` annotations.
pub fn net_policy(a: &HashMap<String, String>) -> Result<NetPolicy, AnnotationError> {
    let mut p = NetPolicy::default();
    for (key, out) in [(NET_CONNECT, &mut p.connect), (NET_LISTEN, &mut p.listen)] {
        if let Some(v) = a.get(key) {
            NetPolicy::parse_list(v, out).map_err(|error| AnnotationError::Net { key, error })?;
        }
    }
    if let Some(v) = a.get(NET_LOOKUP) {
        p.name_lookup = parse_bool(v).ok_or_else(|| AnnotationError::Bool { key: NET_LOOKUP, value: v.clone() })?;
    }
    Ok(p)
}

/// Reads `berth.dev/timeout`.
pub fn timeout(a: &HashMap<String, String>) -> Result<Option<Duration>, AnnotationError> {
    duration(a, TIMEOUT)
}

/// Where a wasi:http guest is served: the process's `BERTH_HTTP_ADDR`,
/// else `berth.dev/http-listen`, else `None` (the default address).
pub fn http_listen(a: &HashMap<String, String>, env: &[(String, String)]) -> Result<Option<std::net::SocketAddr>, AnnotationError> {
    let from_env = env.iter().rev().find(|(k, _)| k == HTTP_ADDR_ENV).map(|(_, v)| (HTTP_ADDR_ENV, v));
    let Some((key, value)) = from_env.or_else(|| a.get(HTTP_LISTEN).map(|v| (HTTP_LISTEN, v))) else {
        return Ok(None);
    };
    value.trim().parse().map(Some).map_err(|_| AnnotationError::Addr { key, value: value.clone() })
}

/// Parses `30s`, `500ms`, `2m`, `1h 5m`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok().filter(|d| !d.is_zero())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_serving_limits_are_read_and_bad_ones_named() {
        let ann = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(http_max_concurrency(&ann(HTTP_MAX_CONCURRENCY, "8")).unwrap(), Some(8));
        assert_eq!(http_max_concurrency(&HashMap::new()).unwrap(), None);
        for bad in ["0", "-1", "many", "100001"] {
            let e = http_max_concurrency(&ann(HTTP_MAX_CONCURRENCY, bad)).unwrap_err().to_string();
            assert!(e.contains(HTTP_MAX_CONCURRENCY) && e.contains(bad), "{e}");
        }
        assert_eq!(http_max_body(&ann(HTTP_MAX_BODY, "512KiB")).unwrap(), Some(512 << 10));
        let e = http_max_body(&ann(HTTP_MAX_BODY, "lots")).unwrap_err().to_string();
        assert!(e.contains(HTTP_MAX_BODY) && e.contains("lots"), "{e}");
        assert_eq!(http_max_connections(&ann(HTTP_MAX_CONNECTIONS, "100")).unwrap(), Some(100));
        let e = http_max_connections(&ann(HTTP_MAX_CONNECTIONS, "0")).unwrap_err().to_string();
        assert!(e.contains(HTTP_MAX_CONNECTIONS), "{e}");
        assert_eq!(http_header_timeout(&ann(HTTP_HEADER_TIMEOUT, "2s")).unwrap(), Some(Duration::from_secs(2)));
        let e = http_header_timeout(&ann(HTTP_HEADER_TIMEOUT, "0s")).unwrap_err().to_string();
        assert!(e.contains(HTTP_HEADER_TIMEOUT) && e.contains("positive duration"), "{e}");
    }

    #[test]
    fn reads_annotations() {
        let mut a = HashMap::new();
        a.insert(NET_CONNECT.to_string(), "127.0.0.1/32:80,udp/10.0.0.0/8:53".to_string());
        a.insert(TIMEOUT.to_string(), "1m 30s".to_string());
        let p = net_policy(&a).unwrap();
        assert_eq!(p.connect.len(), 2);
        assert!(p.listen.is_empty() && !p.name_lookup);
        assert_eq!(timeout(&a).unwrap(), Some(Duration::from_secs(90)));
        a.insert(TIMEOUT.to_string(), "soon".to_string());
        assert!(timeout(&a).unwrap_err().to_string().contains("berth.dev/timeout"));
        a.insert(NET_LISTEN.to_string(), "nope".to_string());
        assert!(net_policy(&a).unwrap_err().to_string().contains("berth.dev/net-listen"));
    }

    #[test]
    fn the_http_address_comes_from_the_env_then_the_annotation() {
        let mut a = HashMap::new();
        assert_eq!(http_listen(&a, &[]).unwrap(), None);
        a.insert(HTTP_LISTEN.to_string(), "127.0.0.1:3000".to_string());
        assert_eq!(http_listen(&a, &[]).unwrap(), Some("127.0.0.1:3000".parse().unwrap()));
        let env = vec![(HTTP_ADDR_ENV.to_string(), "[::1]:9000".to_string())];
        assert_eq!(http_listen(&a, &env).unwrap(), Some("[::1]:9000".parse().unwrap()));
        a.insert(HTTP_LISTEN.to_string(), "localhost".to_string());
        let e = http_listen(&a, &[]).unwrap_err().to_string();
        assert!(e.contains("berth.dev/http-listen") && e.contains("IP:PORT"), "{e}");
    }
}
