//! Precompiled-code cache: `$BERTH_ROOT/cache/<sha256>-<engine key>.cwasm`.
//!
//! The key is the SHA-256 of the wasm bytes plus the engine's compatibility
//! key, so a wasmtime upgrade or config change never loads stale code.
//!
//! An entry is machine code that berth maps and runs, so it is trusted for
//! where it is: the cache is used only when its directory, the state root
//! and every directory above them pass [`trust::check_dir`] (nobody else
//! can write or move them), and each entry is a private file of this user
//! or root. Otherwise berth warns once, says how to fix it, and compiles
//! without the cache.
//!
//! Entries are written atomically (temp file + rename), read back and
//! checked once, and described by a sidecar: the SHA-256 of the code and
//! the identity of the file that holds it (inode, size, modification and
//! change times). A hit whose file still has that identity is loaded
//! without reading it; a file that changed since (any write moves its
//! change time) is hashed again, and recompiled when it no longer matches.
use super::code::Loaded;
use super::trust;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The cache; `dir = None` disables it (e.g. on a read-only device).
/// Clones share its table of live code and its verdict on the directory.
#[derive(Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
    /// Whether `dir` may hold code, decided once it exists.
    fit: Arc<OnceLock<bool>>,
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

/// What the sidecar of an entry records.
#[derive(Debug, PartialEq, Eq)]
struct Sidecar {
    sha256: String,
    identity: Identity,
}

/// Which file, as it was when its checksum was taken. Any write to it
/// moves its change time, which no user can set back.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Identity { ino: m.ino(), len: m.len(), mtime_ns: ns(m.mtime(), m.mtime_nsec()), ctime_ns: ns(m.ctime(), m.ctime_nsec()) }
    }
}

impl Sidecar {
    fn render(&self) -> String {
        let i = &self.identity;
        format!("{} {} {} {} {}\n", self.sha256, i.ino, i.len, i.mtime_ns, i.ctime_ns)
    }

    /// `None` for anything unreadable, including the older form that held
    /// only the checksum (such an entry is checked in full, once).
    fn parse(s: &str) -> (Option<String>, Option<Identity>) {
        let mut f = s.split_whitespace();
        let sha = f.next().filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).map(str::to_string);
        let identity = (|| {
            Some(Identity { ino: f.next()?.parse().ok()?, len: f.next()?.parse().ok()?, mtime_ns: f.next()?.parse().ok()?, ctime_ns: f.next()?.parse().ok()? })
        })();
        (sha, identity)
    }
}

