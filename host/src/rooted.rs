//! Files opened strictly beneath a root: a container's rootfs as the
//! container would see it (`..` and symlinks never leave it), and a plan's
//! module file.
use crate::plan::ModuleSource;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("opening module {source_name}")]
    Open {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {source_name} is not a regular file; give the path of a .wasm or .wat file")]
    NotAFile { source_name: String },
}

/// Opens `path` (absolute or relative, as the container sees it) beneath
/// `root`: `..` and symlinks, absolute ones included, resolve inside the
/// root as they would for the container, never outside it.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<File> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => Ok(File::from(fd)),
        // Kernels before 5.6 lack openat2: fall back to cap-std, which
        // refuses (rather than re-roots) anything that would leave the root.
        Err(rustix::io::Errno::NOSYS) => {
            let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
            Ok(dir.open(rel)?.into_std())
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the module file of a plan and checks that it is a regular file.
pub fn open_source(source: &ModuleSource) -> Result<File, SourceError> {
    let source_name = source.to_string();
    let err = |source| SourceError::Open { source_name: source_name.clone(), source };
    let file = match source {
        // O_NONBLOCK: a FIFO or device named as the module must not hang
        // the open; the regular-file check below then refuses it.
        ModuleSource::File(p) | ModuleSource::Blob { path: p, .. } => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(p).map_err(err)?
        }
        ModuleSource::InRoot { root, path } => open_in_root(root, path).map_err(err)?,
        ModuleSource::None => return Err(SourceError::Open { source_name, source: std::io::Error::new(std::io::ErrorKind::NotFound, "no module given") }),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile { source_name });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(outer.path().join("secret"), b"host secret").unwrap();
        std::fs::write(root.join("bin/app.wasm"), b"inside").unwrap();
        // absolute symlink: re-rooted, finds the rootfs's own file
        symlink("/bin/app.wasm", root.join("abs")).unwrap();
        let mut s = String::new();
        use std::io::Read;
        open_in_root(&root, "/abs").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        // relative and absolute escapes stay in the root and find nothing
        symlink("../secret", root.join("rel-out")).unwrap();
        symlink(outer.path().join("secret"), root.join("abs-out")).unwrap();
        for p in ["/rel-out", "/abs-out", "/../secret", "../../secret"] {
            assert!(open_in_root(&root, p).is_err(), "{p} must not reach the host file");
        }
    }
}
