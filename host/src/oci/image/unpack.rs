//! Unpacking image layers into a rootfs, safely.
//!
//! Every path is resolved beneath the rootfs as with `openat2(RESOLVE_IN_ROOT)`
//! (`crate::rooted`, which walks it itself where the kernel lacks openat2):
//! `..`, absolute symlinks and symlinked parents all land inside the root,
//! never outside. The final component is then created with `*at` calls that
//! do not follow symlinks (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`), after removing what was there.
//! Entries naming `..` are refused; device nodes and FIFOs are skipped;
//! setuid/setgid bits are dropped; sizes and entry counts are capped.
use crate::rooted::{openat_in_root, Beneath};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Caps applied to one rootfs (all its layers together).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of regular-file content.
    pub max_bytes: u64,
    /// Total tar entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 16 << 30, max_entries: 1_000_000 }
    }
}

/// What unpacking did, summed over layers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes, FIFOs and unknown entry types, not created.
    pub skipped: u64,
    /// Files and directories whose setuid/setgid bits were dropped.
    pub stripped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {what}")]
    Refused { path: String, what: &'static str },
    #[error("layer entry {path:?}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer (is it a valid tar, gzip or zstd stream?)")]
    Read(#[source] io::Error),
    #[error("the layers unpack to more than {max} bytes of files; the image is too large for this limit")]
    TooLarge { max: u64 },
    #[error("the layers hold more than {max} entries")]
    TooManyEntries { max: u64 },
    #[error("opening rootfs {path}")]
    Root {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks one uncompressed tar layer into the rootfs at `root`, applying
/// OCI whiteouts against what earlier layers put there.
pub fn unpack_layer(root: &Path, tar: impl Read, limits: &Limits, stats: &mut Stats) -> Result<(), UnpackError> {
    let root_fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::Root { path: root.display().to_string(), source: e.into() })?;
    let is_root = rustix::process::geteuid().is_root();
    let mut layer = Layer { root: root_fd, created: HashSet::new(), is_root };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries { max: limits.max_entries });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refused = |what| UnpackError::Refused { path: shown.clone(), what };
        let ioe = |source: io::Error| UnpackError::Io { path: shown.clone(), source };
        let comps = clean(&raw).map_err(refused)?;
        let Some((name, parent)) = comps.split_last() else { continue };
        let name = name.as_os_str();
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let owner = (header.uid().unwrap_or(0) as u32, header.gid().unwrap_or(0) as u32);

        if let Some(target) = name.as_bytes().strip_prefix(b".wh.") {
            layer.whiteout(parent, target).map_err(|e| match e {
                Fail::Refused(w) => refused(w),
                Fail::Io(e) => ioe(e),
            })?;
            continue;
        }
        use tar::EntryType as T;
        let result = match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let declared = header.size().map_err(ioe)?;
                let remaining = limits.max_bytes.saturating_sub(stats.bytes);
                if declared > remaining {
                    return Err(UnpackError::TooLarge { max: limits.max_bytes });
                }
                let r = layer.file(parent, name, mode, owner, &mut entry, remaining);
                if let Ok(n) = r {
                    stats.bytes += n;
                    if n > remaining {
                        return Err(UnpackError::TooLarge { max: limits.max_bytes });
                    }
                }
                r.map(|_| ())
            }
            T::Directory => layer.dir(parent, name, mode, owner),
            T::Symlink => {
                let target = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(refused("symlink with an empty or invalid target"));
                }
                layer.symlink(parent, name, &target, owner)
            }
            T::Link => {
                let target = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let target = clean(&target).map_err(refused)?;
                layer.hardlink(parent, name, &target)
            }
            T::Char | T::Block | T::Fifo => {
                tracing::debug!(path = %shown, kind = ?kind, "device node or FIFO in layer not created");
                stats.skipped += 1;
                Ok(())
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "layer entry of unsupported type skipped");
                stats.skipped += 1;
                Ok(())
            }
        };
        match result {
            Ok(()) => {}
            Err(Fail::Refused(w)) => return Err(refused(w)),
            Err(Fail::Io(e)) => return Err(ioe(e)),
        }
        if mode & 0o6000 != 0 && matches!(kind, T::Regular | T::Continuous | T::Directory | T::GNUSparse) {
            stats.stripped += 1;
        }
    }
    Ok(())
}

/// Splits an entry path into components: leading `/` and `./` dropped,
/// empty and `.` components skipped; `..` and NUL refused.
pub fn clean(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..'; layers must not reach outside the rootfs"),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

enum Fail {
    Refused(&'static str),
    Io(io::Error),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Io(e.into())
    }
}
impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

struct Layer {
    root: OwnedFd,
    /// Paths this layer created (an opaque whiteout keeps them).
    created: HashSet<Vec<u8>>,
    is_root: bool,
}

fn joined(comps: &[OsString]) -> Vec<u8> {
    comps.iter().map(|c| c.as_bytes()).collect::<Vec<_>>().join(&b'/')
}

fn child(parent: &[OsString], name: &OsStr) -> Vec<u8> {
    let mut p = joined(parent);
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name.as_bytes());
    p
}

