//! Layer tarballs: writing them reproducibly (sorted entries, zero mtimes
//! and owners) and reading them in any of the compressions OCI allows.
use super::digest::{HashReader, HashWriter};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a layer being built.
#[derive(Debug, Clone)]
pub enum Node {
    Dir { mode: u32 },
    File { source: Source, mode: u32 },
    Symlink { target: PathBuf },
}

#[derive(Debug, Clone)]
pub enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// The content of a layer, keyed by path within the image (no leading `/`).
#[derive(Debug, Default, Clone)]
pub struct Tree(BTreeMap<String, Node>);

/// Why content cannot go into a layer.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("image path {0:?} must not contain '..'")]
    DotDot(String),
    #[error("image path {0:?} names the root, not a file")]
    Root(String),
    #[error("{} is not a directory; --add and --rootfs take directories", .0.display())]
    NotADir(PathBuf),
    #[error("{}: file name {name:?} is not UTF-8", .dir.display())]
    NotUtf8 { dir: PathBuf, name: std::ffi::OsString },
    #[error("reading {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn clean_guest(path: &str) -> Result<String, TreeError> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") {
        return Err(TreeError::DotDot(path.to_string()));
    }
    Ok(parts.join("/"))
}

/// An io error reading `path`, for `map_err`.
fn read_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Read { path: path.to_path_buf(), source }
}

impl Tree {
    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        for c in path.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default() {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.0.entry(acc.clone()).or_insert(Node::Dir { mode: 0o755 });
        }
    }

    /// Adds a file with the given content at `path`.
    pub fn add_bytes(&mut self, path: &str, bytes: Vec<u8>, mode: u32) -> Result<(), TreeError> {
        let p = clean_guest(path)?;
        if p.is_empty() {
            return Err(TreeError::Root(path.to_string()));
        }
        self.parents(&p);
        self.0.insert(p, Node::File { source: Source::Bytes(bytes), mode });
        Ok(())
    }

    /// Adds the host directory `host` (recursively, symlinks kept as
    /// symlinks) at `guest`.
    pub fn add_host_dir(&mut self, host: &Path, guest: &str) -> Result<(), TreeError> {
        let base = clean_guest(guest)?;
        let meta = std::fs::symlink_metadata(host).map_err(read_err(host))?;
        if !meta.is_dir() {
            return Err(TreeError::NotADir(host.to_path_buf()));
        }
        if !base.is_empty() {
            self.parents(&base);
            self.0.insert(base.clone(), Node::Dir { mode: meta.permissions().mode() & 0o7777 });
        }
        self.walk(host, &base)
    }

    fn walk(&mut self, dir: &Path, at: &str) -> Result<(), TreeError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(read_err(dir))?.collect::<Result<_, _>>().map_err(read_err(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().map_err(|name| TreeError::NotUtf8 { dir: dir.to_path_buf(), name })?;
            let path = if at.is_empty() { name } else { format!("{at}/{name}") };
            let meta = std::fs::symlink_metadata(e.path()).map_err(read_err(&e.path()))?;
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.0.insert(path.clone(), Node::Dir { mode });
                self.walk(&e.path(), &path)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(e.path()).map_err(read_err(&e.path()))?;
                self.0.insert(path, Node::Symlink { target });
            } else if ft.is_file() {
                self.0.insert(path, Node::File { source: Source::Host(e.path()), mode });
            } else {
                tracing::warn!(path = %e.path().display(), "not a file, directory or symlink; left out of the layer");
            }
        }
        Ok(())
    }
}

/// A tar stream with fixed metadata: what makes builds reproducible.
pub struct TarOut<W: Write>(tar::Builder<W>);

impl<W: Write> TarOut<W> {
    pub fn new(w: W) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Deterministic);
        TarOut(b)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn file(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        self.0.append_data(&mut Self::header(tar::EntryType::Regular, mode, size), path, data)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.0.append_data(&mut Self::header(tar::EntryType::Directory, mode, 0), format!("{path}/"), io::empty())
    }

    pub fn symlink(&mut self, path: &str, target: &Path) -> io::Result<()> {
        self.0.append_link(&mut Self::header(tar::EntryType::Symlink, 0o777, 0), path, target)
    }

    pub fn finish(self) -> io::Result<W> {
        self.0.into_inner()
    }
}

/// A finished gzip layer: the blob, its digest and the digest of its
/// uncompressed tar (the `diff_id`).
pub struct LayerBlob {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// Writes `tree` as a tar+gzip layer.
pub fn write_layer(tree: &Tree) -> io::Result<LayerBlob> {
    let gz = flate2::GzBuilder::new().mtime(0).write(HashWriter::new(Vec::new()), flate2::Compression::default());
    let mut tar = TarOut::new(HashWriter::new(gz));
    for (path, node) in &tree.0 {
        match node {
            Node::Dir { mode } => tar.dir(path, *mode)?,
            Node::Symlink { target } => tar.symlink(path, target)?,
            Node::File { source: Source::Bytes(b), mode } => tar.file(path, *mode, b.len() as u64, &b[..])?,
            Node::File { source: Source::Host(p), mode } => {
                let f = std::fs::File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                let len = f.metadata()?.len();
                tar.file(path, *mode, len, f.take(len))?
            }
        }
    }
    let (gz, diff_id, _) = tar.finish()?.finish();
    let (bytes, digest, _) = gz.finish()?.finish();
    Ok(LayerBlob { bytes, digest, diff_id })
}

/// Wraps a layer blob in the decompressor its first bytes call for
/// (gzip, zstd, or none), whatever its media type claims.
pub fn decompress<'a, R: Read + 'a>(blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::new(blob);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Reads a layer blob through [`decompress`], unpacking it with `f`, and
/// returns `(blob digest, diff_id)` computed over all of the bytes.
pub fn read_layer<R: Read>(
    blob: R,
    f: impl FnOnce(&mut dyn Read) -> Result<(), super::unpack::UnpackError>,
) -> Result<(String, String), super::unpack::UnpackError> {
    use super::unpack::UnpackError;
    let mut outer = HashReader::new(blob);
    let (diff_id, ()) = {
        let inner = decompress(&mut outer).map_err(UnpackError::Read)?;
        let mut tar = HashReader::new(inner);
        f(&mut tar)?;
        let (d, _) = tar.finish().map_err(UnpackError::Read)?;
        (d, ())
    };
    let (digest, _) = outer.finish().map_err(UnpackError::Read)?;
    Ok((digest, diff_id))
}
