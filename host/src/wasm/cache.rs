//! Precompiled-code cache: `$BERTH_ROOT/cache/<sha256>-<engine key>.cwasm`.
//!
//! The key is the SHA-256 of the wasm bytes plus the engine's compatibility
//! key, so a wasmtime upgrade or config change never loads stale code.
//! Entries are written atomically (temp file + rename) with a SHA-256
//! sidecar of the compiled bytes; an entry whose bytes do not match its
//! sidecar is recompiled, never loaded.
use super::load::Loaded;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The cache; `dir = None` disables it (e.g. on a read-only device).
/// Clones share its table of live code.
#[derive(Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
    /// Code loaded in this process and still in use, by key: guests of the
    /// same module share one copy (its metadata and code mapping) instead
    /// of loading it again.
    live: Arc<Mutex<HashMap<String, Weak<Loaded>>>>,
}

/// A cache key: content hash of the wasm plus the engine key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn new(wasm: &[u8], engine_key: &str) -> Self {
        CacheKey(format!("{}-{engine_key}", hex::encode(Sha256::digest(wasm))))
    }
    /// A key from an already known sha256 (hex) of the wasm bytes.
    pub fn from_sha256(hex: &str, engine_key: &str) -> Self {
        CacheKey(format!("{hex}-{engine_key}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Cache {
    /// A cache in `dir`, created (mode 0700) on first store.
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir: Some(dir), live: Arc::default() }
    }

    pub fn disabled() -> Self {
        Cache { dir: None, live: Arc::default() }
    }

    /// The code for `key` when a guest of this process still holds it.
    pub fn live(&self, key: &CacheKey) -> Option<Arc<Loaded>> {
        self.live.lock().unwrap().get(&key.0).and_then(Weak::upgrade)
    }

    /// Makes `loaded` the live code for `key` (forgetting code no guest
    /// holds any more).
    pub fn keep(&self, key: &CacheKey, loaded: Loaded) -> Arc<Loaded> {
        let loaded = Arc::new(loaded);
        let mut live = self.live.lock().unwrap();
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(key.0.clone(), Arc::downgrade(&loaded));
        loaded
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn paths(&self, key: &CacheKey) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        Some((dir.join(format!("{}.cwasm", key.0)), dir.join(format!("{}.sha256", key.0))))
    }

    /// Returns the path of a verified entry for `key`, or None on a miss.
    /// A corrupt entry is removed and reported as a miss.
    pub fn lookup(&self, key: &CacheKey) -> Option<PathBuf> {
        let (code, sum) = self.paths(key)?;
        let want = std::fs::read_to_string(&sum).ok()?;
        let bytes = std::fs::read(&code).ok()?;
        if hex::encode(Sha256::digest(&bytes)) == want.trim() {
            return Some(code);
        }
        tracing::warn!(entry = %code.display(), "corrupt precompile cache entry; recompiling");
        let _ = std::fs::remove_file(&code);
        let _ = std::fs::remove_file(&sum);
        None
    }

    /// Stores compiled code for `key`. Failures are logged, not fatal: the
    /// guest runs either way.
    pub fn store(&self, key: &CacheKey, compiled: &[u8]) -> Option<PathBuf> {
        let (code, sum) = self.paths(key)?;
        match write_entry(self.dir.as_ref()?, &code, &sum, compiled) {
            Ok(()) => {
                tracing::debug!(entry = %code.display(), bytes = compiled.len(), "stored precompiled code");
                Some(code)
            }
            Err(e) => {
                tracing::warn!(entry = %code.display(), error = %e, "cannot write the precompile cache; continuing without it");
                None
            }
        }
    }
}

fn write_entry(dir: &Path, code: &Path, sum: &Path, compiled: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let atomic = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    // Code first, then the checksum that vouches for it: a reader never
    // sees a checksum for code that is not fully there.
    atomic(code, compiled)?;
    atomic(sum, hex::encode(Sha256::digest(compiled)).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path().join("c"));
        let key = CacheKey::new(b"\0asm", "abc");
        assert!(cache.lookup(&key).is_none());
        let p = cache.store(&key, b"compiled code").unwrap();
        assert_eq!(cache.lookup(&key), Some(p.clone()));
        // flip a byte: the entry must not be trusted
        std::fs::write(&p, b"compiled cod3").unwrap();
        assert!(cache.lookup(&key).is_none());
        assert!(!p.exists(), "corrupt entry is removed");
        // keys differ by content and by engine
        assert_ne!(CacheKey::new(b"a", "e1"), CacheKey::new(b"b", "e1"));
        assert_ne!(CacheKey::new(b"a", "e1"), CacheKey::new(b"a", "e2"));
    }

    #[test]
    fn unwritable_cache_is_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let cache = Cache::new(file.join("sub"));
        assert!(cache.store(&CacheKey::new(b"x", "e"), b"y").is_none());
        assert!(Cache::disabled().lookup(&CacheKey::new(b"x", "e")).is_none());
    }
}
