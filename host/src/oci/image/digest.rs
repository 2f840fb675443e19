//! `sha256:<hex>` digests: parsing, and readers/writers that hash what
//! passes through them so content is verified while it streams.
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("digest {0:?} uses an algorithm berth does not support; only sha256 is")]
    Unsupported(String),
}

/// Checks `sha256:<hex>` and returns the hex part.
pub fn hex_of(digest: &str) -> Result<&str, DigestError> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| DigestError::Malformed(digest.into()))?;
    if alg != "sha256" {
        return Err(if alg.is_empty() || hex.is_empty() { DigestError::Malformed(digest.into()) } else { DigestError::Unsupported(digest.into()) });
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(DigestError::Malformed(digest.into()));
    }
    Ok(hex)
}

/// A checked `sha256:<hex>` digest as oci-spec's type, for the OCI
/// documents berth builds.
pub fn parse(digest: &str) -> Result<oci_spec::image::Digest, DigestError> {
    hex_of(digest)?;
    <oci_spec::image::Digest as std::str::FromStr>::from_str(digest).map_err(|_| DigestError::Malformed(digest.into()))
}

/// The digest of `bytes`.
pub fn of_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Hashes and counts everything read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader { inner, hasher: Sha256::new(), len: 0 }
    }
    /// Reads what is left, then returns `(digest, length)` of all bytes read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("sha256:{}", hex::encode(self.hasher.finalize())), self.len))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hashes and counts everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), len: 0 }
    }
    /// Returns the inner writer, the digest and the length written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, format!("sha256:{}", hex::encode(self.hasher.finalize())), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let d = of_bytes(b"");
        assert_eq!(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex_of(&d).unwrap().len(), 64);
        for bad in ["", "sha256:", "sha256:abc", ":x", "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "sha256:../../etc/passwd"] {
            assert!(matches!(hex_of(bad), Err(DigestError::Malformed(_))), "{bad}");
        }
        assert!(matches!(hex_of("sha512:abcd"), Err(DigestError::Unsupported(_))));
    }

    #[test]
    fn hashes_streams() {
        let (d, n) = HashReader::new(&b"hello"[..]).finish().unwrap();
        assert_eq!((d.as_str(), n), (of_bytes(b"hello").as_str(), 5));
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (v, d2, n2) = w.finish();
        assert_eq!((v, d2, n2), (b"hello".to_vec(), d, 5));
    }
}
