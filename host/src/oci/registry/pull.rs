//! `berth image pull`: a reference's manifest (an index is walked and one
//! platform chosen, as `berth image import` chooses), then its config and
//! layers, several at once, into the store's staging area. The image is
//! named only when every blob is in and verified.
use super::blob::BlobReader;
use super::{reference, RegistryError, Remote, RemoteOptions};
use crate::oci::image::import::{check_shape, choose_platform, INDEX_TYPES, MANIFEST_TYPES, MAX_INDEX_DEPTH};
use crate::oci::image::platform::{self, Platform};
use crate::oci::image::store::{Ingest, Store, MAX_JSON_BYTES};
use crate::oci::image::{digest, names};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;
use std::sync::Mutex;

/// Progress of a pull, for a progress bar (or nothing).
pub trait Progress: Sync {
    /// A blob of `size` bytes starts downloading.
    fn start(&self, digest: &str, size: u64);
    /// `n` more bytes of `digest` arrived.
    fn advance(&self, digest: &str, n: u64);
    /// `digest` is in (or was already there).
    fn done(&self, digest: &str);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str) {}
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub digest: String,
    pub platform: String,
    /// Bytes downloaded (blobs the store already had are not).
    pub downloaded: u64,
}

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Pulls `name` (`app:1`, `registry.example.com/team/app@sha256:...`) into
/// `store`, choosing `platform` from an index (default: as `import`).
pub fn pull(store: &Store, name: &str, wanted: Option<&Platform>, opts: &RemoteOptions, progress: &dyn Progress) -> Result<Pulled, RegistryError> {
    let parsed = names::parse(name)?;
    let full = parsed.to_string();
    let remote = Remote::new(&parsed.domain, opts)?;
    let r = reference(&parsed);
    let ingest = store.ingest()?;
    let what = format!("pulling {full}");
    let (bytes, media_type) = fetch_document(&remote, &r, &what, parsed.digest.as_deref(), None)?;
    let (desc, bytes, manifest) = if INDEX_TYPES.contains(&media_type.as_str()) {
        choose(&remote, &r, &what, bytes, wanted, 0)?
    } else {
        let manifest = parse_manifest(&what, &bytes)?;
        let d = descriptor(&media_type, &bytes);
        (d, bytes, manifest)
    };
    // The config first: it names the platform when the index did not.
    let mut blobs: Vec<&Descriptor> = vec![manifest.config()];
    blobs.extend(manifest.layers());
    let downloaded = fetch_blobs(&remote, &r, &ingest, &blobs, opts.parallel, progress)?;
    let config = ingest.read_small(manifest.config().digest().as_ref(), Some(manifest.config().size()))?;
    let platform = match desc.platform() {
        Some(p) => Platform::from_oci(p),
        None => platform::of_config(&config),
    };
    if let Some(w) = wanted {
        if !w.matches(&platform) {
            return Err(RegistryError::Invalid { what, problem: format!("the image is for {platform}, not {w}") });
        }
    }
    let (manifest_digest, _) = ingest.put(&bytes[..], Some((desc.digest().as_ref(), Some(desc.size()))))?;
    let mut all: Vec<String> = vec![manifest_digest.clone()];
    all.extend(blobs.iter().map(|b| b.digest().to_string()));
    let mut named = desc.clone();
    named.set_platform(Some(platform.to_oci()));
    named.set_annotations(None);
    ingest.commit(&[(full.clone(), named, all)])?;
    Ok(Pulled { name: full, digest: manifest_digest, platform: platform.to_string(), downloaded })
}

/// A descriptor for a document of `media_type`.
fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    let d: oci_spec::image::Digest = digest::of_bytes(bytes).parse().expect("a sha256 digest parses");
    Descriptor::new(MediaType::from(media_type), bytes.len() as u64, d)
}

/// Fetches a manifest or index by tag or digest: its bytes (checked against
/// `digest` when one is known, and against the JSON size cap) and media type.
fn fetch_document(remote: &Remote, r: &oci_client::Reference, what: &str, digest: Option<&str>, size: Option<u64>) -> Result<(Vec<u8>, String), RegistryError> {
    let (bytes, _) = remote.rt.block_on(remote.client.pull_manifest_raw(r, &remote.auth, ACCEPTED)).map_err(|e| remote.error(what, e))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(RegistryError::Invalid {
            what: what.into(),
            problem: format!("the manifest is {} bytes, over the {MAX_JSON_BYTES}-byte limit for JSON documents", bytes.len()),
        });
    }
    let actual = digest::of_bytes(&bytes);
    if let Some(d) = digest.filter(|d| *d != actual) {
        return Err(RegistryError::Invalid { what: what.into(), problem: format!("the registry sent a manifest whose digest is {actual}, not {d}") });
    }
    if let Some(s) = size.filter(|s| *s != bytes.len() as u64) {
        return Err(RegistryError::Invalid { what: what.into(), problem: format!("the registry sent a manifest of {} bytes, not {s}", bytes.len()) });
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid { what: what.into(), problem: format!("the manifest is not JSON: {e}") })?;
    let media_type = match v.get("mediaType").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => INDEX_TYPES[0].to_string(),
        None => MANIFEST_TYPES[0].to_string(),
    };
    if !ACCEPTED.contains(&media_type.as_str()) {
        return Err(RegistryError::Invalid { what: what.into(), problem: format!("media type {media_type} is not an image manifest or index") });
    }
    check_shape(what, &v, &media_type, INDEX_TYPES.contains(&media_type.as_str()))?;
    Ok((bytes.to_vec(), media_type))
}

