//! `tcp-server ADDR`: listens, prints `listening`, answers one client by
//! echoing `pong:<what it sent>`, then exits. On failure to listen prints
//! `listen-error kind=<ErrorKind>` and exits 1.
use std::io::{Read, Write};

fn main() {
    let addr = std::env::args().nth(1).expect("usage: tcp-server ADDR");
    let l = match std::net::TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            println!("listen-error kind={:?} msg={e}", e.kind());
            std::process::exit(1);
        }
    };
    println!("listening");
    let (mut c, _) = l.accept().expect("accept");
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).expect("read");
    c.write_all(b"pong:").expect("write");
    c.write_all(&buf).expect("write");
}