impl Cache {
    /// A cache in `dir` (the state root's `cache`), created (mode 0700) on
    /// first store.
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir: Some(dir), fit: Arc::default(), live: Arc::default() }
    }

    pub fn disabled() -> Self {
        Cache { dir: None, fit: Arc::default(), live: Arc::default() }
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

    /// The cache directory, when it exists and may hold code (judged once,
    /// with a warning when it may not).
    fn fit_dir(&self) -> Option<&Path> {
        let dir = self.dir.as_deref()?;
        if !dir.exists() {
            return None;
        }
        let fit = *self.fit.get_or_init(|| match trust::check_dir(dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(cache = %dir.display(), reason = %e, "precompile cache not used: another user could plant code in it that berth would run; compiling without it");
                false
            }
        });
        fit.then_some(dir)
    }

    fn paths(dir: &Path, key: &CacheKey) -> (PathBuf, PathBuf) {
        (dir.join(format!("{}.cwasm", key.0)), dir.join(format!("{}.sha256", key.0)))
    }

    /// Returns the path of a trusted entry for `key`, or None on a miss.
    /// A corrupt entry is removed and reported as a miss.
    pub fn lookup(&self, key: &CacheKey) -> Option<PathBuf> {
        let (code, sum) = Self::paths(self.fit_dir()?, key);
        let file = open_nofollow(&code).ok()?;
        let meta = match trust::check_file(&code, &file) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(entry = %code.display(), reason = %e, "precompile cache entry not used");
                return None;
            }
        };
        let (want, identity) = Sidecar::parse(&std::fs::read_to_string(&sum).ok()?);
        let want = want?;
        let now = Identity::of(&meta);
        if identity.as_ref() == Some(&now) {
            return Some(code);
        }
        // Changed (or copied, or restored) since its checksum was taken.
        match sha256_of(file) {
            Ok(got) if got == want => {
                let _ = atomic_write(&sum, Sidecar { sha256: want, identity: now }.render().as_bytes());
                Some(code)
            }
            _ => {
                tracing::warn!(entry = %code.display(), "corrupt precompile cache entry; recompiling");
                let _ = std::fs::remove_file(&code);
                let _ = std::fs::remove_file(&sum);
                None
            }
        }
    }

    /// Stores compiled code for `key`. Failures are logged, not fatal: the
    /// guest runs either way.
    pub fn store(&self, key: &CacheKey, compiled: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_deref()?;
        if let Err(e) = create_private(dir) {
            tracing::warn!(cache = %dir.display(), error = %e, "cannot create the precompile cache; continuing without it");
            return None;
        }
        let (code, sum) = Self::paths(self.fit_dir()?, key);
        match write_entry(&code, &sum, compiled) {
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

fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn open_nofollow(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(p)
}

fn sha256_of(mut f: std::fs::File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `path` through a private temp file beside it, synced
/// before the rename: a reader sees all of it or none.
fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("an entry path has a directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn write_entry(code: &Path, sum: &Path, compiled: &[u8]) -> std::io::Result<()> {
    let sha256 = hex::encode(Sha256::digest(compiled));
    atomic_write(code, compiled)?;
    // Verified as written: what is on disk is what was compiled.
    let file = open_nofollow(code)?;
    let identity = Identity::of(&file.metadata()?);
    if sha256_of(file)? != sha256 {
        let _ = std::fs::remove_file(code);
        return Err(std::io::Error::other("the entry read back differs from the code written"));
    }
    // Code first, then the sidecar that vouches for it: a reader never
    // sees a sidecar for code that is not fully there.
    atomic_write(sum, Sidecar { sha256, identity }.render().as_bytes())
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
        assert!(cache.lookup(&key).is_none(), "nothing is left to trust");
        // keys differ by content and by engine
        assert_ne!(CacheKey::new(b"a", "e1"), CacheKey::new(b"b", "e1"));
        assert_ne!(CacheKey::new(b"a", "e1"), CacheKey::new(b"a", "e2"));
    }

    #[test]
    fn a_hit_is_trusted_by_the_files_identity_without_reading_it() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path().join("c"));
        let key = CacheKey::new(b"\0asm", "abc");
        let p = cache.store(&key, b"compiled code").unwrap();
        let sum = p.with_extension("sha256");
        // A sidecar whose checksum is wrong but whose identity is the
        // file's: the file is not hashed again, so it is still a hit.
        let text = std::fs::read_to_string(&sum).unwrap();
        let (sha, rest) = text.split_once(' ').unwrap();
        std::fs::write(&sum, format!("{} {rest}", "0".repeat(sha.len()))).unwrap();
        assert_eq!(cache.lookup(&key), Some(p.clone()));
        // Once the file changes, its checksum is taken again and fails.
        std::fs::write(&p, b"compiled code").unwrap();
        assert!(cache.lookup(&key).is_none());
    }

    #[test]
    fn a_copied_entry_is_hashed_once_then_trusted_again() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path().join("c"));
        let key = CacheKey::new(b"\0asm", "abc");
        let p = cache.store(&key, b"compiled code").unwrap();
        let before = std::fs::read_to_string(p.with_extension("sha256")).unwrap();
        // A restore from backup: same bytes, another inode.
        let copy = d.path().join("copy");
        std::fs::copy(&p, &copy).unwrap();
        std::fs::rename(&copy, &p).unwrap();
        assert_eq!(cache.lookup(&key), Some(p.clone()));
        let after = std::fs::read_to_string(p.with_extension("sha256")).unwrap();
        assert_ne!(before, after, "the sidecar records the new file");
        assert_eq!(before.split(' ').next(), after.split(' ').next());
    }

    #[test]
    fn a_cache_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c");
        let key = CacheKey::new(b"\0asm", "abc");
        Cache::new(dir.clone()).store(&key, b"compiled code").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = Cache::new(dir.clone());
        assert!(cache.lookup(&key).is_none());
        assert!(cache.store(&key, b"compiled code").is_none());
        // An entry others can write is not used either.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = dir.join(format!("{}.cwasm", key.as_str()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(Cache::new(dir).lookup(&key).is_none());
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
