//! Files opened strictly beneath a root: a container's rootfs as the
//! container would see it (`..` and symlinks never leave it), and a plan's
//! module file.
use crate::plan::ModuleSource;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
/// root as they would for the container, never outside it. Mount points
/// below the root are not crossed.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<File> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    Ok(File::from(openat_in_root(&dir, OsStr::new(path), flags, Beneath::SameMount)?))
}

/// Whether a resolution beneath a root may cross into other mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beneath {
    AnyMount,
    SameMount,
}

/// Opens `path` relative to the directory `root` as if `root` were `/`
/// (the kernel's `RESOLVE_IN_ROOT`): `..` stops at the root, and symlinks,
/// absolute ones included, are followed inside it.
///
/// Uses `openat2` where the kernel has it. Kernels before 5.6, seccomp
/// filters that refuse it, and qemu-user (which does not emulate it) get
/// the same resolution done one component at a time: every component is
/// opened `O_PATH|O_NOFOLLOW` beneath the descriptor of its parent, `..`
/// returns to a descriptor already held (never the kernel's `..`), and a
/// symlink's target is spliced into what is left of the path.
pub fn openat_in_root(root: &impl AsFd, path: &OsStr, flags: OFlags, mounts: Beneath) -> rustix::io::Result<OwnedFd> {
    let rel = relative(path);
    let mut how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    if mounts == Beneath::SameMount {
        how |= ResolveFlags::NO_XDEV;
    }
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), how) {
        Err(Errno::NOSYS | Errno::PERM) => walk_in_root(root.as_fd(), path.as_bytes(), flags, mounts),
        other => other,
    }
}

/// `path` relative to the root: its leading slashes gone, `.` for the root.
fn relative(path: &OsStr) -> &OsStr {
    let path = path.as_bytes();
    let rel = &path[path.iter().position(|&b| b != b'/').unwrap_or(path.len())..];
    if rel.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    }
}

/// Most symlinks followed in one resolution, as the kernel allows.
const MAX_LINKS: u32 = 40;

/// `openat_in_root` without `openat2`.
fn walk_in_root(root: BorrowedFd<'_>, path: &[u8], mut flags: OFlags, mounts: Beneath) -> rustix::io::Result<OwnedFd> {
    let root_dev = rustix::fs::fstat(root)?.st_dev;
    if path.ends_with(b"/") {
        flags |= OFlags::DIRECTORY;
    }
    // What is left of the path, next component last.
    let mut left: Vec<Vec<u8>> = Vec::new();
    push_components(&mut left, path);
    // The directories walked below the root, innermost last.
    let mut walked: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = left.pop() {
        if name == b".." {
            walked.pop();
            continue;
        }
        let dir = walked.last().map_or(root, |d| d.as_fd());
        let fd = rustix::fs::openat(dir, OsStr::from_bytes(&name), OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        if mounts == Beneath::SameMount && st.st_dev != root_dev {
            return Err(Errno::XDEV);
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(&fd, c"", Vec::new())?;
                if target.as_bytes().starts_with(b"/") {
                    walked.clear();
                }
                push_components(&mut left, target.as_bytes());
            }
            FileType::Directory => walked.push(fd),
            // The last component: opened below by its name, without
            // following (a symlink swapped in meanwhile fails with ELOOP).
            _ if left.is_empty() => {
                return rustix::fs::openat(dir, OsStr::from_bytes(&name), flags | OFlags::NOFOLLOW, Mode::empty());
            }
            _ => return Err(Errno::NOTDIR),
        }
    }
    let dir = walked.last().map_or(root, |d| d.as_fd());
    rustix::fs::openat(dir, c".", flags, Mode::empty())
}

