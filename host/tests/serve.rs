//! `berth serve` end to end on loopback: responses, per-request isolation
//! of traps and timeouts, many keep-alive clients, and draining on SIGTERM.
mod common;
use common::server::{curl, Server};
use common::{guests, Berth};
use std::process::{Command, Stdio};

#[test]
fn serves_requests_and_isolates_traps_and_timeouts() {
    let b = Berth::new();
    let s = Server::start(&b, &["--request-timeout", "2s"]);
    let (code, body) = curl(&[&s.url("/hello?x=1")]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "hello from berth: GET /hello?x=1\n"));
    let (code, body) = curl(&["-d", "payload", &s.url("/echo")]);
    assert_eq!(code, "200");
    assert_eq!(body, "hello from berth: POST /echo\npayload");
    let (code, body) = curl(&[&s.url("/trap")]);
    assert_eq!(code, "500", "{body}");
    assert!(body.contains("trapped"), "{body}");
    let (code, body) = curl(&[&s.url("/loop")]);
    assert_eq!(code, "504", "{body}");
    // Neither touched the next request.
    assert_eq!(curl(&[&s.url("/after")]).0, "200");
    // HTTP/2 cleartext with prior knowledge is served too.
    let o = Command::new("curl").args(["-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", &s.url("/h2")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from berth: GET /h2\n\n2");
}

#[test]
fn a_thousand_keep_alive_requests_are_answered() {
    let b = Berth::new();
    let s = Server::start(&b, &[]);
    let urls: Vec<String> = (0..20).map(|i| s.url(&format!("/r{i}"))).collect();
    let clients: Vec<_> = (0..50).map(|_| Command::new("curl").args(["-s", "-m", "60"]).args(&urls).stdout(Stdio::piped()).spawn().expect("curl")).collect();
    let mut answered = 0;
    for c in clients {
        let o = c.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        for i in 0..20 {
            assert!(out.contains(&format!("hello from berth: GET /r{i}\n")), "missing /r{i} in {out}");
        }
        answered += out.matches("hello from berth: GET /r").count();
    }
    assert_eq!(answered, 1000);
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let b = Berth::new();
    let mut s = Server::start(&b, &[]);
    let url = s.url("/slow");
    let req = std::thread::spawn(move || curl(&[&url]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signal to the berth process this test started.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let (code, body) = req.join().unwrap();
    assert_eq!((code.as_str(), body.as_str()), ("200", "hello from berth: GET /slow\n"));
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // No longer accepting.
    assert_eq!(curl(&[&s.url("/late")]).0, "000");
}

#[test]
fn a_module_or_a_non_http_component_is_refused_clearly() {
    let b = Berth::new();
    b.run(&["serve", guests::HELLO_P1, "--addr", "127.0.0.1:0"]).expect_berth_error(&["core module cannot serve HTTP", "wasi:http/incoming-handler"]);
    b.run(&["serve", guests::HELLO_P2, "--addr", "127.0.0.1:0"]).expect_berth_error(&["wasi:http/incoming-handler"]);
}

/// A loopback HTTP server answering `pong`, counting connections.
fn upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong");
        }
    });
    (port, hits)
}

