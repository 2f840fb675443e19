//! Whether a directory may hold machine code that berth maps and runs.
//!
//! A precompile-cache entry is trusted because of where it is, not because
//! of a checksum beside it (whoever can write one can write the other). A
//! directory is fit only when nobody but this user (or root) can change
//! what it holds, and nobody else can move it or any directory above it.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a directory or file is not fit to hold code.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("cannot check {path}: {source}")]
    Stat { path: PathBuf, source: std::io::Error },
    #[error("{path} is owned by uid {owner}, not by this user (uid {euid}) or root; fix: chown {euid} {path}, or set BERTH_ROOT to a directory of your own")]
    Owner { path: PathBuf, owner: u32, euid: u32 },
    #[error("{path} can be written by group or others (mode {mode:04o}); fix: chmod go-w {path}")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file; remove it")]
    NotFile { path: PathBuf },
}

/// The uid whose files berth trusts besides root's.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn owned(path: &Path, m: &std::fs::Metadata) -> Result<(), Untrusted> {
    let euid = euid();
    if m.uid() != euid && m.uid() != 0 {
        return Err(Untrusted::Owner { path: path.to_path_buf(), owner: m.uid(), euid });
    }
    Ok(())
}

/// Checks `dir` (the cache) and its parent (the state root) strictly:
/// owned by this user or root and written by nobody else. Every directory
/// above them must be owned by this user or root, and may be writable by
/// others only when sticky (as `/tmp` is: nobody can rename what is not
/// theirs). Symbolic links are resolved first, and the real path checked.
pub fn check_dir(dir: &Path) -> Result<(), Untrusted> {
    let real = std::fs::canonicalize(dir).map_err(|source| Untrusted::Stat { path: dir.to_path_buf(), source })?;
    for (depth, p) in real.ancestors().enumerate() {
        let m = std::fs::metadata(p).map_err(|source| Untrusted::Stat { path: p.to_path_buf(), source })?;
        owned(p, &m)?;
        let mode = m.mode() & 0o7777;
        let others_write = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if others_write && (depth < 2 || !sticky) {
            return Err(Untrusted::Writable { path: p.to_path_buf(), mode });
        }
    }
    Ok(())
}

/// Checks an open entry: a regular file of this user or root that nobody
/// else can write.
pub fn check_file(path: &Path, file: &std::fs::File) -> Result<std::fs::Metadata, Untrusted> {
    let m = file.metadata().map_err(|source| Untrusted::Stat { path: path.to_path_buf(), source })?;
    if !m.is_file() {
        return Err(Untrusted::NotFile { path: path.to_path_buf() });
    }
    owned(path, &m)?;
    if m.mode() & 0o022 != 0 {
        return Err(Untrusted::Writable { path: path.to_path_buf(), mode: m.mode() & 0o7777 });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_directory_is_fit_and_a_shared_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("root/cache");
        std::fs::create_dir_all(&cache).unwrap();
        chmod(&d.path().join("root"), 0o700);
        chmod(&cache, 0o700);
        check_dir(&cache).unwrap();
        chmod(&cache, 0o777);
        let e = check_dir(&cache).unwrap_err().to_string();
        assert!(e.contains("chmod go-w") && e.contains("0777"), "{e}");
        // Sticky is not enough for the cache or the state root.
        chmod(&cache, 0o1777);
        assert!(matches!(check_dir(&cache), Err(Untrusted::Writable { .. })));
        chmod(&cache, 0o700);
        chmod(&d.path().join("root"), 0o770);
        assert!(matches!(check_dir(&cache), Err(Untrusted::Writable { .. })));
        chmod(&d.path().join("root"), 0o700);
        // Above the root, a writable directory is fine only when sticky.
        chmod(d.path(), 0o777);
        assert!(matches!(check_dir(&cache), Err(Untrusted::Writable { .. })));
        chmod(d.path(), 0o1777);
        check_dir(&cache).unwrap();
        chmod(d.path(), 0o700);
        // Owned by another user, anywhere on the way up (as a /tmp/.local
        // someone else made first would be). The tests run as root.
        std::os::unix::fs::chown(d.path(), Some(4242), None).unwrap();
        let e = check_dir(&cache).unwrap_err().to_string();
        assert!(e.contains("uid 4242") && e.contains("chown"), "{e}");
    }

    #[test]
    fn a_symlink_is_judged_by_where_it_leads() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("shared/cache");
        std::fs::create_dir_all(&real).unwrap();
        chmod(&d.path().join("shared"), 0o777);
        let link = d.path().join("mine");
        std::fs::create_dir(&link).unwrap();
        std::os::unix::fs::symlink(&real, link.join("cache")).unwrap();
        let e = check_dir(&link.join("cache")).unwrap_err().to_string();
        assert!(e.contains("shared"), "{e}");
    }

    #[test]
    fn entries_must_be_private_regular_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.cwasm");
        std::fs::write(&p, b"code").unwrap();
        chmod(&p, 0o600);
        check_file(&p, &std::fs::File::open(&p).unwrap()).unwrap();
        chmod(&p, 0o666);
        assert!(matches!(check_file(&p, &std::fs::File::open(&p).unwrap()), Err(Untrusted::Writable { .. })));
        assert!(matches!(check_file(d.path(), &std::fs::File::open(d.path()).unwrap()), Err(Untrusted::NotFile { .. })));
    }
}
