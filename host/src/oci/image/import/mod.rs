//! `berth image import`: OCI image layout archives or directories and
//! `docker save` archives into the local store. Every blob is verified
//! against its digest as it streams in; only the blobs of the chosen
//! images are kept, and they become visible all at once.
use super::digest;
use super::names;
use super::platform::{self, Platform};
use super::store::{Ingest, Store, StoreError, NAME_ANNOTATION, REF_ANNOTATION};
use archive::{scan_dir, scan_tar, Found};
use docker::from_docker;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub(crate) const INDEX_TYPES: &[&str] = &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
pub(crate) const MANIFEST_TYPES: &[&str] = &["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];
/// Nested indexes deeper than this are refused.
pub(crate) const MAX_INDEX_DEPTH: usize = 4;

mod archive;
mod docker;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Digest(#[from] super::digest::DigestError),
    #[error("{path} is neither an OCI image layout (oci-layout + index.json) nor a `docker save` archive (manifest.json)")]
    NotAnImage { path: PathBuf },
    #[error("{what} is over the {max}-byte limit for JSON documents")]
    TooLarge { what: String, max: u64 },
    #[error("{what} is not valid JSON for its media type")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
    #[error("{name}: no manifest for platform {wanted} (the image has: {available}); choose one with --platform")]
    NoPlatform { name: String, wanted: String, available: String },
    #[error("{name}: several manifests match platform {platform} ({digests}); the index is ambiguous")]
    AmbiguousPlatform { name: String, platform: String, digests: String },
    #[error("the archive holds an image without a name ({digest}); name it with --name")]
    Unnamed { digest: String },
    #[error(transparent)]
    Name(#[from] names::NameError),
}

fn invalid(what: impl Into<String>, problem: impl Into<String>) -> ImportError {
    ImportError::Invalid { what: what.into(), problem: problem.into() }
}

pub struct ImportOptions {
    /// `os/arch[/variant]` to pick from multi-platform images.
    pub platform: Option<Platform>,
    /// Name for the image (overrides the archive's own names).
    pub name: Option<String>,
}

/// One imported image.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub digest: String,
    pub platform: String,
}

/// Imports the archive or layout directory at `path`.
pub fn import(store: &Store, path: &Path, opts: &ImportOptions, progress: &dyn Fn(std::fs::File) -> Box<dyn Read>) -> Result<Vec<Imported>, ImportError> {
    let ingest = store.ingest()?;
    let read_err = |source| ImportError::Read { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(ImportError::NotAnImage { path: path.to_path_buf() });
    }
    let found = if meta.is_dir() {
        scan_dir(path)?
    } else {
        let file = std::fs::File::open(path).map_err(read_err)?;
        let input = super::layer::decompress(progress(file)).map_err(read_err)?;
        scan_tar(&ingest, input, path)?
    };
    let images = if found.index.is_some() {
        if let Some(l) = &found.oci_layout {
            let v: Value = serde_json::from_slice(l).map_err(|source| ImportError::Json { what: "oci-layout".into(), source })?;
            if v.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
                return Err(invalid("oci-layout", "has no imageLayoutVersion"));
            }
        }
        from_oci_index(&ingest, &found, opts)?
    } else if found.docker_manifest.is_some() {
        from_docker(&ingest, &found, opts)?
    } else {
        return Err(ImportError::NotAnImage { path: path.to_path_buf() });
    };
    let commit: Vec<(String, Descriptor, Vec<String>)> = images.iter().map(|(i, d, blobs)| (i.name.clone(), d.clone(), blobs.clone())).collect();
    ingest.commit(&commit)?;
    Ok(images.into_iter().map(|(i, _, _)| i).collect())
}

/// Makes sure a blob is staged (copying it from a layout directory when
/// the input is one) and matches its descriptor's size.
fn stage(ingest: &Ingest<'_>, found: &Found, d: &Descriptor) -> Result<(), ImportError> {
    let digest = d.digest().to_string();
    digest::hex_of(&digest).map_err(StoreError::from)?;
    if !ingest.has(&digest) {
        let Some(dir) = &found.dir else {
            return Err(StoreError::Missing { digest }.into());
        };
        let p = dir.join("blobs").join(d.digest().algorithm().as_ref()).join(d.digest().digest());
        let f = std::fs::File::open(&p).map_err(|source| ImportError::Read { path: p.clone(), source })?;
        ingest.put(f, Some((&digest, Some(d.size()))))?;
    }
    let len = ingest.open(&digest)?.metadata().map_err(|source| ImportError::Read { path: digest.clone().into(), source })?.len();
    if len != d.size() {
        return Err(StoreError::SizeMismatch { digest, expected: d.size(), actual: len }.into());
    }
    Ok(())
}

