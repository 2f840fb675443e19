//! `tcp-client ADDR`: connects, sends `ping`, prints the reply. On failure
//! prints `connect-error kind=<ErrorKind>` and exits 1.
use std::io::{Read, Write};

fn main() {
    let addr = std::env::args().nth(1).expect("usage: tcp-client ADDR");
    let mut s = match std::net::TcpStream::connect(&addr) {
        Ok(s) => s,
        Err(e) => {
            println!("connect-error kind={:?} msg={e}", e.kind());
            std::process::exit(1);
        }
    };
    s.write_all(b"ping").expect("write");
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    println!("reply={reply}");
}
