//! Directory grants: `HOST:GUEST[:ro|:rw]`.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A host directory granted to the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub readonly: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("invalid --dir {spec:?}: {reason}; expected HOST:GUEST[:ro], e.g. ./data:/data:ro")]
    Syntax { spec: String, reason: &'static str },
    #[error("--dir {spec:?}: host path {host} is not a directory; grant a directory")]
    NotADirectory { spec: String, host: PathBuf },
    #[error("--dir {spec:?}: host directory {host} is not usable")]
    Host {
        spec: String,
        host: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parses one `HOST:GUEST[:ro|:rw]` grant. `HOST` alone grants it at the
/// same path. The host path must be an existing directory; it is made
/// absolute so the plan does not depend on the current directory.
pub fn parse_dir(spec: &str) -> Result<Preopen, DirError> {
    let syntax = |reason| DirError::Syntax { spec: spec.to_string(), reason };
    let (rest, readonly) = match spec.rsplit_once(':') {
        Some((rest, "ro")) => (rest, true),
        Some((rest, "rw")) => (rest, false),
        _ => (spec, false),
    };
    let (host, guest) = match rest.split_once(':') {
        Some((h, g)) => (h, g.to_string()),
        None => (rest, rest.to_string()),
    };
    if host.is_empty() {
        return Err(syntax("the host directory is empty"));
    }
    if guest.is_empty() {
        return Err(syntax("the guest path is empty"));
    }
    if guest.contains(':') {
        return Err(syntax("too many ':' (the last field may only be ro or rw)"));
    }
    if !guest.starts_with('/') && guest != "." {
        return Err(syntax("the guest path must be absolute"));
    }
    if guest.split('/').any(|c| c == "..") {
        return Err(syntax("the guest path must not contain '..'"));
    }
    let host_err = |source| DirError::Host { spec: spec.to_string(), host: PathBuf::from(host), source };
    let abs = std::fs::canonicalize(host).map_err(host_err)?;
    if !abs.is_dir() {
        return Err(DirError::NotADirectory { spec: spec.to_string(), host: abs });
    }
    Ok(Preopen { host: abs, guest, readonly })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().to_str().unwrap();
        let p = parse_dir(&format!("{h}:/data:ro")).unwrap();
        assert_eq!((p.guest.as_str(), p.readonly), ("/data", true));
        assert_eq!(p.host, d.path().canonicalize().unwrap());
        let p = parse_dir(&format!("{h}:/data")).unwrap();
        assert!(!p.readonly);
        let p = parse_dir(&format!("{h}:/w:rw")).unwrap();
        assert!(!p.readonly);
        let p = parse_dir(h).unwrap();
        assert_eq!(p.guest, h);
    }

    #[test]
    fn rejects_bad_specs() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().to_str().unwrap();
        for bad in [":/x", &format!("{h}:"), &format!("{h}:rel"), &format!("{h}:/a/../b"), &format!("{h}:/a:b:ro")] {
            let e = parse_dir(bad).unwrap_err().to_string();
            assert!(e.contains("expected HOST:GUEST"), "{bad}: {e}");
        }
        let e = parse_dir("/definitely/not/here:/x").unwrap_err().to_string();
        assert!(e.contains("/definitely/not/here") && e.contains("not usable"), "{e}");
        let f = d.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let e = parse_dir(&format!("{}:/x", f.display())).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
