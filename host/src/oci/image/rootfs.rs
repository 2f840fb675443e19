//! Unpacked root filesystems, cached by the image's layer chain: the first
//! run of an image unpacks its layers (verifying each blob and diff_id on
//! the way), later runs reuse the directory.
use super::layer;
use super::store::{Store, StoreError};
use super::unpack::{self, Limits, Stats, UnpackError};
use oci_spec::image::ImageManifest;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("layer {digest}: {what} is {actual}, not {expected}; the blob is corrupt, re-import the image")]
    Mismatch { digest: String, what: &'static str, expected: String, actual: String },
    #[error("the image config lists {diff_ids} diff_ids for {layers} layers; the image is malformed")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("rootfs cache {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where unpacked rootfs directories live, beside the store.
pub fn base_dir(store: &Store) -> PathBuf {
    store.dir().with_file_name("rootfs")
}

/// The OCI ChainID of a layer stack.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut iter = diff_ids.iter();
    let Some(first) = iter.next() else { return format!("sha256:{}", hex::encode(Sha256::digest(b""))) };
    iter.fold(first.clone(), |acc, d| format!("sha256:{}", hex::encode(Sha256::digest(format!("{acc} {d}")))))
}

/// Returns the rootfs of an image, unpacking it first when it is not cached.
/// The bool is true on a cache hit.
pub fn ensure(store: &Store, manifest: &ImageManifest, diff_ids: &[String], limits: &Limits) -> Result<(PathBuf, bool, Lease), RootfsError> {
    let dest = base_dir(store).join(chain_id(diff_ids).trim_start_matches("sha256:"));
    let leased = |dest: &Path| lease(dest).map_err(|source| RootfsError::Io { path: dest.to_path_buf(), source });
    // A directory `prune` removes between our look and our lease is
    // unpacked again (at most twice more: prune removes only what no
    // image names).
    for _ in 0..3 {
        let hit = dest.is_dir();
        if !hit {
            unpack_into(store, manifest, diff_ids, limits, &dest)?;
        }
        if let Some(l) = leased(&dest)? {
            return Ok((dest, hit, l));
        }
    }
    Err(RootfsError::Io { path: dest, source: std::io::Error::other("removed again and again while being unpacked; is `berth image rm` running in a loop?") })
}

/// A shared lock on an unpacked rootfs, held while a guest runs from it:
/// [`prune`] keeps a directory while anyone holds one.
#[derive(Debug)]
pub struct Lease(#[allow(dead_code)] std::fs::File);

/// A lease on `dir`, if it is still there once the lock is held.
fn lease(dir: &Path) -> std::io::Result<Option<Lease>> {
    use std::os::unix::fs::MetadataExt;
    let f = match std::fs::File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)?;
    let held = f.metadata()?;
    match std::fs::metadata(dir) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(Some(Lease(f))),
        _ => Ok(None),
    }
}

/// Unpacks the layers into a staging directory renamed to `dest`.
fn unpack_into(store: &Store, manifest: &ImageManifest, diff_ids: &[String], limits: &Limits, dest: &Path) -> Result<(), RootfsError> {
    if diff_ids.len() != manifest.layers().len() {
        return Err(RootfsError::LayerCount { diff_ids: diff_ids.len(), layers: manifest.layers().len() });
    }
    let base = base_dir(store);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io { path, source }
    };
    std::fs::create_dir_all(&base).map_err(io(&base))?;
    let staging = tempfile::Builder::new().prefix(".unpack-").tempdir_in(&base).map_err(io(&base))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755)).map_err(io(staging.path()))?;
    }
    let mut stats = Stats::default();
    let started = std::time::Instant::now();
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = desc.digest().to_string();
        let blob = store.open_blob(&digest)?;
        let (got_digest, got_diff) = layer::read_layer(blob, |tar| unpack::unpack_layer(staging.path(), tar, limits, &mut stats))
            .map_err(|source| RootfsError::Unpack { digest: digest.clone(), source })?;
        if got_digest != digest {
            return Err(RootfsError::Mismatch { digest, what: "the blob's digest", expected: desc.digest().to_string(), actual: got_digest });
        }
        if &got_diff != diff_id {
            return Err(RootfsError::Mismatch { digest, what: "the uncompressed digest (diff_id)", expected: diff_id.clone(), actual: got_diff });
        }
    }
    let staged = staging.keep();
    match std::fs::rename(&staged, dest) {
        Ok(()) => {}
        // Another process unpacked the same chain first: use theirs.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(io(dest)(e));
        }
    }
    tracing::debug!(rootfs = %dest.display(), layers = diff_ids.len(), entries = stats.entries, bytes = stats.bytes,
        skipped = stats.skipped, stripped = stats.stripped, millis = started.elapsed().as_millis() as u64, "unpacked image");
    Ok(())
}

/// Deletes cached rootfs directories whose chain is not in `keep` (hex),
/// and leftovers of interrupted unpacks.
pub fn prune(store: &Store, keep: &HashSet<String>) -> u64 {
    let Ok(entries) = std::fs::read_dir(base_dir(store)) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // A young staging directory may be another process's unpack.
        let fresh = e.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default().as_secs() < 3600).unwrap_or(true);
        if name.starts_with('.') && fresh {
            continue;
        }
        if keep.contains(&name) {
            continue;
        }
        // A rootfs a guest runs from is leased: keep it (the next prune
        // after that guest ends removes it). The lock is held while removing.
        let Ok(dir) = std::fs::File::open(e.path()) else { continue };
        if rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            tracing::info!(rootfs = %e.path().display(), "unused by any image but a guest runs from it; kept until it ends");
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
