//! Reading an import's input: a tar archive (OCI layout or `docker save`,
//! compressed or not), whose blobs are staged as they stream past, or a
//! layout directory, whose blobs are staged on demand.
use super::ImportError;
use crate::oci::image::store::{Ingest, MAX_JSON_BYTES};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Small documents found in the input, and where its other files went.
#[derive(Default)]
pub(super) struct Found {
    pub oci_layout: Option<Vec<u8>>,
    pub index: Option<Vec<u8>>,
    pub docker_manifest: Option<Vec<u8>>,
    /// Path inside the archive -> staged digest (Docker's legacy files).
    pub files: HashMap<String, String>,
    /// Path inside the archive -> symlink target (normalized).
    pub links: HashMap<String, String>,
    /// The input, when it is a layout directory (blobs are read on demand).
    pub dir: Option<PathBuf>,
}

pub(super) fn norm(path: &str) -> String {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

fn read_json_entry(r: impl Read, what: &str) -> Result<Vec<u8>, ImportError> {
    let mut buf = Vec::new();
    r.take(MAX_JSON_BYTES + 1).read_to_end(&mut buf).map_err(|source| ImportError::Read { path: what.into(), source })?;
    if buf.len() as u64 > MAX_JSON_BYTES {
        return Err(ImportError::TooLarge { what: what.into(), max: MAX_JSON_BYTES });
    }
    Ok(buf)
}

pub(super) fn scan_tar(ingest: &Ingest<'_>, input: impl Read, path: &Path) -> Result<Found, ImportError> {
    let read_err = |source| ImportError::Read { path: path.to_path_buf(), source };
    let mut found = Found::default();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = norm(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(t) = entry.link_name_bytes() {
                let t = String::from_utf8_lossy(&t).into_owned();
                let base =
                    if kind.is_symlink() { Path::new(&name).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default() } else { String::new() };
                found.links.insert(name, resolve_rel(&base, &t));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        match name.as_str() {
            "oci-layout" => found.oci_layout = Some(read_json_entry(&mut entry, "oci-layout")?),
            "index.json" => found.index = Some(read_json_entry(&mut entry, "index.json")?),
            "manifest.json" => found.docker_manifest = Some(read_json_entry(&mut entry, "manifest.json")?),
            n => {
                let expected = n.strip_prefix("blobs/").and_then(|r| r.split_once('/')).map(|(alg, hex)| format!("{alg}:{hex}"));
                let (d, _) = ingest.put(&mut entry, expected.as_deref().map(|d| (d, None)))?;
                found.files.insert(n.to_string(), d);
            }
        }
    }
    Ok(found)
}

/// `base/target` with `..` resolved lexically (never above the archive root).
fn resolve_rel(base: &str, target: &str) -> String {
    let mut out: Vec<&str> = if target.starts_with('/') { vec![] } else { base.split('/').filter(|c| !c.is_empty()).collect() };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

pub(super) fn scan_dir(dir: &Path) -> Result<Found, ImportError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, ImportError> {
        let p = dir.join(name);
        match std::fs::File::open(&p) {
            Ok(f) => Ok(Some(read_json_entry(f, name)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ImportError::Read { path: p, source }),
        }
    };
    // Blobs are copied in (verified) on demand, by `stage`.
    Ok(Found {
        oci_layout: read("oci-layout")?,
        index: read("index.json")?,
        docker_manifest: read("manifest.json")?,
        dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
}
