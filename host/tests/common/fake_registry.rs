//! Registries a test plays itself, for what a real one will not do
//! (redirect elsewhere, trickle, pause): a one-request-per-connection HTTP
//! server, HTTP answers, and the blobs of an artifact to serve.
use super::Berth;
use berth_tests::guests;
use std::io::{Read, Write};

/// Serves, on `bind`, one HTTP request per connection with `answer`
/// (request head, lowercased -> response bytes); records every head.
pub fn tiny_server(bind: &str, answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let l = std::net::TcpListener::bind(bind).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (h, answer) = (heads.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let (h, answer) = (h.clone(), answer.clone());
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut s) else { return };
                h.lock().unwrap().push(head.clone());
                let _ = s.write_all(&answer(&head));
            });
        }
    });
    (addr, heads)
}

pub fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The blobs of the hello guest as a wasm artifact, from a store of
/// berth's own, for registries the tests play themselves.
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub config_d: String,
    pub layer_d: String,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

pub fn artifact() -> Artifact {
    let b = Berth::new();
    b.run(&["image", "build", guests::HELLO_P1, "-t", "example.com/src:1", "--artifact"]).expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", "example.com/src:1"]).stdout).unwrap();
    let blob = |d: &str| std::fs::read(b.root.path().join("images/blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let (config_d, layer_d) =
        (v["manifest"]["config"]["digest"].as_str().unwrap().to_string(), v["manifest"]["layers"][0]["digest"].as_str().unwrap().to_string());
    Artifact { manifest: blob(v["digest"].as_str().unwrap()), config: blob(&config_d), layer: blob(&layer_d), config_d, layer_d }
}

/// Reads one request head from `s`, lowercased; `None` when the client
/// went away first.
pub fn read_head(s: &mut std::net::TcpStream) -> Option<String> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&req).split("\r\n\r\n").next().unwrap_or("").to_lowercase())
}

/// A registry on loopback (plain HTTP, no auth) that serves `a` under any
/// name; the layer's body goes out through `send`, after its head, so a
/// test decides how it arrives. Each connection serves one request.
pub fn artifact_registry(a: Artifact, send: impl Fn(&mut std::net::TcpStream, &[u8]) + Send + Sync + 'static) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (a, send) = (std::sync::Arc::new(a), std::sync::Arc::new(send));
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let (a, send) = (a.clone(), send.clone());
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut s) else { return };
                if head.contains("/manifests/") {
                    let _ = s.write_all(&http("200 OK", &[("content-type", "application/vnd.oci.image.manifest.v1+json")], &a.manifest));
                } else if head.contains(&a.config_d) {
                    let _ = s.write_all(&http("200 OK", &[], &a.config));
                } else {
                    let mut full = http("200 OK", &[], &a.layer);
                    full.truncate(full.len() - a.layer.len());
                    if s.write_all(&full).is_ok() {
                        send(&mut s, &a.layer);
                    }
                }
            });
        }
    });
    addr
}
