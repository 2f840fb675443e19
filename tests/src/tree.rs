//! Byte-for-byte snapshots of a directory tree.
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// One entry of a snapshot: what kind of object, its mode, and its content
/// (file bytes hashed, symlink target verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, sha256: String, len: u64 },
    Dir { mode: u32 },
    Symlink { target: String },
    Other { mode: u32 },
}

/// Every object under `root` (not following symlinks), keyed by relative path.
pub type Snapshot = BTreeMap<String, Entry>;

/// Takes a snapshot of `root`, skipping any relative path for which `skip`
/// returns true (and everything beneath it).
pub fn snapshot(root: &Path, skip: &dyn Fn(&str) -> bool) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &dyn Fn(&str) -> bool, out: &mut Snapshot) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if skip(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode();
        let entry = if meta.file_type().is_symlink() {
            Entry::Symlink { target: std::fs::read_link(&path).unwrap().to_string_lossy().into_owned() }
        } else if meta.is_dir() {
            walk(root, &path, skip, out);
            Entry::Dir { mode }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            Entry::File { mode, sha256: hex::encode(Sha256::digest(&bytes)), len: bytes.len() as u64 }
        } else {
            Entry::Other { mode }
        };
        out.insert(rel, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_content_mode_and_link_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"one").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let before = snapshot(dir.path(), &|_| false);
        assert_eq!(before.len(), 2);
        std::fs::write(dir.path().join("a"), b"two").unwrap();
        assert_ne!(before, snapshot(dir.path(), &|_| false));
        std::fs::write(dir.path().join("a"), b"one").unwrap();
        assert_eq!(before, snapshot(dir.path(), &|_| false));
        std::fs::remove_file(dir.path().join("l")).unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("l")).unwrap();
        assert_ne!(before, snapshot(dir.path(), &|_| false));
    }
}
