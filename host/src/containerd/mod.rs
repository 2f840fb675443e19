//! containerd's gRPC API, the little of it berth needs: which image a
//! container was made from, that image's target, and content-store reads.
//! With these the shim runs CNCF wasm artifacts, whose module is a blob in
//! containerd's content store rather than a file in the container's rootfs
//! (containerd unpacks no `application/wasm` layer).
//!
//! gRPC is HTTP/2 (hyper's client) over containerd's unix socket; messages
//! are encoded with rust-protobuf's wire format support. Every call names
//! the containerd namespace in the `containerd-namespace` header.
use crate::oci::image::digest;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod artifact;
mod wire;
pub use artifact::{artifact_module, ArtifactError};
pub use wire::Msg;

const CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
const IMAGES_GET: &str = "/containerd.services.images.v1.Images/Get";
const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";
/// The largest gRPC message berth accepts (containerd sends content in
/// 1 MiB pieces).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connecting to containerd at {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("containerd {method}: {message} (gRPC status {code})")]
    Status { method: String, code: u32, message: String },
    #[error("containerd {method}: {reason}")]
    Protocol { method: String, reason: String },
}

/// An OCI descriptor as containerd's API carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub(crate) fn from_msg(m: &Msg) -> Descriptor {
        Descriptor { media_type: m.get_str(1), digest: m.get_str(2), size: m.get_int(3).max(0) as u64 }
    }
}

/// One connection to containerd, for one namespace.
pub struct Client {
    send: SendRequest<Full<Bytes>>,
    namespace: String,
    deadlines: Deadlines,
}

/// How long containerd may take, so that a stalled containerd fails a
/// create instead of hanging it.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// To accept the connection and finish the HTTP/2 handshake.
    pub connect: Duration,
    /// To answer a call, and between two pieces of a reply.
    pub idle: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { connect: Duration::from_secs(10), idle: Duration::from_secs(30) }
    }
}

/// `fut`, or `err(what)` once `limit` has passed.
async fn within<T, E>(limit: Duration, fut: impl std::future::Future<Output = Result<T, E>>, err: impl FnOnce(String) -> E) -> Result<T, E> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(err(format!("no answer within {limit:?}; is containerd stalled?"))),
    }
}

impl Client {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Client, ApiError> {
        Self::connect_with(socket, namespace, Deadlines::default()).await
    }

