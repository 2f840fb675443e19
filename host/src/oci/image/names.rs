//! Image names, normalized as containerd and Docker spell them in full:
//! `app:1` is `docker.io/library/app:1`, a missing tag is `latest`.
use oci_spec::distribution::Reference;

#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not a valid image name ({reason}); use e.g. example.com/app:1.0")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

/// The full form of an image name.
pub fn normalize(name: &str) -> Result<String, NameError> {
    let r: Reference = name.parse().map_err(|e: oci_spec::distribution::ParseError| NameError { name: name.into(), reason: e.to_string() })?;
    Ok(r.whole())
}

/// The tag of a full name (`latest` when it has only a digest).
pub fn tag(full: &str) -> String {
    full.parse::<Reference>().ok().and_then(|r| r.tag().map(String::from)).unwrap_or_else(|| "latest".into())
}

/// The last path element of the repository: `example.com/team/app:1` -> `app`.
pub fn short(full: &str) -> String {
    match full.parse::<Reference>() {
        Ok(r) => r.repository().rsplit('/').next().unwrap_or("image").to_string(),
        Err(_) => "image".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("app").unwrap(), "docker.io/library/app:latest");
        assert_eq!(normalize("app:1").unwrap(), "docker.io/library/app:1");
        assert_eq!(normalize("example.com/app:1.0").unwrap(), "example.com/app:1.0");
        assert_eq!(normalize("localhost:5000/x/y").unwrap(), "localhost:5000/x/y:latest");
        assert_eq!(tag("example.com/app:1.0"), "1.0");
        assert_eq!(short("example.com/team/app:1.0"), "app");
        for bad in ["", "UPPER/case", "a b", "app:", "../x"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }
}