#[test]
fn outbound_http_goes_only_to_allowed_origins() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = Berth::new();
    let (allowed_port, allowed_hits) = upstream();
    let (denied_port, denied_hits) = upstream();
    let s = Server::start(&b, &["--http-outbound", &format!("http://127.0.0.1:{allowed_port}")]);
    let (code, body) = curl(&[&s.url(&format!("/fetch?to=127.0.0.1:{allowed_port}/ping"))]);
    assert_eq!(code, "200");
    assert_eq!(body, "fetched 200: pong\n");
    assert_eq!(allowed_hits.load(SeqCst), 1);
    let (_, body) = curl(&[&s.url(&format!("/fetch?to=127.0.0.1:{denied_port}/ping"))]);
    assert!(body.starts_with("fetch-error:") && body.contains("HttpRequestDenied"), "{body}");
    // The inbound Host header names the allowed origin: it must not widen
    // what the handler may reach (the CVE-2024-32980 class).
    let host = format!("Host: 127.0.0.1:{allowed_port}");
    let (_, body) = curl(&["-H", &host, &s.url(&format!("/fetch?to=127.0.0.1:{denied_port}/ping"))]);
    assert!(body.starts_with("fetch-error:") && body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(denied_hits.load(SeqCst), 0, "a denied origin was contacted");
    // Without any --http-outbound, nothing is reachable.
    let s2 = Server::start(&b, &[]);
    let (_, body) = curl(&[&s2.url(&format!("/fetch?to=127.0.0.1:{allowed_port}/ping"))]);
    assert!(body.starts_with("fetch-error:") && body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(allowed_hits.load(SeqCst), 1);
    b.run(&["serve", guests::HTTP_HELLO_P2, "--http-outbound", "api.example.com"]).expect_berth_error(&[
        "--http-outbound",
        "api.example.com",
        "http[s]://HOST",
    ]);
}

#[test]
fn backpressure_answers_503_with_retry_after_and_413_for_big_bodies() {
    let b = Berth::new();
    let s = Server::start(&b, &["--max-concurrency", "1", "--max-queue", "0", "--max-body-size", "10"]);
    let slow = s.url("/slow");
    let busy = std::thread::spawn(move || curl(&[&slow]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = Command::new("curl").args(["-s", "-i", "-m", "20", &s.url("/second")]).output().unwrap();
    let head = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 503") && head.contains("retry-after: 1"), "{head}");
    assert_eq!(busy.join().unwrap().0, "200", "the request holding the slot finishes normally");
    assert_eq!(curl(&["-d", "0123456789abcdef", &s.url("/big")]).0, "413");
    // A chunked body declares no length: it is capped as it streams.
    let big = s.url("/big-chunked");
    assert_eq!(curl(&["-H", "Transfer-Encoding: chunked", "-d", "0123456789abcdef", &big]).0, "413");
    assert_eq!(curl(&["-H", "Transfer-Encoding: chunked", "-d", "small", &s.url("/ok")]), ("200".into(), "hello from berth: POST /ok\nsmall".into()));
}

#[test]
fn too_many_request_headers_are_refused() {
    let b = Berth::new();
    let s = Server::start(&b, &[]);
    let mut args: Vec<String> = (0..150).flat_map(|i| ["-H".to_string(), format!("X-H{i}: v")]).collect();
    args.push(s.url("/many"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&args).0, "431");
    assert_eq!(curl(&[&s.url("/after")]).0, "200");
}

#[test]
fn the_handler_sees_the_request_headers() {
    let b = Berth::new();
    let s = Server::start(&b, &[]);
    let (code, body) = curl(&["-H", "X-Berth-Test: 42", &s.url("/headers")]);
    assert_eq!(code, "200");
    assert!(body.lines().any(|l| l == "x-berth-test: 42"), "{body}");
}

#[test]
fn berth_run_serves_an_http_component_at_berth_http_addr() {
    let b = Berth::new();
    let mut cmd = b.cmd();
    cmd.env("BERTH_HTTP_ADDR", "127.0.0.1:0").args(["run", guests::HTTP_HELLO_P2]);
    let s = Server::spawn(cmd);
    assert_eq!(curl(&[&s.url("/via-run")]), ("200".into(), "hello from berth: GET /via-run\n".into()));
    b.run_env(&["run", guests::HTTP_HELLO_P2], &[("BERTH_HTTP_ADDR", "not-an-address")]).expect_berth_error(&["BERTH_HTTP_ADDR", "not-an-address", "IP:PORT"]);
}

/// Where the instance pool asked for does not fit the address space (a
/// board whose kernel gives a process 39 bits of it, or a low `ulimit -v`),
/// berth serve makes the largest pool that fits, instead of none, and
/// serves with it.
#[test]
fn a_small_address_space_gets_a_smaller_pool_not_none() {
    use std::os::unix::process::CommandExt;
    let b = Berth::new();
    let mut cmd = b.cmd();
    cmd.args(["serve", guests::HTTP_HELLO_P2, "--addr", "127.0.0.1:0"]).env("BERTH_LOG", "info");
    // 1 TiB (or less, where the tests already run with less): the default
    // pool (264 instances, 4 GiB per memory slot) needs about 4 TiB of it.
    let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit, which `now` is.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut now) }, 0);
    let bytes = now.rlim_cur.min(1 << 40);
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: the closure runs in the forked child before exec and makes
    // one setrlimit system call (async-signal-safe) on a value it owns.
    unsafe {
        cmd.pre_exec(move || if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
    }
    let s = Server::spawn(cmd);
    for i in 0..20 {
        assert_eq!(curl(&[&s.url(&format!("/r{i}"))]).0, "200");
    }
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("made a smaller one"), "no smaller pool was made:\n{log}");
    assert!(!log.contains("on-demand"), "the pool was given up:\n{log}");
}
