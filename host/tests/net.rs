//! Socket grants: a guest reaches exactly the addresses its rules allow.
//! All traffic stays on loopback.
mod common;
use common::{guests, Berth};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback server that answers each connection with `pong:<request>`
/// and records every request it saw, until it is finished.
struct PongServer {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl PongServer {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Bounded: a test that forgets to finish still ends.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut buf = Vec::new();
                        c.read_to_end(&mut buf).unwrap();
                        c.write_all(b"pong:").unwrap();
                        c.write_all(&buf).unwrap();
                        seen.push(String::from_utf8_lossy(&buf).into_owned());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            seen
        });
        PongServer { port, stop, handle }
    }

    /// Stops the server; returns the requests it received.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

#[test]
fn connect_to_granted_address_succeeds() {
    let server = PongServer::start();
    let port = server.port;
    let rule = format!("127.0.0.1/32:{port}");
    let out = Berth::new().run(&["run", "--net-connect", &rule, guests::TCP_CLIENT_P2, &format!("127.0.0.1:{port}")]);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "reply=pong:ping");
    assert_eq!(server.finish(), vec!["ping".to_string()]);
}

#[test]
fn connect_elsewhere_is_denied_inside_the_guest() {
    let server = PongServer::start();
    let port = server.port;
    let b = Berth::new();
    let target = format!("127.0.0.1:{port}");
    // no rule at all; a rule for another port; a rule for another address
    let other_port = format!("127.0.0.1/32:{}", port.wrapping_add(1).max(1));
    for extra in [vec![], vec!["--net-connect", &other_port], vec!["--net-connect", "127.0.0.2/32:1-65535"]] {
        let mut args = vec!["run"];
        args.extend(extra.iter().copied());
        args.extend([guests::TCP_CLIENT_P2, target.as_str()]);
        let out = b.run(&args);
        out.expect_code(1);
        assert!(out.stdout.contains("connect-error kind=PermissionDenied"), "with {extra:?} the guest must see a permission error, got {}", out.stdout);
    }
    // the server never saw a connection from the guest
    assert_eq!(server.finish(), Vec::<String>::new());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn listen_on_granted_address_serves() {
    let port = free_port();
    let b = Berth::new();
    let rule = format!("127.0.0.1/32:{port}");
    let mut child =
        b.cmd().args(["run", "--net-listen", &rule, guests::TCP_SERVER_P2, &format!("127.0.0.1:{port}")]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"hi").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "pong:hi");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn listen_without_grant_is_denied() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::new();
    // a connect rule does not allow listening
    let out = b.run(&["run", "--net-connect", &format!("127.0.0.1/32:{port}"), guests::TCP_SERVER_P2, &addr]);
    out.expect_code(1);
    assert!(out.stdout.contains("listen-error kind=PermissionDenied"), "{}", out.stdout);
    let out = b.run(&["run", guests::TCP_SERVER_P2, &addr]);
    out.expect_code(1);
    assert!(out.stdout.contains("listen-error"), "{}", out.stdout);
}

#[test]
fn bad_rules_are_clear_errors() {
    Berth::new().run(&["run", "--net-connect", "localhost:80", guests::TCP_CLIENT_P2, "x"]).expect_berth_error(&["--net-connect", "localhost:80", "CIDR:PORT"]);
}
