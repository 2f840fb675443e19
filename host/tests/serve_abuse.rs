//! `berth serve` against impatient and hostile clients, on loopback: queue
//! places given back by abandoned requests, the header-read timeout, the
//! connection cap, backoff on accept errors, and a mixed load after which
//! the full capacity and the fd count are back. Bounded in count and time.
mod common;
use common::server::{closed_within, connect, curl, get_close, Server};
use common::{guests, Berth};
use std::io::Write;
use std::thread::{sleep, spawn};
use std::time::Duration;

fn curl_status(url: String) -> std::thread::JoinHandle<String> {
    spawn(move || curl(&[&url]).0)
}

#[test]
fn requests_abandoned_in_the_queue_give_back_their_places() {
    let b = Berth::new();
    let s = Server::start(&b, &["--max-concurrency", "1", "--max-queue", "4", "--request-timeout", "3s"]);
    // /loop holds the only slot until its 3 s limit.
    let hold = curl_status(s.url("/loop"));
    sleep(Duration::from_millis(300));
    // Four clients queue behind it, then give up.
    let quitters: Vec<_> = (0..4)
        .map(|i| {
            let mut c = connect(s.port);
            c.write_all(format!("GET /quit{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
            c
        })
        .collect();
    sleep(Duration::from_millis(300));
    assert_eq!(curl(&[&s.url("/full")]).0, "503", "the four quitters fill the queue while they wait");
    drop(quitters);
    assert_eq!(hold.join().unwrap(), "504");
    // Their places are free again: four requests queue behind a slow one
    // and are all served.
    let hold = curl_status(s.url("/slow"));
    sleep(Duration::from_millis(200));
    let queued: Vec<_> = (0..4).map(|i| curl_status(s.url(&format!("/again{i}")))).collect();
    for q in queued {
        assert_eq!(q.join().unwrap(), "200", "a queued request was refused: the queue lost places");
    }
    assert_eq!(hold.join().unwrap(), "200");
}

#[test]
fn slow_silent_and_idle_clients_are_cut_off_at_the_header_timeout() {
    let b = Berth::new();
    let s = Server::start(&b, &["--header-timeout", "1s"]);
    let mut silent = connect(s.port);
    let mut half_preface = connect(s.port);
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut idle = connect(s.port);
    idle.write_all(b"GET /then-idle HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // A slow-loris: a request head one byte every 100 ms, 8 s in all.
    let port = s.port;
    let loris = spawn(move || {
        let mut c = connect(port);
        let head = format!("GET /loris HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "a".repeat(60));
        for (sent, byte) in head.bytes().enumerate() {
            if c.write_all(&[byte]).is_err() {
                return sent;
            }
            sleep(Duration::from_millis(100));
        }
        head.len()
    });
    // Well-behaved clients are served meanwhile.
    for i in 0..5 {
        assert_eq!(curl(&[&s.url(&format!("/good{i}"))]).0, "200");
    }
    for (name, c) in [("silent", &mut silent), ("half an HTTP/2 preface", &mut half_preface), ("idle keep-alive", &mut idle)] {
        assert!(closed_within(c, Duration::from_secs(5)), "the {name} connection was not closed");
    }
    let sent = loris.join().unwrap();
    assert!(sent < 60, "the slow-loris sent its whole head ({sent} bytes) without being cut off");
    assert_eq!(curl(&[&s.url("/after")]).0, "200");
}

#[test]
fn connections_past_the_cap_wait_to_be_accepted() {
    let b = Berth::new();
    let s = Server::start(&b, &["--max-connections", "4"]);
    assert_eq!(curl(&[&s.url("/warm")]).0, "200");
    // Four open connections (silent, within the header timeout) hold the cap.
    let mut held: Vec<_> = (0..4).map(|_| connect(s.port)).collect();
    sleep(Duration::from_millis(200));
    assert_eq!(curl(&["-m", "1", &s.url("/fifth")]).0, "000", "a fifth connection was served past the cap of 4");
    held.pop();
    assert_eq!(curl(&[&s.url("/now")]).0, "200");
}

#[test]
fn running_out_of_descriptors_backs_off_instead_of_spinning() {
    use std::os::unix::process::CommandExt;
    const NOFILE: u64 = 64;
    let b = Berth::new();
    let mut cmd = b.cmd();
    cmd.args(["serve", guests::HTTP_HELLO_P2, "--addr", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: NOFILE, rlim_max: NOFILE };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let s = Server::spawn(cmd);
    assert_eq!(curl(&[&s.url("/warm")]).0, "200");
    // More connections than the server has descriptors left: accept fails
    // with EMFILE until some close.
    let conns: Vec<_> = (0..NOFILE as usize + 16).map(|_| connect(s.port)).collect();
    sleep(Duration::from_millis(300));
    assert!(s.fds() >= NOFILE as usize - 1, "the server's descriptor table did not fill ({} open)", s.fds());
    let before = s.usage().cpu_ns;
    sleep(Duration::from_secs(2));
    let cpu_ms = (s.usage().cpu_ns - before) / 1_000_000;
    // A retry loop without a pause spins a core: ~2,000 ms in 2 s.
    assert!(cpu_ms < 500, "the server used {cpu_ms} ms of CPU in 2 s while out of descriptors");
    let warnings = s.log.lock().unwrap().matches("accept failed").count();
    assert!(warnings <= 2, "{warnings} accept warnings in 2 s");
    drop(conns);
    assert_eq!(curl(&[&s.url("/recovered")]).0, "200");
}

/// The server's fd count settles back to `baseline` within a few seconds.
fn fds_return_to(s: &Server, baseline: usize) -> usize {
    let mut now = s.fds();
    for _ in 0..50 {
        if now <= baseline {
            break;
        }
        sleep(Duration::from_millis(100));
        now = s.fds();
    }
    now
}

/// `n` GETs over one HTTP/2 (prior knowledge) connection, 10 streams at a
/// time; their statuses (0: the stream failed).
fn h2_requests(port: u16, prefix: &str, n: usize) -> Vec<u16> {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut statuses = Vec::new();
        for batch in (0..n).collect::<Vec<_>>().chunks(10) {
            let calls = batch.iter().map(|i| {
                let mut send = send.clone();
                let req = hyper::Request::get(format!("http://127.0.0.1:{port}/{prefix}-{i}")).body(Empty::<bytes::Bytes>::new()).unwrap();
                async move {
                    match send.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            resp.into_body().collect().await.map(|_| status).unwrap_or(0)
                        }
                        Err(_) => 0,
                    }
                }
            });
            let mut set = tokio::task::JoinSet::new();
            for c in calls {
                set.spawn(c);
            }
            while let Some(s) = set.join_next().await {
                statuses.push(s.unwrap());
            }
        }
        statuses
    })
}

/// Opens and at once cancels up to `n` streams on one HTTP/2 connection,
/// until the server closes it.
fn h2_rapid_reset(port: u16, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let Ok((client, conn)) = h2::client::handshake(tcp).await else { return };
        tokio::spawn(conn);
        let Ok(mut client) = client.ready().await else { return };
        for i in 0..n {
            let req = hyper::Request::get(format!("http://127.0.0.1:{port}/reset-{i}")).body(()).unwrap();
            // Dropping both halves of the stream at once resets it (CANCEL).
            if client.send_request(req, true).is_err() {
                return;
            }
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => return,
            };
        }
    })
}