fn parse_manifest(what: &str, bytes: &[u8]) -> Result<ImageManifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Invalid { what: what.into(), problem: format!("not a valid image manifest: {e}") })
}

/// Walks an index down to the manifest for the wanted platform.
fn choose(
    remote: &Remote,
    r: &oci_client::Reference,
    what: &str,
    bytes: Vec<u8>,
    wanted: Option<&Platform>,
    depth: usize,
) -> Result<(Descriptor, Vec<u8>, ImageManifest), RegistryError> {
    if depth >= MAX_INDEX_DEPTH {
        return Err(RegistryError::Invalid { what: what.into(), problem: format!("indexes nested deeper than {MAX_INDEX_DEPTH}") });
    }
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid { what: what.into(), problem: format!("not a valid image index: {e}") })?;
    let entries: Vec<&Descriptor> = index.manifests().iter().filter(|d| ACCEPTED.contains(&d.media_type().to_string().as_str())).collect();
    // Entries without a platform (or nested indexes) say theirs only in
    // their own documents: fetch those.
    let mut offered: Vec<(String, Platform)> = Vec::new();
    let mut docs: Vec<Option<(Descriptor, Vec<u8>, ImageManifest)>> = Vec::new();
    for d in &entries {
        let mt = d.media_type().to_string();
        let sub = r.clone_with_digest(d.digest().to_string());
        match (d.platform(), INDEX_TYPES.contains(&mt.as_str())) {
            (Some(p), false) => {
                offered.push((d.digest().to_string(), Platform::from_oci(p)));
                docs.push(None);
            }
            (_, true) => {
                let (b, _) = fetch_document(remote, &sub, what, Some(d.digest().as_ref()), Some(d.size()))?;
                let chosen = choose(remote, &sub, what, b, wanted, depth + 1)?;
                let p = chosen.0.platform().as_ref().map(Platform::from_oci).unwrap_or_else(platform::host);
                offered.push((chosen.0.digest().to_string(), p));
                docs.push(Some(chosen));
            }
            (None, false) => {
                let (b, _) = fetch_document(remote, &sub, what, Some(d.digest().as_ref()), Some(d.size()))?;
                let manifest = parse_manifest(what, &b)?;
                let cfg = small_blob(remote, &sub, manifest.config())?;
                offered.push((d.digest().to_string(), platform::of_config(&cfg)));
                docs.push(Some(((*d).clone(), b, manifest)));
            }
        }
    }
    let i = choose_platform(what, &offered, wanted)?;
    if let Some(doc) = docs[i].take() {
        return Ok(doc);
    }
    let d = entries[i];
    let sub = r.clone_with_digest(d.digest().to_string());
    let (b, m) = fetch_document(remote, &sub, what, Some(d.digest().as_ref()), Some(d.size()))?;
    if INDEX_TYPES.contains(&m.as_str()) {
        return Err(RegistryError::Invalid { what: what.into(), problem: format!("{} is listed as a manifest but is an index", d.digest()) });
    }
    let manifest = parse_manifest(what, &b)?;
    Ok((d.clone(), b, manifest))
}

/// A JSON blob (an image config), read whole: at most its descriptor's
/// size, which is capped, and checked against its digest.
fn small_blob(remote: &Remote, r: &oci_client::Reference, d: &Descriptor) -> Result<Vec<u8>, RegistryError> {
    let what = format!("blob {} of {r}", d.digest());
    if d.size() > MAX_JSON_BYTES {
        return Err(RegistryError::Invalid {
            what,
            problem: format!("a config of {} bytes is over the {MAX_JSON_BYTES}-byte limit for JSON documents", d.size()),
        });
    }
    let quiet = |_| {};
    let mut reader = BlobReader::new(remote, r, d.digest().as_ref(), d.size(), &quiet);
    let mut buf = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut reader, &mut buf) {
        return Err(reader.failed.take().unwrap_or(RegistryError::Invalid { what, problem: e.to_string() }));
    }
    let actual = digest::of_bytes(&buf);
    if actual != d.digest().as_ref() {
        return Err(RegistryError::Invalid { what, problem: format!("the content has digest {actual}; the registry's copy is corrupt or was tampered with") });
    }
    Ok(buf)
}

/// Downloads the blobs the store lacks, `parallel` at a time; the bytes
/// downloaded.
fn fetch_blobs(
    remote: &Remote,
    r: &oci_client::Reference,
    ingest: &Ingest<'_>,
    blobs: &[&Descriptor],
    parallel: usize,
    progress: &dyn Progress,
) -> Result<u64, RegistryError> {
    let todo: Mutex<Vec<&Descriptor>> = Mutex::new(blobs.iter().rev().copied().filter(|d| !ingest.has(d.digest().as_ref())).collect());
    for d in blobs.iter().filter(|d| ingest.has(d.digest().as_ref())) {
        progress.done(d.digest().as_ref());
    }
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                if first_error.lock().unwrap().is_some() {
                    return;
                }
                let Some(d) = todo.lock().unwrap().pop() else { return };
                let digest = d.digest().to_string();
                progress.start(&digest, d.size());
                let on_bytes = |n: u64| progress.advance(&digest, n);
                let mut reader = BlobReader::new(remote, r, &digest, d.size(), &on_bytes);
                match ingest.put(&mut reader, Some((&digest, Some(d.size())))) {
                    Ok((_, n)) => {
                        total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        progress.done(&digest);
                    }
                    Err(e) => {
                        let e = reader.failed.take().unwrap_or(RegistryError::Store(e));
                        first_error.lock().unwrap().get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(total.into_inner()),
    }
}