    pub async fn connect_with(socket: &Path, namespace: &str, deadlines: Deadlines) -> Result<Client, ApiError> {
        let fail = |reason: String| ApiError::Connect { socket: socket.to_path_buf(), reason };
        let handshake = async {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| fail(e.to_string()))?;
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("HTTP/2 handshake: {e}")))
        };
        let (send, conn) = within(deadlines.connect, handshake, fail).await?;
        // The connection task ends when the client is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "containerd connection ended");
            }
        });
        Ok(Client { send, namespace: namespace.to_string(), deadlines })
    }

    /// Calls `method` with `request`; each message of the (unary or
    /// streamed) reply goes to `each`.
    pub async fn call(&mut self, method: &str, request: &Msg, mut each: impl FnMut(Msg) -> Result<(), String>) -> Result<(), ApiError> {
        let proto = |reason: String| ApiError::Protocol { method: method.to_string(), reason };
        let body = request.encode();
        let mut framed = BytesMut::with_capacity(5 + body.len());
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        let req = http::Request::post(format!("http://containerd{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("containerd-namespace", &self.namespace)
            .body(Full::new(framed.freeze()))
            .map_err(|e| proto(e.to_string()))?;
        let idle = self.deadlines.idle;
        within(idle, async { self.send.ready().await.map_err(|e| e.to_string()) }, |e| e).await.map_err(&proto)?;
        let resp = within(idle, async { self.send.send_request(req).await.map_err(|e| e.to_string()) }, |e| e).await.map_err(proto)?;
        if resp.status() != http::StatusCode::OK {
            return Err(proto(format!("HTTP status {}", resp.status())));
        }
        // A call that fails at once answers with its status in the headers.
        status(method, resp.headers())?;
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = within(idle, async { Ok::<_, String>(body.frame().await) }, |e| e).await.map_err(&proto)? {
            let frame = frame.map_err(|e| proto(e.to_string()))?;
            let frame = match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    while buf.len() >= 5 {
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                        if buf[0] != 0 {
                            return Err(proto("a compressed message; berth asked for none".into()));
                        }
                        if len > MAX_MESSAGE {
                            return Err(proto(format!("a {len}-byte message, over the {MAX_MESSAGE}-byte limit")));
                        }
                        if buf.len() < 5 + len {
                            break;
                        }
                        buf.advance(5);
                        let msg = Msg::decode(&buf.split_to(len)).map_err(&proto)?;
                        each(msg).map_err(&proto)?;
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                status(method, &trailers)?;
                if !buf.is_empty() {
                    return Err(proto(format!("{} bytes of a cut-off message", buf.len())));
                }
                return Ok(());
            }
        }
        Err(proto("the reply ended without a gRPC status".into()))
    }

    /// A unary call's single reply.
    pub async fn unary(&mut self, method: &str, request: &Msg) -> Result<Msg, ApiError> {
        let mut reply = None;
        self.call(method, request, |m| {
            reply = Some(m);
            Ok(())
        })
        .await?;
        reply.ok_or_else(|| ApiError::Protocol { method: method.to_string(), reason: "no reply message".into() })
    }

    /// The image a container was made from ("" when it has none).
    pub async fn container_image(&mut self, id: &str) -> Result<String, ApiError> {
        let reply = self.unary(CONTAINERS_GET, &Msg::new().bytes(1, id)).await?;
        let container = reply.get_msg(1).map_err(|reason| ApiError::Protocol { method: CONTAINERS_GET.into(), reason })?;
        Ok(container.get_str(3))
    }

    /// What an image name points at (a manifest or an index).
    pub async fn image_target(&mut self, name: &str) -> Result<Descriptor, ApiError> {
        let reply = self.unary(IMAGES_GET, &Msg::new().bytes(1, name)).await?;
        let target = reply.get_msg(1).and_then(|image| image.get_msg(3)).map_err(|reason| ApiError::Protocol { method: IMAGES_GET.into(), reason })?;
        Ok(Descriptor::from_msg(&target))
    }

    /// Reads a blob whole, up to `max` bytes, and checks it against the
    /// descriptor's digest and size: the content store is not trusted to.
    pub async fn read_blob(&mut self, desc: &Descriptor, max: u64) -> Result<Vec<u8>, ApiError> {
        let mut data = Vec::with_capacity(desc.size.min(MAX_MESSAGE as u64) as usize);
        self.read_blob_into(desc, max, &mut data).await?;
        Ok(data)
    }

    /// Streams a blob of up to `max` bytes into `out` as its pieces arrive
    /// (at most one message in memory), checking it against the
    /// descriptor's digest and size. On an error, what `out` holds is not
    /// the blob.
    pub async fn read_blob_into(&mut self, desc: &Descriptor, max: u64, out: &mut (dyn std::io::Write + Send)) -> Result<(), ApiError> {
        use std::io::Write as _;
        let proto = |reason: String| ApiError::Protocol { method: CONTENT_READ.into(), reason };
        digest::hex_of(&desc.digest).map_err(|e| proto(e.to_string()))?;
        if desc.size > max {
            return Err(proto(format!("blob {} is {} bytes, over berth's {max}-byte limit for it", desc.digest, desc.size)));
        }
        let mut sink = digest::HashWriter::new(out);
        let mut written = 0u64;
        self.call(CONTENT_READ, &Msg::new().bytes(1, &desc.digest), |m| {
            if m.get_int(1) as u64 != written {
                return Err(format!("blob {}: a piece at offset {} where {written} was next", desc.digest, m.get_int(1)));
            }
            let piece = m.get_bytes(2);
            // The descriptor's size is only a claim: nothing past it is taken.
            if written + piece.len() as u64 > desc.size {
                return Err(format!("blob {} is longer than its descriptor's {} bytes", desc.digest, desc.size));
            }
            sink.write_all(piece).map_err(|e| format!("blob {}: writing it: {e}", desc.digest))?;
            written += piece.len() as u64;
            Ok(())
        })
        .await?;
        let (_, actual, len) = sink.finish();
        if actual != desc.digest || len != desc.size {
            return Err(proto(format!(
                "blob {} ({} bytes) in containerd's content store has digest {actual} and {len} bytes: it was altered or cut short; remove the image and pull or import it again",
                desc.digest, desc.size
            )));
        }
        Ok(())
    }
}

/// Fails with the gRPC status carried by `headers`, when it is not OK.
fn status(method: &str, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(code) = headers.get("grpc-status") else { return Ok(()) };
    let code: u32 = code.to_str().ok().and_then(|c| c.parse().ok()).unwrap_or(2);
    if code == 0 {
        return Ok(());
    }
    let raw = headers.get("grpc-message").map(|m| m.as_bytes().to_vec()).unwrap_or_default();
    Err(ApiError::Status { method: method.to_string(), code, message: percent_decode(&raw) })
}

/// gRPC percent-encodes its status message.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"container %22x%22 not found%3A 100%"), "container \"x\" not found: 100%");
    }

    fn short() -> Deadlines {
        Deadlines { connect: Duration::from_millis(300), idle: Duration::from_millis(300) }
    }

    #[tokio::test]
    async fn a_containerd_that_never_answers_fails_the_call_by_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        // Accepts, then says nothing: no HTTP/2 handshake.
        let mute = dir.path().join("mute.sock");
        let l = tokio::net::UnixListener::bind(&mute).unwrap();
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                conns.push(s);
            }
        });
        let t = std::time::Instant::now();
        // (The HTTP/2 handshake does not wait for the server's preface; the
        // first call does.)
        let err = match Client::connect_with(&mute, "ns", short()).await {
            Ok(mut c) => c.unary(CONTAINERS_GET, &Msg::new().bytes(1, "c1")).await.err().expect("a deadline").to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("stalled"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // Speaks HTTP/2 but never answers a request.
        let stalled = dir.path().join("stalled.sock");
        let l = tokio::net::UnixListener::bind(&stalled).unwrap();
        let _server = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(s).await.unwrap();
                    let mut held = Vec::new();
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        held.push((req, respond));
                    }
                });
            }
        });
        let mut c = Client::connect_with(&stalled, "ns", short()).await.unwrap();
        let err = c.unary(CONTAINERS_GET, &Msg::new().bytes(1, "c1")).await.err().expect("a deadline").to_string();
        assert!(err.contains("Containers/Get") && err.contains("stalled"), "{err}");
    }
}
