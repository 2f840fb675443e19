//! A registry's TLS settings as a node already keeps them for docker and
//! containerd: a `certs.d/HOST/` directory (`HOST` with its port, as in
//! `registry.example.com:5000`; containerd's `_default` when there is no
//! directory of the host's own) under `/etc/containerd/certs.d` or
//! `/etc/docker/certs.d`, or under a `--certs-dir`. Read from it:
//!
//! - every `*.crt` file: a CA certificate (PEM) to trust for that
//!   registry, as docker and containerd read them (`ca.crt`);
//! - containerd's `hosts.toml`: `ca` (a path or a list, relative to the
//!   file's directory) and `skip_verify`, at the top level (the server's)
//!   or in a `[host."https://HOST"]` table naming the registry itself.
//!   Mirrors (`[host]` tables of other hosts) are not used by berth: a
//!   warning names them.
use std::path::{Path, PathBuf};

/// Where docker and containerd keep registry certificates on a node.
pub const DEFAULT_DIRS: &[&str] = &["/etc/containerd/certs.d", "/etc/docker/certs.d"];
/// The largest certificate or hosts.toml file read.
const MAX_FILE: u64 = 1 << 20;

/// What the certs.d directories say of one registry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostTls {
    /// CA certificates (PEM), with the file each came from.
    pub cas: Vec<(PathBuf, Vec<u8>)>,
    /// `skip_verify = true`: the file that says so.
    pub skip_verify: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("reading {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The settings for `registry` in the first of `dirs` that has a
/// directory for it (or a `_default` one).
pub fn for_registry(registry: &str, dirs: &[PathBuf]) -> Result<HostTls, HostsError> {
    for dir in dirs {
        for name in [registry, "_default"] {
            let host_dir = dir.join(name);
            if host_dir.is_dir() {
                return read_dir(registry, &host_dir);
            }
        }
    }
    Ok(HostTls::default())
}

fn read_file(path: &Path) -> Result<Vec<u8>, HostsError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_FILE).read_to_end(&mut bytes)).map_err(|source| HostsError::Read { path: path.into(), source })?;
    Ok(bytes)
}

fn read_dir(registry: &str, dir: &Path) -> Result<HostTls, HostsError> {
    let mut tls = HostTls::default();
    let entries = std::fs::read_dir(dir).map_err(|source| HostsError::Read { path: dir.into(), source })?;
    let mut crts: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "crt")).collect();
    crts.sort();
    for path in crts {
        let pem = read_file(&path)?;
        tls.cas.push((path, pem));
    }
    let hosts = dir.join("hosts.toml");
    if hosts.is_file() {
        let text = String::from_utf8(read_file(&hosts)?).map_err(|_| HostsError::Invalid { path: hosts.clone(), reason: "not UTF-8".into() })?;
        apply_hosts_toml(registry, dir, &hosts, &text, &mut tls)?;
    }
    Ok(tls)
}

/// What `hosts.toml` (at `path`, in `dir`) says of `registry`.
fn apply_hosts_toml(registry: &str, dir: &Path, path: &Path, text: &str, tls: &mut HostTls) -> Result<(), HostsError> {
    let invalid = |reason: String| HostsError::Invalid { path: path.into(), reason };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| invalid(e.message().to_string()))?;
    let mut tables: Vec<&dyn toml_edit::TableLike> = vec![doc.as_table()];
    if let Some(hosts) = doc.get("host").and_then(|h| h.as_table_like()) {
        for (url, table) in hosts.iter() {
            let Some(table) = table.as_table_like() else { return Err(invalid(format!("host.{url:?} is not a table"))) };
            let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url).split('/').next().unwrap_or("");
            if host == registry {
                tables.push(table);
            } else {
                tracing::warn!(hosts_toml = %path.display(), mirror = url, registry, "hosts.toml names a mirror; berth reaches the registry itself");
            }
        }
    }
    for table in tables {
        if let Some(ca) = table.get("ca") {
            let paths: Vec<&str> = match (ca.as_str(), ca.as_array()) {
                (Some(one), _) => vec![one],
                (None, Some(list)) => {
                    list.iter().map(|v| v.as_str().ok_or_else(|| invalid("ca lists something that is not a path".into()))).collect::<Result<_, _>>()?
                }
                _ => return Err(invalid("ca is neither a path nor a list of paths".into())),
            };
            for p in paths {
                let file = dir.join(p);
                let pem = read_file(&file)?;
                tls.cas.push((file, pem));
            }
        }
        match table.get("skip_verify").map(|v| v.as_bool()) {
            None | Some(Some(false)) => {}
            Some(Some(true)) => tls.skip_verify = Some(path.to_path_buf()),
            Some(None) => return Err(invalid("skip_verify is not true or false".into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_is_read_as_docker_and_containerd_lay_it_out() {
        let root = tempfile::tempdir().unwrap();
        let dirs = [root.path().join("containerd"), root.path().join("docker")];
        // docker's layout: ca.crt (and any *.crt).
        let docker = dirs[1].join("reg.example:5000");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(docker.join("ca.crt"), "PEM-A").unwrap();
        std::fs::write(docker.join("client.cert"), "not a CA").unwrap();
        let t = for_registry("reg.example:5000", &dirs).unwrap();
        assert_eq!(t.cas, vec![(docker.join("ca.crt"), b"PEM-A".to_vec())]);
        assert_eq!(t.skip_verify, None);
        // Another registry has nothing.
        assert_eq!(for_registry("other.example", &dirs).unwrap(), HostTls::default());
        // containerd's: hosts.toml with ca and skip_verify, for the server
        // and for a host table naming the registry; the first dir wins.
        let ctrd = dirs[0].join("reg.example:5000");
        std::fs::create_dir_all(ctrd.join("certs")).unwrap();
        std::fs::write(ctrd.join("certs/one.pem"), "PEM-B").unwrap();
        std::fs::write(ctrd.join("two.pem"), "PEM-C").unwrap();
        std::fs::write(
            ctrd.join("hosts.toml"),
            "server = \"https://reg.example:5000\"\nca = \"certs/one.pem\"\n[host.\"https://reg.example:5000\"]\n  ca = [\"two.pem\"]\n  skip_verify = true\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n",
        )
        .unwrap();
        let t = for_registry("reg.example:5000", &dirs).unwrap();
        let cas: Vec<&[u8]> = t.cas.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(cas, [&b"PEM-B"[..], &b"PEM-C"[..]]);
        assert_eq!(t.skip_verify, Some(ctrd.join("hosts.toml")));
        // _default serves registries without a directory of their own.
        let default = dirs[1].join("_default");
        std::fs::create_dir_all(&default).unwrap();
        std::fs::write(default.join("ca.crt"), "PEM-D").unwrap();
        assert_eq!(for_registry("other.example", &dirs).unwrap().cas.len(), 1);
    }

    #[test]
    fn a_bad_hosts_toml_is_named_with_what_is_wrong() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("reg");
        std::fs::create_dir_all(&dir).unwrap();
        for (text, want) in [
            ("skip_verify = \"yes\"", "skip_verify is not true or false"),
            ("ca = 3", "ca is neither a path"),
            ("ca = \"missing.pem\"", "missing.pem"),
            ("[host", "hosts.toml"),
        ] {
            std::fs::write(dir.join("hosts.toml"), text).unwrap();
            let e = for_registry("reg", &[root.path().to_path_buf()]).unwrap_err();
            let shown = crate::error::chain(&e);
            assert!(shown.contains(want), "{text}: {shown}");
        }
    }
}
