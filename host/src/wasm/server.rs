//! The HTTP front of a served component, shared by `berth serve`,
//! `berth run` and the shim: HTTP/1.1 (keep-alive) and HTTP/2 cleartext
//! (prior knowledge) on one listener, a concurrency cap with a bounded wait
//! queue (503 + `Retry-After` past it), a request body cap (413, declared
//! or streamed), and a graceful stop that lets requests in flight finish.
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

/// Backpressure: concurrent slots, a bounded wait queue, a body cap.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub slots: usize,
    pub queue: usize,
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { slots: 256, queue: 1024, max_body: 16 << 20 }
    }
}

struct Gate {
    slots: tokio::sync::Semaphore,
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

impl Gate {
    async fn handle(&self, service: &HttpService, req: hyper::Request<hyper::body::Incoming>) -> Resp {
        let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body) {
            tracing::info!(method = %req.method(), path = %req.uri().path(), status = 413, "request refused: body over the size cap");
            return refuse(413, "request body too large", false);
        }
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, SeqCst) >= self.limits.queue {
                    self.waiting.fetch_sub(1, SeqCst);
                    tracing::info!(method = %req.method(), path = %req.uri().path(), status = 503, "request refused: all slots busy and the queue is full");
                    return refuse(503, "busy; retry shortly", true);
                }
                let p = self.slots.acquire().await;
                self.waiting.fetch_sub(1, SeqCst);
                match p {
                    Ok(p) => p,
                    Err(_) => return refuse(503, "shutting down", true),
                }
            }
        };
        let over = Arc::new(AtomicBool::new(false));
        let req = req.map(|inner| Capped { inner, seen: 0, max: self.limits.max_body, over: over.clone() });
        let resp = service.handle(req).await;
        drop(permit);
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
        Some(ns) => {
            // A socket belongs to the namespace it was made in, whichever
            // thread uses it later: make it on a short-lived thread that
            // alone joins the namespace.
            let ns = ns.to_path_buf();
            std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
                use std::os::fd::AsRawFd;
                let f = std::fs::File::open(&ns).map_err(|e| std::io::Error::new(e.kind(), format!("opening network namespace {}: {e}", ns.display())))?;
                // SAFETY: setns on a valid fd changes only this thread's
                // network namespace; the thread ends after the bind.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(std::io::Error::new(e.kind(), format!("joining network namespace {}: {e}", ns.display())));
                }
                std::net::TcpListener::bind(addr)
            })
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))??
        }
    };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves until `stop` resolves, then stops accepting and lets requests in
/// flight finish (for at most `grace`, when given). Dropping the returned
/// future ends every connection at once.
pub async fn serve(service: Arc<HttpService>, listener: std::net::TcpListener, limits: Limits, stop: impl Future<Output = ()>, grace: Option<Duration>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, slots = limits.slots, queue = limits.queue, max_body = limits.max_body, "serving");
    let gate = Arc::new(Gate { slots: tokio::sync::Semaphore::new(limits.slots), waiting: Default::default(), limits });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Responses go out as headers then body chunks: without TCP_NODELAY,
        // Nagle's algorithm holds each small write for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (service, gate, mut stop) = (service.clone(), gate.clone(), stop_rx.clone());
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (service, gate) = (service.clone(), gate.clone());
                async move { Ok::<_, std::convert::Infallible>(gate.handle(&service, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
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
