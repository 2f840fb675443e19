//! Terminals of native containers (`ctr run -t`): the container's init
//! sends its pty master over a Unix socket (the OCI console socket); the
//! shim copies between it and containerd's stdin/stdout FIFOs and applies
//! window sizes (ResizePty).
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    pub fn new() -> std::io::Result<ConsoleSocket> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new("/run/berth/console");
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.sock", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
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
        recv_fd(stream.as_raw_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives the terminal the container's process sent over `socket` and
/// connects it to containerd's stdin and stdout FIFOs; the pty master.
pub async fn attach(socket: ConsoleSocket, stdin: &str, stdout: &str) -> Result<File, String> {
    let master = tokio::task::spawn_blocking(move || socket.receive(Duration::from_secs(10))).await.expect("console task");
    let master = File::from(master.map_err(|e| format!("receiving its terminal: {e}"))?);
    copy_io(&master, stdin, stdout).map_err(|e| format!("connecting its terminal: {e}"))?;
    Ok(master)
}

/// Receives one file descriptor (SCM_RIGHTS) from a connected socket.
fn recv_fd(sock: i32) -> std::io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // Room for one control message carrying one int, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg on a valid socket with a valid msghdr.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer the kernel
    // filled, within msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("the console socket carried no terminal"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
        Ok(OwnedFd::from_raw_fd(fd))
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