/// Whether a blob is in the input (or already stored).
fn available(ingest: &Ingest<'_>, found: &Found, d: &Descriptor) -> bool {
    let digest = d.digest().to_string();
    ingest.has(&digest) || found.dir.as_ref().is_some_and(|dir| dir.join("blobs").join(d.digest().algorithm().as_ref()).join(d.digest().digest()).is_file())
}

fn read_doc(ingest: &Ingest<'_>, found: &Found, d: &Descriptor) -> Result<Vec<u8>, ImportError> {
    stage(ingest, found, d)?;
    Ok(ingest.read_small(d.digest().as_ref(), Some(d.size()))?)
}

/// A manifest that could be imported, with its platform.
struct Candidate {
    desc: Descriptor,
    manifest: ImageManifest,
    platform: Platform,
}

fn from_oci_index(ingest: &Ingest<'_>, found: &Found, opts: &ImportOptions) -> Result<Vec<(Imported, Descriptor, Vec<String>)>, ImportError> {
    let index: ImageIndex = parse("index.json", found.index.as_deref().unwrap_or_default())?;
    // Group the top-level entries by the name they carry.
    let mut groups: BTreeMap<Option<String>, Vec<Descriptor>> = BTreeMap::new();
    for d in index.manifests() {
        let ann = d.annotations().clone().unwrap_or_default();
        let name = match (&opts.name, ann.get(NAME_ANNOTATION), ann.get(REF_ANNOTATION)) {
            (Some(n), _, _) => Some(names::normalize(n)?),
            (None, Some(n), _) => Some(names::normalize(n)?),
            (None, None, Some(r)) if r.contains('/') || r.contains(':') => Some(names::normalize(r)?),
            _ => None,
        };
        groups.entry(name).or_default().push(d.clone());
    }
    let mut out = Vec::new();
    for (name, descs) in groups {
        let mut cands = Vec::new();
        for d in &descs {
            collect(ingest, found, d, 0, &mut cands)?;
        }
        let label = name.clone().unwrap_or_else(|| "unnamed image".into());
        let chosen = choose(&label, cands, opts.platform.as_ref())?;
        let Some(name) = name else {
            return Err(ImportError::Unnamed { digest: chosen.desc.digest().to_string() });
        };
        out.push(finish(ingest, found, name, chosen)?);
    }
    Ok(out)
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::Json { what: what.into(), source })
}

/// Walks a descriptor (index or manifest) down to the manifests it names.
fn collect(ingest: &Ingest<'_>, found: &Found, d: &Descriptor, depth: usize, out: &mut Vec<Candidate>) -> Result<(), ImportError> {
    let what = format!("{} {}", d.media_type(), d.digest());
    let mt = d.media_type().to_string();
    if INDEX_TYPES.contains(&mt.as_str()) {
        if depth >= MAX_INDEX_DEPTH {
            return Err(invalid(what, format!("indexes nested deeper than {MAX_INDEX_DEPTH}")));
        }
        let bytes = read_doc(ingest, found, d)?;
        let v: Value = parse(&what, &bytes)?;
        check_shape(&what, &v, &mt, true)?;
        let index: ImageIndex = parse(&what, &bytes)?;
        for m in index.manifests() {
            collect(ingest, found, m, depth + 1, out)?;
        }
        return Ok(());
    }
    if !MANIFEST_TYPES.contains(&mt.as_str()) {
        tracing::debug!(descriptor = %what, "index entry of another media type skipped");
        return Ok(());
    }
    if d.platform().is_some() && !available(ingest, found, d) {
        // Exports of one platform (`ctr image export`) keep the index of
        // all platforms but the content of one.
        tracing::debug!(descriptor = %what, "manifest for another platform not in the archive; skipped");
        return Ok(());
    }
    let bytes = read_doc(ingest, found, d)?;
    let v: Value = parse(&what, &bytes)?;
    check_shape(&what, &v, &mt, false)?;
    let manifest: ImageManifest = parse(&what, &bytes)?;
    let platform = match d.platform() {
        Some(p) => Platform::from_oci(p),
        None => {
            let cfg = read_doc(ingest, found, manifest.config())?;
            platform::of_config(&cfg)
        }
    };
    out.push(Candidate { desc: d.clone(), manifest, platform });
    Ok(())
}

