//! Registry credentials in Docker's `config.json` format: berth's own file
//! (`$BERTH_ROOT/auth/config.json`, written by `berth image login`) first,
//! then the user's Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`), read only. Both may name credential helpers
//! (`credHelpers`, `credsStore`): `docker-credential-NAME get`.
use oci_client::secrets::RegistryAuth;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credentials file {path} is not valid JSON; fix or remove it")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the credentials file {path} has an entry for {registry} whose `auth` is not base64 of USER:PASSWORD")]
    BadEntry { path: PathBuf, registry: String },
    #[error("writing the credentials file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper { helper: String, registry: String, reason: String },
}

/// berth's own credentials file.
pub fn berth_file() -> PathBuf {
    crate::paths::root().join("auth/config.json")
}

/// The user's Docker config, when there is a home or DOCKER_CONFIG.
fn docker_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The keys a registry may be filed under (Docker Hub's historic one too).
fn keys(registry: &str) -> Vec<String> {
    let mut k = vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")];
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        k.extend(["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]);
    }
    k
}

fn load(path: &Path) -> Result<Option<Map<String, Value>>, AuthError> {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(AuthError::Json { path: path.into(), source: serde::de::Error::custom("the top level is not an object") }),
            Err(source) => Err(AuthError::Json { path: path.into(), source }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Read { path: path.into(), source }),
    }
}

/// The credentials for `registry` (anonymous when none are filed).
pub fn credentials(registry: &str) -> Result<RegistryAuth, AuthError> {
    for path in std::iter::once(berth_file()).chain(docker_file()) {
        let Some(config) = load(&path)? else { continue };
        if let Some(auth) = from_config(&path, &config, registry)? {
            return Ok(auth);
        }
    }
    Ok(RegistryAuth::Anonymous)
}

fn from_config(path: &Path, config: &Map<String, Value>, registry: &str) -> Result<Option<RegistryAuth>, AuthError> {
    let keys = keys(registry);
    let helper = config.get("credHelpers").and_then(|h| keys.iter().find_map(|k| h.get(k))).or_else(|| config.get("credsStore")).and_then(Value::as_str);
    if let Some(helper) = helper {
        return helper_get(helper, registry).map(Some);
    }
    let Some(entry) = config.get("auths").and_then(|a| keys.iter().find_map(|k| a.get(k))) else { return Ok(None) };
    let bad = || AuthError::BadEntry { path: path.into(), registry: registry.into() };
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth::Bearer(token.into())));
    }
    let Some(b64) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) else {
        return match (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
            (Some(u), Some(p)) => Ok(Some(RegistryAuth::Basic(u.into(), p.into()))),
            _ => Ok(None),
        };
    };
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, pass) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(RegistryAuth::Basic(user.into(), pass.into())))
}

/// `docker-credential-HELPER get`, the registry on stdin.
fn helper_get(helper: &str, registry: &str) -> Result<RegistryAuth, AuthError> {
    let err = |reason: String| AuthError::Helper { helper: helper.into(), registry: registry.into(), reason };
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(registry.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "credentials not found in native keychain": nothing filed.
        if stdout.contains("not found") || String::from_utf8_lossy(&out.stderr).contains("not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    let v: Value = serde_json::from_str(&stdout).map_err(|e| err(format!("its answer is not JSON: {e}")))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some("<token>"), Some(t)) => Ok(RegistryAuth::Bearer(t.into())),
        (Some(u), Some(p)) => Ok(RegistryAuth::Basic(u.into(), p.into())),
        _ => Err(err("its answer has no Username and Secret".into())),
    }
}

/// Files `user`/`password` for `registry` in berth's credentials file
/// (mode 0600, replaced in one step).
pub fn store(registry: &str, user: &str, password: &str) -> Result<PathBuf, AuthError> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    edit(|auths| {
        auths.insert(registry.into(), serde_json::json!({ "auth": auth }));
    })
}

/// Removes `registry`'s entry from berth's credentials file; whether there
/// was one.
pub fn forget(registry: &str) -> Result<bool, AuthError> {
    let mut had = false;
    edit(|auths| {
        for k in keys(registry) {
            had |= auths.remove(&k).is_some();
        }
    })?;
    Ok(had)
}

fn edit(f: impl FnOnce(&mut Map<String, Value>)) -> Result<PathBuf, AuthError> {
    let path = berth_file();
    let mut config = load(&path)?.unwrap_or_default();
    let auths = config.entry("auths").or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    f(auths.as_object_mut().expect("an object"));
    let werr = |source| AuthError::Write { path: path.clone(), source };
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).tempfile_in(dir).map_err(werr)?;
    let bytes = serde_json::to_vec_pretty(&Value::Object(config)).expect("JSON values serialize");
    tmp.write_all(&bytes).map_err(werr)?;
    tmp.persist(&path).map_err(|e| werr(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(a: Option<RegistryAuth>) -> Option<(String, String)> {
        match a {
            Some(RegistryAuth::Basic(u, p)) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn reads_docker_style_entries() {
        let config: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "registry.example.com": {"auth": "dTpwOndpdGg6Y29sb25z"},
                "https://other.example.com": {"username": "me", "password": "pw"},
                "broken.example.com": {"auth": "!!!"}
            }
        }))
        .unwrap();
        let p = Path::new("c.json");
        assert_eq!(basic(from_config(p, &config, "docker.io").unwrap()), Some(("hub".into(), "secret".into())));
        assert_eq!(basic(from_config(p, &config, "registry.example.com").unwrap()), Some(("u".into(), "p:with:colons".into())));
        assert_eq!(basic(from_config(p, &config, "other.example.com").unwrap()), Some(("me".into(), "pw".into())));
        assert!(from_config(p, &config, "nowhere.example.com").unwrap().is_none());
        let err = from_config(p, &config, "broken.example.com").unwrap_err().to_string();
        assert!(err.contains("broken.example.com") && err.contains("c.json"), "{err}");
    }
}
