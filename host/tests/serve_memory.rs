//! `berth serve`'s memory stays flat over many connections: 100,000
//! `Connection: close` requests on loopback, RSS compared after the first
//! 10,000 and at the end. (The curve over time is in BENCHMARKS.md.)
mod common;
use common::server::{get_close, Server};
use common::Berth;

/// `n` connection-close requests from 4 client threads; every one must be 200.
fn requests(port: u16, n: usize) {
    let clients: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..n / 4 {
                    let status = get_close(port, &format!("/c{t}-{i}"));
                    assert_eq!(status, Some(200), "request {i} of client {t}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn rss_plateaus_over_100k_connection_close_requests() {
    let b = Berth::new();
    let s = Server::start(&b, &[]);
    requests(s.port, 10_000);
    let first = s.usage().memory / 1024;
    requests(s.port, 90_000);
    let last = s.usage().memory / 1024;
    eprintln!("RSS after 10,000 requests: {first} KiB; after 100,000: {last} KiB");
    assert!(last <= first + 10 * 1024, "RSS grew from {first} KiB to {last} KiB over 90,000 connections");
}