/// Pushes the components of `path` onto `left` so that the first pops
/// first; empty and `.` components are dropped.
fn push_components(left: &mut Vec<Vec<u8>>, path: &[u8]) {
    left.extend(path.split(|&b| b == b'/').rev().filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec));
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
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn root_fd(root: &Path) -> OwnedFd {
        rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    /// What opening `path` beneath `root` gave: the file's content, "<dir>",
    /// or the errno.
    fn outcome(r: rustix::io::Result<OwnedFd>) -> Result<String, Errno> {
        let mut f = File::from(r?);
        if f.metadata().unwrap().is_dir() {
            return Ok("<dir>".into());
        }
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        Ok(s)
    }

    /// A rootfs beside a host secret, with every kind of link that tries
    /// to leave it.
    fn hostile_tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(outer.path().join("secret"), b"host secret").unwrap();
        std::fs::write(root.join("secret"), b"rootfs secret").unwrap();
        std::fs::write(root.join("bin/app.wasm"), b"inside").unwrap();
        symlink("/bin/app.wasm", root.join("abs")).unwrap();
        symlink("../secret", root.join("rel-out")).unwrap();
        symlink("../../../../../secret", root.join("a/b/deep-out")).unwrap();
        symlink(outer.path().join("secret"), root.join("abs-out")).unwrap();
        symlink(outer.path(), root.join("host-dir")).unwrap();
        symlink("/", root.join("a/b/top")).unwrap();
        symlink("..", root.join("a/b/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("chain2", root.join("chain1")).unwrap();
        symlink("/a/b/top/bin/app.wasm", root.join("chain2")).unwrap();
        (outer, root)
    }

    const PATHS: &[&str] = &[
        "/abs",
        "abs",
        "/rel-out",
        "/abs-out",
        "/a/b/deep-out",
        "/host-dir/secret",
        "/host-dir/rootfs/bin/app.wasm",
        "/../secret",
        "../../secret",
        "/a/b/top/../../secret",
        "/a/b/up/up/up/secret",
        "/a/b/../../../bin/./app.wasm",
        "/loop1",
        "/chain1",
        "/bin/app.wasm/",
        "/bin/app.wasm/..",
        "/bin/missing",
        "/",
        "",
        "a/b/",
    ];

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (outer, root) = hostile_tree();
        let mut s = String::new();
        // absolute symlink: re-rooted, finds the rootfs's own file
        open_in_root(&root, "/abs").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        for p in PATHS {
            let got = outcome(openat_in_root(&root_fd(&root), OsStr::new(p), OFlags::RDONLY | OFlags::CLOEXEC, Beneath::AnyMount));
            assert_ne!(got.as_deref(), Ok("host secret"), "{p} reached the host file");
        }
        assert!(outer.path().join("secret").exists());
    }

    /// The walk that replaces openat2 where the kernel lacks it resolves
    /// every hostile path exactly as the kernel's RESOLVE_IN_ROOT does.
    #[test]
    fn the_walk_without_openat2_resolves_as_the_kernel_does() {
        let (_outer, root) = hostile_tree();
        let dir = root_fd(&root);
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        for p in PATHS {
            let kernel = outcome(rustix::fs::openat2(&dir, relative(OsStr::new(p)), flags, Mode::empty(), how));
            let walked = outcome(walk_in_root(dir.as_fd(), p.as_bytes(), flags, Beneath::AnyMount));
            assert_eq!(walked, kernel, "path {p:?}");
            assert_ne!(walked.as_deref(), Ok("host secret"), "{p} reached the host file");
        }
        // Directories only, as layer unpacking opens parents.
        for p in ["/abs", "/a/b/top/a", "/a/b/up", "/bin/app.wasm"] {
            let kernel = outcome(rustix::fs::openat2(&dir, relative(OsStr::new(p)), flags | OFlags::DIRECTORY, Mode::empty(), how));
            let walked = outcome(walk_in_root(dir.as_fd(), p.as_bytes(), flags | OFlags::DIRECTORY, Beneath::AnyMount));
            assert_eq!(walked, kernel, "directory {p:?}");
        }
    }

    /// Without openat2, a walk that would cross into another mount (here
    /// /proc below /) is refused as the kernel's RESOLVE_NO_XDEV refuses it.
    #[test]
    fn the_walk_does_not_cross_mounts_when_asked_not_to() {
        let dir = root_fd(Path::new("/"));
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
        let kernel = rustix::fs::openat2(&dir, "proc/version", flags, Mode::empty(), how).map(drop);
        let walked = walk_in_root(dir.as_fd(), b"/proc/version", flags, Beneath::SameMount).map(drop);
        assert_eq!(kernel, Err(Errno::XDEV));
        assert_eq!(walked, Err(Errno::XDEV));
        assert!(walk_in_root(dir.as_fd(), b"/proc/version", flags, Beneath::AnyMount).is_ok());
    }
}
