//! The local image store: `$BERTH_ROOT/images` is itself an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/...`), so any OCI tool
//! can read it. Blobs are verified by digest when written and when read;
//! new content lands in a private staging directory and becomes visible
//! only when its image is tagged, under an exclusive lock.
use super::digest::{self, DigestError, HashReader};
use super::names;
use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Annotation holding an image's full name in the store's `index.json`
/// (the one containerd uses).
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI layout annotation for a reference name.
pub const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Manifests, indexes and configs larger than this are refused unread.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

mod ingest;
pub use ingest::Ingest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("blob {digest}: content has digest {actual}; the source is corrupt or was tampered with")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest}: {actual} bytes where its descriptor says {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("blob {digest} is over the {max}-byte limit for JSON documents")]
    TooLarge { digest: String, max: u64 },
    #[error("blob {digest} is missing from the store; re-import the image")]
    Missing { digest: String },
    #[error("no image named {name:?} (`berth image ls` lists images)")]
    NoSuchImage { name: String },
    #[error("{name:?} matches several images ({matches}); give more of the digest or the full name")]
    Ambiguous { name: String, matches: String },
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("{what} in the image store is not valid JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// One named image in the store.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub manifest: Descriptor,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating when needed) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        for sub in ["blobs/sha256", "ingest"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Store { dir })
    }

    /// The store of this machine: `$BERTH_ROOT/images`.
    pub fn default_dir() -> PathBuf {
        crate::paths::root().join("images")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.dir.join("blobs/sha256").join(digest::hex_of(digest)?))
    }

    /// Opens a blob for streaming; the caller verifies it while reading
    /// (see [`HashReader`]).
    pub fn open_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Missing { digest: digest.to_string() },
            _ => StoreError::Io { path, source: e },
        })
    }

    /// Reads a small (JSON) blob whole, verifying its digest.
    pub fn read_small(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        read_verified(self.open_blob(digest)?, digest, None)
    }

    /// Starts an import: blobs go to a private staging directory until
    /// [`Ingest::commit`].
    pub fn ingest(&self) -> Result<Ingest<'_>, StoreError> {
        self.clean_stale_ingests();
        let name = format!("{}-{:x}", std::process::id(), rand_u64());
        let dir = self.dir.join("ingest").join(name);
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(Ingest { store: self, dir })
    }

    /// Removes staging directories of imports whose process is gone.
    fn clean_stale_ingests(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("ingest")) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    tracing::debug!(staging = %e.path().display(), "removing the staging area of an interrupted import");
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Takes the store's exclusive lock (held until the guard drops).
    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join("lock");
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| io_err(&path)(e.into()))?;
        Ok(f)
    }

    fn read_index(&self) -> Result<Vec<Descriptor>, StoreError> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let idx: Index = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { what: path.display().to_string(), source })?;
        Ok(idx.manifests)
    }

    fn write_index(&self, manifests: &[Descriptor]) -> Result<(), StoreError> {
        let index = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests.to_vec())
            .build()
            .map_err(|e| StoreError::Io { path: self.dir.join("index.json"), source: io::Error::other(e) })?;
        // serde_json's Value keeps keys sorted: a stable file.
        let doc = serde_json::to_value(&index).expect("OCI documents serialize");
        let bytes = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
        write_atomic(&self.dir.join("index.json"), &bytes)
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<Record>, StoreError> {
        let mut out: Vec<Record> = self
            .read_index()?
            .into_iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(NAME_ANNOTATION)?.clone();
                Some(Record { name, manifest: d })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds an image by name (`app:1`, `example.com/app:1.0`), by manifest
    /// digest, or by a unique prefix of at least 12 hex digits of it.
    pub fn resolve(&self, name: &str) -> Result<Record, StoreError> {
        let all = self.list()?;
        if let Ok(full) = names::normalize(name) {
            if let Some(r) = all.iter().find(|r| r.name == full) {
                return Ok(r.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Record> = all.iter().filter(|r| r.manifest.digest().digest().starts_with(hex)).collect();
            let unique: BTreeSet<String> = hits.iter().map(|r| r.manifest.digest().to_string()).collect();
            match unique.len() {
                0 => {}
                1 => return Ok(hits[0].clone()),
                _ => return Err(StoreError::Ambiguous { name: name.into(), matches: hits.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ") }),
            }
        }
        Err(StoreError::NoSuchImage { name: name.into() })
    }

    /// Gives the image `src` (a name or digest) the name `dst` too, as
    /// `docker tag` does; an image that had the name `dst` loses it.
    pub fn tag(&self, src: &str, dst: &str) -> Result<Record, StoreError> {
        let rec = self.resolve(src)?;
        let name = names::normalize(dst)?;
        let mut desc = rec.manifest.clone();
        desc.set_annotations(None);
        self.ingest()?.commit(&[(name.clone(), desc.clone(), Vec::new())])?;
        Ok(Record { name, manifest: desc })
    }

    /// Reads and parses an image manifest blob.
    pub fn manifest(&self, digest: &str) -> Result<ImageManifest, StoreError> {
        let bytes = self.read_small(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { what: format!("manifest {digest}"), source })
    }

    /// Removes a name; blobs no other image uses are deleted. Returns the
    /// bytes freed.
    pub fn remove(&self, name: &str) -> Result<(Record, u64), StoreError> {
        let _lock = self.lock()?;
        let rec = self.resolve(name)?;
        let remaining: Vec<Descriptor> =
            self.read_index()?.into_iter().filter(|d| d.annotations().as_ref().and_then(|a| a.get(NAME_ANNOTATION)) != Some(&rec.name)).collect();
        self.write_index(&remaining)?;
        let freed = self.collect_garbage(&remaining)?;
        Ok((rec, freed))
    }

    /// Deletes every blob not reachable from `manifests`. Caller holds the lock.
    fn collect_garbage(&self, manifests: &[Descriptor]) -> Result<u64, StoreError> {
        let mut keep = BTreeSet::new();
        for d in manifests {
            keep.insert(d.digest().digest().to_string());
            if let Ok(m) = self.manifest(d.digest().as_ref()) {
                keep.insert(m.config().digest().digest().to_string());
                keep.extend(m.layers().iter().map(|l| l.digest().digest().to_string()));
            }
        }
        let dir = self.dir.join("blobs/sha256");
        let mut freed = 0;
        for e in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
        Ok(freed)
    }
}

fn read_verified(file: File, digest: &str, size: Option<u64>) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    let mut r = HashReader::new(file.take(MAX_JSON_BYTES + 1));
    r.read_to_end(&mut buf).map_err(|source| StoreError::Io { path: PathBuf::from(digest), source })?;
    if buf.len() as u64 > MAX_JSON_BYTES {
        return Err(StoreError::TooLarge { digest: digest.into(), max: MAX_JSON_BYTES });
    }
    let (actual, len) = r.finish().map_err(|source| StoreError::Io { path: PathBuf::from(digest), source })?;
    if actual != digest {
        return Err(StoreError::DigestMismatch { digest: digest.into(), actual });
    }
    if let Some(want) = size.filter(|w| *w != len) {
        return Err(StoreError::SizeMismatch { digest: digest.into(), expected: want, actual: len });
    }
    Ok(buf)
}

/// Writes `bytes` to `path` through a temp file and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
