//! The HTTP front of a served component, shared by `berth serve`,
//! `berth run` and the shim: HTTP/1.1 (keep-alive) and HTTP/2 cleartext
//! (prior knowledge) on one listener, a concurrency cap with a bounded wait
//! queue (503 + `Retry-After` past it), a request body cap (413, declared
//! or streamed), and a graceful stop that lets requests in flight finish.
//!
//! Everything a stranger can hold is bounded: connections (past the cap,
//! the listener waits and the kernel's backlog queues), the time to send
//! a request's head (the connection is closed past it, idle keep-alive
//! connections included), HTTP/2 streams and resets per connection, and
//! queue slots, which a request gives back however it ends.
use super::http::{text, HttpService, Resp};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::io::TokioIo;

/// Backpressure: concurrent slots, a bounded wait queue, a body cap, open
/// connections and the time a client has to send a request's head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub slots: usize,
    pub queue: usize,
    pub max_body: u64,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// The default time a client has to send a request's head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Limits { slots: 256, queue: 1024, max_body: 16 << 20, max_connections: 4096, header_timeout: DEFAULT_HEADER_TIMEOUT }
    }
}

/// HTTP/2 streams one connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;
/// Streams a client may open and reset before they are accepted (the
/// "rapid reset" flood) before its connection is closed.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors before its
/// connection is closed.
const H2_MAX_ERROR_RESETS: usize = 128;
/// Accept errors such as EMFILE are retried after a pause that doubles up
/// to this.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Gate {
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    limits: Limits,
}

fn refuse(status: u16, msg: &str, retry_after: bool) -> Resp {
    let mut r = text(status, format!("{msg}\n"));
    if retry_after {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    }
    r
}

/// A request body that fails once more than `max` bytes have arrived,
/// however they were framed (chunked bodies declare no length).
struct Capped {
    inner: hyper::body::Incoming,
    seen: u64,
    max: u64,
    over: Arc<AtomicBool>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if this.seen > this.max {
                        this.over.store(true, SeqCst);
                        return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.seen)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One place in the wait queue, held while a request waits for a slot.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Gate {
    async fn handle(&self, service: &HttpService, req: hyper::Request<hyper::body::Incoming>) -> Resp {
        let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body) {
            tracing::info!(method = %req.method(), path = %req.uri().path(), status = 413, "request refused: body over the size cap");
            return refuse(413, "request body too large", false);
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, SeqCst) >= self.limits.queue {
                    self.waiting.fetch_sub(1, SeqCst);
                    tracing::info!(method = %req.method(), path = %req.uri().path(), status = 503, "request refused: all slots busy and the queue is full");
                    return refuse(503, "busy; retry shortly", true);
                }
                // Given back however the wait ends: a slot, shutdown, or the
                // client going away (this future is dropped).
                let _waiting = Waiting(&self.waiting);
                match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return refuse(503, "shutting down", true),
                }
            }
        };
        let over = Arc::new(AtomicBool::new(false));
        let req = req.map(|inner| Capped { inner, seen: 0, max: self.limits.max_body, over: over.clone() });
        // The slot is the instance's: it is given back when the instance
        // ends, however the request ends.
        let resp = service.handle(req, permit).await;
        // A streamed body that ran past the cap failed the handler's read:
        // whatever it answered was built on a cut-off body.
        if over.load(SeqCst) {
            return refuse(413, "request body too large", false);
        }
        resp
    }
}

/// Binds a listener now (so a taken address fails early), inside the
/// network namespace at `netns` when given (a pod's), else in berth's own.
pub fn bind(addr: std::net::SocketAddr, netns: Option<&std::path::Path>) -> std::io::Result<std::net::TcpListener> {
    let l = match netns {
        None => std::net::TcpListener::bind(addr)?,
        // A socket belongs to the namespace it was made in, whichever
        // thread uses it later.
        Some(ns) => super::netns::within(ns, move || std::net::TcpListener::bind(addr))?,
    };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves until `stop` resolves, then stops accepting and lets requests in
/// flight finish (for at most `grace`, when given). Dropping the returned
/// future ends every connection at once.
pub async fn serve(
    service: Arc<HttpService>,
    listener: std::net::TcpListener,
    limits: Limits,
    stop: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, slots = limits.slots, queue = limits.queue, max_body = limits.max_body, max_connections = limits.max_connections, header_timeout = ?limits.header_timeout, "serving");
    let gate = Arc::new(Gate { slots: Arc::new(tokio::sync::Semaphore::new(limits.slots)), waiting: Default::default(), limits });
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let builder = Arc::new(builder(&limits));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff = Backoff::default();
    tokio::pin!(stop);
    loop {
        // Past the connection cap, nothing is accepted until one closes.
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    let pause = backoff.next(&e, &local);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut stop => break,
                    }
                }
            },
            // Finished connections are reaped as they end, not at shutdown.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut stop => break,
        };
        // Responses go out as headers then body chunks: without TCP_NODELAY,
        // Nagle's algorithm holds each small write for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (service, gate, builder, mut stop) = (service.clone(), gate.clone(), builder.clone(), stop_rx.clone());
        conns.spawn(async move {
            let _permit = permit;
            if !first_bytes(&stream, limits.header_timeout).await {
                tracing::debug!(peer = %peer, "connection closed: no request within the header timeout");
                return;
            }
            let svc = hyper::service::service_fn(move |req| {
                let (service, gate) = (service.clone(), gate.clone());
                async move { Ok::<_, std::convert::Infallible>(gate.handle(&service, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(peer = %peer, error = %e, "connection ended") },
                _ = stop.changed() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let in_flight = conns.len();
    tracing::info!(address = %local, connections = in_flight, grace = ?grace, "stopping: no new connections; draining");
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    match grace {
        Some(g) => {
            if tokio::time::timeout(g, drain).await.is_err() {
                tracing::warn!(address = %local, "grace period over; requests still in flight are cut off");
            }
        }
        None => drain.await,
    }
    tracing::info!(address = %local, "stopped");
    Ok(())
}

/// The connection builder: HTTP/1.1 with a header-read timeout (which
/// also closes idle keep-alive connections), HTTP/2 with bounded streams
/// and resets and keep-alive pings that drop dead peers.
fn builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::TokioTimer;
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Waits, for at most `limit`, until a connection's first bytes tell an
/// HTTP/1 request from HTTP/2's preface (hyper's own header timeout starts
/// only after that). `false`: the client sent nothing usable in time.
async fn first_bytes(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let wait = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // Part of the preface: peek returns at once while any data
                // is buffered, so wait a little for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

/// The pause after a failed accept. Running out of descriptors or memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM) does not clear at once: retrying in a
/// tight loop would spin a core and flood the log.
#[derive(Default)]
struct Backoff {
    pause: Option<Duration>,
}

impl Backoff {
    fn reset(&mut self) {
        self.pause = None;
    }

    fn next(&mut self, e: &std::io::Error, local: &std::net::SocketAddr) -> Duration {
        // A connection the peer aborted before it was accepted is its own
        // affair: the next one may be fine.
        if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)) {
            tracing::debug!(address = %local, error = %e, "accept failed; retrying");
            return Duration::ZERO;
        }
        let pause = match self.pause {
            None => {
                tracing::warn!(address = %local, error = %e, "accept failed; backing off until it succeeds again");
                Duration::from_millis(10)
            }
            Some(p) => (p * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.pause = Some(pause);
        pause
    }
}
