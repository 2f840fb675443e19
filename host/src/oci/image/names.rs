//! Image names, normalized as containerd and Docker spell them in full:
//! `app:1` is `docker.io/library/app:1`, a missing tag is `latest`.
//!
//! The grammar is the distribution reference grammar, parsed by hand: the
//! usual regular expression costs tens of milliseconds to compile, more
//! than starting a whole wasm container.

#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not a valid image name ({reason}); use e.g. example.com/app:1.0")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// A parsed reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A host name or IP with optional port: `example.com`, `localhost:5000`, `[::1]:5000`.
fn domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric() && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
fn tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
}

/// Parses and normalizes a reference (Docker Hub defaults filled in).
pub fn parse(name: &str) -> Result<Reference, NameError> {
    let err = |reason| NameError { name: name.into(), reason };
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => {
            super::digest::hex_of(d).map_err(|_| err("the digest must be sha256:<64 hex digits>"))?;
            (r, Some(d.to_string()))
        }
        None => (name, None),
    };
    // A ':' after the last '/' starts the tag.
    let last = rest.rsplit_once('/').map(|(_, l)| l).unwrap_or(rest);
    let (rest, tag_part) = match last.rsplit_once(':') {
        Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(t.to_string())),
        None => (rest, None),
    };
    if let Some(t) = &tag_part {
        if !tag(t) {
            return Err(err("a tag is letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'"));
        }
    }
    let (dom, path) = match rest.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" || d.starts_with('[') => (d.to_string(), p.to_string()),
        _ => ("docker.io".to_string(), rest.to_string()),
    };
    if !domain(&dom) {
        return Err(err("the registry part is not a host name with an optional port"));
    }
    let path = if dom == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
    if path.is_empty() || !path.split('/').all(path_component) {
        return Err(err("repository parts are lowercase letters and digits, joined by '.', '_', '__' or '-'"));
    }
    if dom.len() + 1 + path.len() > 255 {
        return Err(err("the name is longer than 255 characters"));
    }
    let tag = tag_part.or_else(|| digest.is_none().then(|| "latest".to_string()));
    Ok(Reference { domain: dom, path, tag, digest })
}

/// The full form of an image name.
pub fn normalize(name: &str) -> Result<String, NameError> {
    parse(name).map(|r| r.to_string())
}

/// The tag of a full name (`latest` when it has only a digest).
pub fn tag_of(full: &str) -> String {
    parse(full).ok().and_then(|r| r.tag).unwrap_or_else(|| "latest".into())
}

/// The last path element of the repository: `example.com/team/app:1` -> `app`.
pub fn short(full: &str) -> String {
    parse(full).ok().and_then(|r| r.path.rsplit('/').next().map(String::from)).unwrap_or_else(|| "image".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let cases = [
            ("app", "docker.io/library/app:latest"),
            ("app:1", "docker.io/library/app:1"),
            ("example.com/app:1.0", "example.com/app:1.0"),
            ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("team/app", "docker.io/team/app:latest"),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("team/a__b.c-d---e_f:T_1.x-y", "docker.io/team/a__b.c-d---e_f:T_1.x-y"),
            ("[::1]:5000/app:2", "[::1]:5000/app:2"),
            (
                "example.com/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "example.com/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        assert_eq!(tag_of("example.com/app:1.0"), "1.0");
        assert_eq!(short("example.com/team/app:1.0"), "app");
        for bad in ["", "UPPER/case", "a b", "app:", "../x", "a//b", "-a", "a-", "a..b", "app:.x", "example.com/", "x@sha256:12", "ex ample.com/a", "a/b:c:d"] {
            assert!(normalize(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(normalize(&format!("a/{}", "b".repeat(300))).is_err());
    }
}
