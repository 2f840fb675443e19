//! A `berth serve` (or `berth run` of a wasi:http component) on loopback,
//! and curl as its client.
use super::Berth;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(b: &Berth, extra: &[&str]) -> Server {
        let mut cmd = b.cmd();
        cmd.args(["serve", super::guests::HTTP_HELLO_P2, "--addr", "127.0.0.1:0"]).args(extra);
        Server::spawn(cmd)
    }

    /// Runs `cmd` (a berth that serves) and waits until it listens.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut before = String::new();
        let port = loop {
            let line = lines.next().unwrap_or_else(|| panic!("berth serve exited before listening; it wrote:\n{before}")).unwrap();
            if let Some(rest) = line.strip_prefix("berth: serving on http://127.0.0.1:") {
                break rest.trim_end_matches('/').parse().unwrap();
            }
            before.push_str(&line);
            before.push('\n');
        };
        // Keep draining stderr so the server never blocks on it.
        let log = Arc::new(Mutex::new(before));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Server { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The server's open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).expect("the server's /proc fd list").count()
    }

    /// The server's resident memory and CPU time, from /proc.
    pub fn usage(&self) -> berth_host::native::Usage {
        berth_host::native::Usage::of_process(self.child.id() as i32)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` (status and body) of one request.
pub fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl").args(["-s", "-m", "20", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// A raw loopback connection to the server (for clients curl cannot play).
pub fn connect(port: u16) -> std::net::TcpStream {
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to the server")
}

/// One `Connection: close` GET on a fresh connection: the status, or
/// `None` when the server closed without answering.
pub fn get_close(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut c = connect(port);
    c.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: berth-test\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).ok()?;
    status_of(&out)
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(response.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// Whether the server closes `c` within `limit` (whatever it sent first).
pub fn closed_within(c: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    let end = std::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            // A reset is a close too.
            Err(_) => return true,
        }
    }
}