/// curl arguments for `n` URLs whose bodies go to /dev/null.
fn discarded(s: &Server, prefix: &str, n: usize) -> Vec<String> {
    (0..n).flat_map(|i| ["-o".to_string(), "/dev/null".to_string(), s.url(&format!("/{prefix}-{i}"))]).collect()
}

#[test]
fn mixed_abuse_leaves_good_clients_served_and_capacity_whole() {
    const SLOTS: usize = 4;
    // Room for the HTTP/2 flood's open streams (at most 128) and the good clients.
    const QUEUE: usize = 200;
    let b = Berth::new();
    let (slots, queue) = (SLOTS.to_string(), QUEUE.to_string());
    let mut cmd = b.cmd();
    cmd.env("BERTH_LOG", "info").args(["serve", guests::HTTP_HELLO_P2, "--addr", "127.0.0.1:0"]);
    cmd.args(["--max-concurrency", &slots, "--max-queue", &queue, "--header-timeout", "1s", "--max-body-size", "1MiB"]);
    let s = Server::spawn(cmd);
    assert_eq!(curl(&[&s.url("/warm")]).0, "200");
    // Once the warm-up connection is gone.
    sleep(Duration::from_millis(300));
    let baseline = s.fds();
    let port = s.port;
    let mut good = Vec::new();
    // Keep-alive clients: curl reuses one connection for all its URLs.
    for k in 0..3 {
        let urls = discarded(&s, &format!("ka{k}"), 100);
        good.push(spawn(move || {
            let o = std::process::Command::new("curl").args(["-s", "-m", "120", "-w", "%{http_code}\n"]).args(&urls).output().unwrap();
            String::from_utf8_lossy(&o.stdout).lines().filter(|l| *l != "200").map(str::to_string).collect::<Vec<_>>()
        }));
    }
    // HTTP/2 clients, each multiplexing its requests over one connection.
    for k in 0..2 {
        good.push(spawn(move || h2_requests(port, &format!("h2-{k}"), 60).into_iter().filter(|c| *c != 200).map(|c| c.to_string()).collect()));
    }
    // Connection-close clients.
    for k in 0..2 {
        good.push(spawn(move || (0..200).filter_map(|i| get_close(port, &format!("/close{k}-{i}")).filter(|c| *c != 200).map(|c| c.to_string())).collect()));
    }
    // Clients that abort: in flight, mid-body and queued-or-in-flight.
    let abusers = vec![
        spawn(move || {
            for i in 0..30 {
                let mut c = connect(port);
                c.write_all(format!("GET /slow-abort{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
                sleep(Duration::from_millis(30));
                drop(c);
                let mut c = connect(port);
                let _ = c.write_all(b"POST /mid-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n0123456789");
                sleep(Duration::from_millis(30));
            }
        }),
        // Slow-header clients.
        spawn(move || {
            let lorises: Vec<_> = (0..8).map(|_| connect(port)).collect();
            for _ in 0..30 {
                for mut l in &lorises {
                    let _ = l.write_all(b"G");
                }
                sleep(Duration::from_millis(100));
            }
        }),
        // An HTTP/2 "rapid reset" flood: streams opened and cancelled at once.
        spawn(move || h2_rapid_reset(port, 5000)),
        // Oversize bodies: refused by their declared length.
        spawn(move || {
            for _ in 0..30 {
                let mut c = connect(port);
                let _ = c.write_all(b"POST /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2000000\r\n\r\n");
                let mut out = Vec::new();
                let _ = std::io::Read::read_to_end(&mut c, &mut out);
                assert_eq!(common::server::status_of(&out), Some(413), "{}", String::from_utf8_lossy(&out));
            }
        }),
    ];
    for g in good {
        let bad = g.join().unwrap();
        assert!(
            bad.is_empty(),
            "well-behaved requests failed: {bad:?}\n{}",
            s.log.lock().unwrap().lines().filter(|l| l.contains("503") || l.contains("WARN")).collect::<Vec<_>>().join("\n")
        );
    }
    for a in abusers {
        a.join().unwrap();
    }
    let after = fds_return_to(&s, baseline);
    assert!(after <= baseline, "descriptors left open after the load: {after}, {baseline} before it");
    // The whole queue is there again: with every slot busy (requests whose
    // handlers wait for the rest of their bodies), exactly QUEUE requests
    // wait and are served, and one more is refused.
    let mut holds: Vec<_> = (0..SLOTS)
        .map(|i| {
            let mut c = connect(port);
            c.write_all(format!("POST /hold{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nab").as_bytes()).unwrap();
            c
        })
        .collect();
    let connected = |n: usize| {
        for _ in 0..100 {
            if s.fds() >= baseline + n {
                break;
            }
            sleep(Duration::from_millis(100));
        }
        // A moment more for their request heads to be read.
        sleep(Duration::from_millis(300));
    };
    connected(SLOTS);
    let waiting: Vec<_> = (0..QUEUE).map(|i| spawn(move || get_close(port, &format!("/queued{i}")))).collect();
    connected(SLOTS + QUEUE);
    assert_eq!(curl(&[&s.url("/one-too-many")]).0, "503", "the queue held more than {QUEUE}");
    for h in &mut holds {
        h.write_all(b"cde").unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(h, &mut out).unwrap();
        assert_eq!(common::server::status_of(&out), Some(200), "{}", String::from_utf8_lossy(&out));
    }
    for w in waiting {
        assert_eq!(w.join().unwrap(), Some(200), "a queued request was refused: the queue lost places");
    }
}