/// A document must be what its descriptor says: an index has `manifests`
/// and no `layers`; a manifest has `config` and `layers`; a `mediaType`
/// inside must agree with the descriptor's.
pub(crate) fn check_shape(what: &str, v: &Value, media_type: &str, is_index: bool) -> Result<(), ImportError> {
    if let Some(inner) = v.get("mediaType").and_then(Value::as_str) {
        if inner != media_type {
            return Err(invalid(what, format!("the document says its media type is {inner}")));
        }
    }
    let has_manifests = v.get("manifests").is_some();
    let has_layers = v.get("layers").is_some() || v.get("config").is_some();
    match (is_index, has_manifests, has_layers) {
        (true, true, false) | (false, false, true) => Ok(()),
        (_, true, true) => Err(invalid(what, "has both `manifests` and `layers`/`config`: ambiguous between an index and a manifest")),
        (true, false, _) => Err(invalid(what, "is described as an index but has no `manifests`")),
        (false, _, false) => Err(invalid(what, "is described as a manifest but has no `config`/`layers`")),
    }
}

fn choose(name: &str, cands: Vec<Candidate>, wanted: Option<&Platform>) -> Result<Candidate, ImportError> {
    let offered: Vec<(String, Platform)> = cands.iter().map(|c| (c.desc.digest().to_string(), c.platform.clone())).collect();
    let i = choose_platform(name, &offered, wanted)?;
    Ok(cands.into_iter().nth(i).expect("chosen from these"))
}

/// Which of the manifests `offered` (digest, platform) to take: the one for
/// `wanted`, else the first of [`platform::preferred`] that one matches,
/// else a lone manifest of another platform (`berth run` says clearly if it
/// cannot run it). `berth image import` and `berth image pull` choose alike.
pub(crate) fn choose_platform(name: &str, offered: &[(String, Platform)], wanted: Option<&Platform>) -> Result<usize, ImportError> {
    if offered.is_empty() {
        return Err(invalid(name, "the index names no image manifest"));
    }
    let order: Vec<Platform> = match wanted {
        Some(p) => vec![p.clone()],
        None => platform::preferred(),
    };
    for want in &order {
        let hits: Vec<usize> = (0..offered.len()).filter(|&i| want.matches(&offered[i].1)).collect();
        let mut digests: Vec<&str> = hits.iter().map(|&i| offered[i].0.as_str()).collect();
        digests.dedup();
        match digests.len() {
            0 => continue,
            1 => return Ok(hits[0]),
            _ => return Err(ImportError::AmbiguousPlatform { name: name.into(), platform: want.to_string(), digests: digests.join(", ") }),
        }
    }
    if wanted.is_none() && offered.len() == 1 {
        return Ok(0);
    }
    let available = offered.iter().map(|c| c.1.to_string()).collect::<Vec<_>>().join(", ");
    let wanted = order.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" or ");
    Err(ImportError::NoPlatform { name: name.into(), wanted, available })
}

/// Stages the config and layers of the chosen manifest.
fn finish(ingest: &Ingest<'_>, found: &Found, name: String, c: Candidate) -> Result<(Imported, Descriptor, Vec<String>), ImportError> {
    let mut blobs = vec![c.desc.digest().to_string()];
    stage(ingest, found, c.manifest.config())?;
    blobs.push(c.manifest.config().digest().to_string());
    for l in c.manifest.layers() {
        stage(ingest, found, l)?;
        blobs.push(l.digest().to_string());
    }
    let mut desc = c.desc.clone();
    desc.set_platform(Some(c.platform.to_oci()));
    desc.set_annotations(None);
    Ok((Imported { name, digest: c.desc.digest().to_string(), platform: c.platform.to_string() }, desc, blobs))
}
