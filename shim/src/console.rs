//! Terminals of native containers (`ctr run -t`): the container's init
//! sends its pty master over a Unix socket (the OCI console socket); the
//! shim copies between it and containerd's stdin/stdout FIFOs and applies
//! window sizes (ResizePty).
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A console socket the container's init connects to.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds a fresh socket under `/run/berth/console` (short: socket
    /// paths are limited to 108 bytes, bundle paths can be longer).
    pub fn new() -> Result<ConsoleSocket, ConsoleError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new("/run/berth/console");
        std::fs::create_dir_all(dir).map_err(ConsoleError::Socket)?;
        let path = dir.join(format!("{}-{}.sock", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(ConsoleError::Socket)?;
        Ok(ConsoleSocket { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the init sent (it connected while being created).
    pub fn receive(&self, timeout: Duration) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        recv_fd(stream.as_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("making its console socket")]
    Socket(#[source] std::io::Error),
    #[error("receiving its terminal")]
    Receive(#[source] std::io::Error),
    #[error("connecting its terminal")]
    Connect(#[source] std::io::Error),
}

/// Receives the terminal the container's process sent over `socket` and
/// connects it to containerd's stdin and stdout FIFOs; the pty master.
pub async fn attach(socket: ConsoleSocket, stdin: &str, stdout: &str) -> Result<File, ConsoleError> {
    let master = tokio::task::spawn_blocking(move || socket.receive(Duration::from_secs(10))).await.expect("console task");
    let master = File::from(master.map_err(ConsoleError::Receive)?);
    copy_io(&master, stdin, stdout).map_err(ConsoleError::Connect)?;
    Ok(master)
}

/// Receives one file descriptor (SCM_RIGHTS) from a connected socket.
/// A message with no descriptor, more than one, or a truncated control
/// part is refused, and every descriptor it brought is closed.
fn recv_fd(sock: std::os::fd::BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut data = [0u8; 256];
    // Room for one more descriptor than expected: a sender of two is seen
    // (and refused) as such, not as a truncation.
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(sock, &mut [std::io::IoSliceMut::new(&mut data)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("the console socket's message was truncated (more than one descriptor sent)"));
    }
    match (fds.pop(), fds.is_empty()) {
        (Some(fd), true) => Ok(fd),
        (None, _) => Err(std::io::Error::other("the console socket carried no terminal")),
        (Some(_), false) => Err(std::io::Error::other("the console socket carried more than one descriptor")),
    }
}

/// Copies containerd's stdin FIFO into the terminal and the terminal into
/// its stdout FIFO, on two threads that end with the streams.
fn copy_io(master: &File, stdin: &str, stdout: &str) -> std::io::Result<()> {
    if !stdin.is_empty() {
        let mut input = berth_host::stdio::open(Path::new(stdin), false)?;
        let mut out = master.try_clone()?;
        std::thread::spawn(move || std::io::copy(&mut input, &mut out));
    }
    if !stdout.is_empty() {
        let mut output = berth_host::stdio::open(Path::new(stdout), true)?;
        let mut input = master.try_clone()?;
        // EIO once the last process holding the terminal has exited.
        std::thread::spawn(move || std::io::copy(&mut input, &mut output));
    }
    Ok(())
}

/// Sets the terminal's window size.
pub fn resize(master: &File, width: u32, height: u32) -> std::io::Result<()> {
    let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ on a pty master with a valid winsize.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::net::UnixStream;

    fn send(sock: &UnixStream, fds: &[BorrowedFd<'_>]) {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        }
        rustix::net::sendmsg(sock, &[std::io::IoSlice::new(b"x")], &mut control, SendFlags::empty()).unwrap();
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn one_descriptor_is_taken_and_any_other_message_leaves_none_open() {
        // It counts the process's descriptors, which tests beside it open
        // and close.
        if !crate::alone::in_own_process("console::tests::one_descriptor_is_taken_and_any_other_message_leaves_none_open") {
            return;
        }
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(&a, &[file.as_fd()]);
        let got = recv_fd(b.as_fd()).unwrap();
        assert_eq!(rustix::fs::fstat(&got).unwrap().st_rdev, rustix::fs::fstat(&file).unwrap().st_rdev);
        drop(got);
        let before = open_fds();
        for n in [0, 2, 12] {
            let fds: Vec<BorrowedFd<'_>> = (0..n).map(|_| file.as_fd()).collect();
            send(&a, &fds);
            let e = recv_fd(b.as_fd()).unwrap_err().to_string();
            assert!(e.contains("console socket"), "{n} descriptors: {e}");
            assert_eq!(open_fds(), before, "{n} descriptors sent: every one received must be closed");
        }
    }
}
