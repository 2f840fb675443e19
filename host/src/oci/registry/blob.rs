//! A blob download as a `Read`, for the store's ingest: it stops at the
//! descriptor's size (a registry that sends more cannot fill the disk), and
//! a dropped or failed download is resumed where it stopped (a `Range`
//! request; a registry that ignores the range is read from the start and
//! the bytes already had are skipped). A download that sends less than
//! [`MIN_BYTES_PER_WINDOW`] in one read-timeout window is stalled (a
//! registry can keep each read under the timeout with a byte at a time)
//! and is treated as dropped. The store verifies the digest.
use super::{RegistryError, Remote};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use oci_client::client::BlobResponse;
use oci_client::Reference;
use std::io::Read;
use std::time::{Duration, Instant};

/// Attempts at one blob before its download fails.
const ATTEMPTS: u32 = 4;

/// Fewer bytes than this in one read-timeout window (30 s by default: about
/// 550 bytes/s) is a stalled download.
pub(crate) const MIN_BYTES_PER_WINDOW: u64 = 16 << 10;

pub(crate) struct BlobReader<'a> {
    remote: &'a Remote,
    reference: &'a Reference,
    digest: &'a str,
    size: u64,
    got: u64,
    stream: Option<BoxStream<'static, Result<Bytes, std::io::Error>>>,
    /// Bytes of a restarted (full) response already had.
    skip: u64,
    buf: Bytes,
    failures: u32,
    /// When the current progress window began, and what it brought so far.
    window: (Instant, u64),
    /// The registry's error when the download gave up, for the caller.
    pub failed: Option<RegistryError>,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl<'a> BlobReader<'a> {
    pub fn new(remote: &'a Remote, reference: &'a Reference, digest: &'a str, size: u64, on_bytes: &'a (dyn Fn(u64) + Sync)) -> Self {
        BlobReader {
            remote,
            reference,
            digest,
            size,
            got: 0,
            stream: None,
            skip: 0,
            buf: Bytes::new(),
            failures: 0,
            window: (Instant::now(), 0),
            failed: None,
            on_bytes,
        }
    }

    fn connect(&mut self) -> Result<(), RegistryError> {
        let (client, r, d) = (&self.remote.client, self.reference, self.digest);
        let what = || format!("blob {d} of {r}");
        let stream = if self.got == 0 {
            let s = self.remote.rt.block_on(client.pull_blob_stream(r, d)).map_err(|e| self.remote.error(what(), e))?;
            self.skip = 0;
            s.stream
        } else {
            match self.remote.rt.block_on(client.pull_blob_stream_partial(r, d, self.got, None)).map_err(|e| self.remote.error(what(), e))? {
                BlobResponse::Partial(s) => {
                    self.skip = 0;
                    s.stream
                }
                BlobResponse::Full(s) => {
                    self.skip = self.got;
                    s.stream
                }
            }
        };
        self.stream = Some(stream.map(|c| c.map_err(std::io::Error::other)).boxed());
        self.window = (Instant::now(), 0);
        Ok(())
    }

    /// Notes a failure; an error once the attempts are used up.
    fn retry(&mut self, why: String) -> std::io::Result<()> {
        self.stream = None;
        self.failures += 1;
        tracing::info!(digest = self.digest, got = self.got, size = self.size, attempt = self.failures, reason = %why, "blob download interrupted; resuming");
        if self.failures >= ATTEMPTS {
            let e = RegistryError::Invalid {
                what: format!("blob {} of {}", self.digest, self.reference),
                problem: format!("the download failed {ATTEMPTS} times; last: {why}"),
            };
            let msg = e.to_string();
            self.failed = Some(e);
            return Err(std::io::Error::other(msg));
        }
        std::thread::sleep(Duration::from_millis(200 * u64::from(self.failures)));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf[..n]);
                self.buf = self.buf.slice(n..);
                self.got += n as u64;
                (self.on_bytes)(n as u64);
                return Ok(n);
            }
            if self.got >= self.size {
                return Ok(0);
            }
            if self.stream.is_none() {
                if let Err(e) = self.connect() {
                    // Answers such as 401 or 404 will not change on a retry.
                    if matches!(e, RegistryError::Unauthorized { .. } | RegistryError::NotFound { .. }) {
                        let msg = e.to_string();
                        self.failed = Some(e);
                        return Err(std::io::Error::other(msg));
                    }
                    self.retry(e.to_string())?;
                    continue;
                }
            }
            let next = self.remote.rt.block_on(self.stream.as_mut().expect("connected").next());
            match next {
                Some(Ok(mut chunk)) => {
                    self.window.1 += chunk.len() as u64;
                    let (since, bytes) = self.window;
                    if since.elapsed() >= self.remote.timeout {
                        if bytes < MIN_BYTES_PER_WINDOW {
                            self.retry(format!("stalled: {bytes} bytes in {:?}", since.elapsed()))?;
                            continue;
                        }
                        self.window = (Instant::now(), 0);
                    }
                    if self.skip > 0 {
                        let drop = self.skip.min(chunk.len() as u64);
                        chunk = chunk.slice(drop as usize..);
                        self.skip -= drop;
                    }
                    // Never past the descriptor's size.
                    let room = (self.size - self.got) as usize;
                    self.buf = if chunk.len() > room { chunk.slice(..room) } else { chunk };
                }
                Some(Err(e)) => self.retry(e.to_string())?,
                None => self.retry(format!("the connection ended after {} of {} bytes", self.got, self.size))?,
            }
        }
    }
}
