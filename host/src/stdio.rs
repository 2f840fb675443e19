//! The stdio paths containerd gives a container: FIFOs (which ctr, CRI
//! and the shim's own copies read and write) or plain files. Errors are
//! the bare io error: callers name the path and what it was for.
use std::path::Path;

/// Opens a stdio path without blocking on the other end of a FIFO: an
/// output FIFO is opened read-write (its reader may not be there yet), an
/// input FIFO non-blocking and then switched to blocking reads (so the
/// guest sees EOF when the writer closes); files are read or appended.
pub fn open(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    let mut o = std::fs::OpenOptions::new();
    let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
    match (fifo, write) {
        (true, true) => o.read(true).write(true),
        (true, false) => {
            flags |= libc::O_NONBLOCK;
            o.read(true)
        }
        (false, true) => o.append(true).create(true),
        (false, false) => o.read(true),
    };
    let f = o.custom_flags(flags).open(path)?;
    if fifo && !write {
        let fl = rustix::fs::fcntl_getfl(&f)?;
        rustix::fs::fcntl_setfl(&f, fl - rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok(f)
}

/// [`open`] of a path containerd gave, where empty means none
/// (`/dev/null`).
pub fn open_or_null(path: &str, write: bool) -> std::io::Result<std::fs::File> {
    open(Path::new(if path.is_empty() { "/dev/null" } else { path }), write)
}
