//! A `wasi:http/incoming-handler` component: answers every request with
//! `hello from berth: METHOD PATH` and echoes a request body, if any.
//! `/trap` panics, `/loop` spins forever, `/slow` takes a second,
//! `/fetch?to=HOST:PORT/PATH` sends a GET there and reports the outcome,
//! `/headers` answers with the request's headers (`name: value` lines),
//! `/log` writes a line to stdout and one to stderr first.
//! Built for wasm32-wasip2 (the wasm32-wasip1 build is unused).
use std::io::{Read as _, Write as _};
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let method = match req.method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            other => format!("{other:?}"),
        };
        let path = req.path_with_query().unwrap_or_default();
        let header_lines: String = req.headers().entries().iter().map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v))).collect();
        let mut body = Vec::new();
        if let Ok(incoming) = req.consume() {
            if let Ok(mut stream) = incoming.stream() {
                let _ = stream.read_to_end(&mut body);
            }
        }
        if path.starts_with("/trap") {
            panic!("the handler was asked to trap");
        }
        if path.starts_with("/slow") {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        if path.starts_with("/log") {
            println!("stdout of request {}", std::env::var("BERTH_REQUEST_ID").unwrap_or_default());
            eprintln!("stderr of request {}", std::env::var("BERTH_REQUEST_ID").unwrap_or_default());
        }
        if path.starts_with("/loop") {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        let fetched = path.strip_prefix("/fetch?to=").map(fetch);
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(200);
        let outgoing = resp.body().expect("response body");
        ResponseOutparam::set(out, Ok(resp));
        {
            let mut w = outgoing.write().expect("body stream");
            match &fetched {
                Some(report) => {
                    let _ = write!(w, "{report}\n");
                }
                None if path.starts_with("/headers") => {
                    let _ = w.write_all(header_lines.as_bytes());
                }
                None => {
                    let _ = write!(w, "hello from berth: {method} {path}\n");
                }
            }
            if !body.is_empty() {
                let _ = w.write_all(&body);
            }
            let _ = w.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// GET http://TARGET and describe the result: `fetched STATUS: BODY` or
/// `fetch-error: ERROR`.
fn fetch(target: &str) -> String {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{OutgoingRequest, Scheme};
    let (authority, path) = match target.split_once('/') {
        Some((a, p)) => (a.to_string(), format!("/{p}")),
        None => (target.to_string(), "/".to_string()),
    };
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(&authority));
    let _ = req.set_path_with_query(Some(&path));
    let fut = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(e) => return format!("fetch-error: {e:?}"),
    };
    fut.subscribe().block();
    let resp = match fut.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return format!("fetch-error: {e:?}"),
        other => return format!("fetch-error: {other:?}"),
    };
    let mut body = Vec::new();
    if let Ok(b) = resp.consume() {
        if let Ok(mut s) = b.stream() {
            let _ = s.read_to_end(&mut body);
        }
    }
    format!("fetched {}: {}", resp.status(), String::from_utf8_lossy(&body))
}

wasi::http::proxy::export!(Hello);

fn main() {}