impl Layer {
    /// Opens the directory `comps` beneath the root, symlinks resolved
    /// inside it; with `create`, missing directories are made (0755).
    fn open_dir(&mut self, comps: &[OsString], create: bool) -> Result<Option<OwnedFd>, Fail> {
        let path = joined(comps);
        let path: &OsStr = if path.is_empty() { OsStr::new(".") } else { OsStr::from_bytes(&path) };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let open = |root: &OwnedFd| openat_in_root(root, path, flags, Beneath::AnyMount);
        match open(&self.root) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if create && !comps.is_empty() => {
                let (last, up) = comps.split_last().expect("non-empty");
                let parent = self.open_dir(up, true)?.expect("created");
                match rustix::fs::mkdirat(&parent, last.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) => {
                        self.created.insert(joined(comps));
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(Some(open(&self.root)?))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR) => Err(Fail::Refused("a parent of this entry is not a directory")),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes whatever is at `name` in `dir` (a directory recursively,
    /// without following symlinks).
    fn remove(dir: &OwnedFd, name: &OsStr) -> Result<(), Fail> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
                let d = cap_std::fs::Dir::from_std_file(std::fs::File::from(dir.try_clone()?));
                Ok(d.remove_dir_all(Path::new(name))?)
            }
            Ok(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
        }
    }

    fn chown(&self, dir: &OwnedFd, name: &OsStr, (uid, gid): (u32, u32)) -> Result<(), Fail> {
        if self.is_root {
            use rustix::fs::{Gid, Uid};
            rustix::fs::chownat(dir, name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    fn file(&mut self, parent: &[OsString], name: &OsStr, mode: u32, owner: (u32, u32), data: &mut impl Read, budget: u64) -> Result<u64, Fail> {
        let dir = self.open_dir(parent, true)?.expect("created");
        Self::remove(&dir, name)?;
        let fd =
            rustix::fs::openat(&dir, name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))?;
        let mut f = std::fs::File::from(fd);
        let n = io::copy(&mut data.take(budget.saturating_add(1)), &mut f)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode & 0o777))?;
        self.chown(&dir, name, owner)?;
        self.created.insert(child(parent, name));
        Ok(n)
    }

    fn dir(&mut self, parent: &[OsString], name: &OsStr, mode: u32, owner: (u32, u32)) -> Result<(), Fail> {
        let dir = self.open_dir(parent, true)?.expect("created");
        let existing = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let is_dir = matches!(&existing, Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory);
        if !is_dir {
            Self::remove(&dir, name)?;
            rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))?;
        }
        let fd = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        // Keep the owner able to fill the directory when not root.
        let mode = if self.is_root { mode & 0o1777 } else { (mode & 0o1777) | 0o700 };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        self.chown(&dir, name, owner)?;
        self.created.insert(child(parent, name));
        Ok(())
    }

    fn symlink(&mut self, parent: &[OsString], name: &OsStr, target: &[u8], owner: (u32, u32)) -> Result<(), Fail> {
        let dir = self.open_dir(parent, true)?.expect("created");
        Self::remove(&dir, name)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, name)?;
        self.chown(&dir, name, owner)?;
        self.created.insert(child(parent, name));
        Ok(())
    }

    fn hardlink(&mut self, parent: &[OsString], name: &OsStr, target: &[OsString]) -> Result<(), Fail> {
        let Some((tname, tparent)) = target.split_last() else {
            return Err(Fail::Refused("hard link with an empty target"));
        };
        if child(parent, name) == joined(target) {
            return Ok(());
        }
        let tdir = self.open_dir(tparent, false)?.ok_or(Fail::Refused("hard link target is not in the rootfs"))?;
        match rustix::fs::statat(&tdir, tname.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
                return Err(Fail::Refused("hard link to a directory"))
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(Fail::Refused("hard link target is not in the rootfs")),
            Err(e) => return Err(e.into()),
        }
        let dir = self.open_dir(parent, true)?.expect("created");
        Self::remove(&dir, name)?;
        rustix::fs::linkat(&tdir, tname.as_os_str(), &dir, name, AtFlags::empty())?;
        self.created.insert(child(parent, name));
        Ok(())
    }

    /// `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq` empties
    /// the directory of everything lower layers put there.
    fn whiteout(&mut self, parent: &[OsString], target: &[u8]) -> Result<(), Fail> {
        let Some(dir) = self.open_dir(parent, false)? else { return Ok(()) };
        if target == b".wh..opq" {
            let d = cap_std::fs::Dir::from_std_file(std::fs::File::from(dir.try_clone()?));
            for e in d.entries()? {
                let e = e?;
                let n = e.file_name();
                if !self.created.contains(&child(parent, &n)) {
                    Self::remove(&dir, &n)?;
                }
            }
            return Ok(());
        }
        match target {
            b"" | b"." | b".." => Err(Fail::Refused("whiteout of an invalid name")),
            t if t.contains(&b'/') => Err(Fail::Refused("whiteout of an invalid name")),
            t => Self::remove(&dir, OsStr::from_bytes(t)),
        }
    }
}
