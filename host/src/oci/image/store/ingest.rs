//! An ingest: the blobs of one import or pull, staged in a private
//! directory of the store, verified as they stream in, and made visible
//! together with the names that use them, or dropped.
use super::{io_err, read_verified, Store, StoreError, NAME_ANNOTATION, REF_ANNOTATION};
use crate::oci::image::digest::{self, HashReader};
use oci_spec::image::Descriptor;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;

/// Blobs of one import, staged privately until committed.
pub struct Ingest<'s> {
    pub(super) store: &'s Store,
    pub(super) dir: PathBuf,
}

impl Ingest<'_> {
    /// Streams a blob into staging. With `expected`, the content must have
    /// that digest (and size, when given); without, its digest is computed.
    /// Returns `(digest, size)`.
    pub fn put(&self, reader: impl Read, expected: Option<(&str, Option<u64>)>) -> Result<(String, u64), StoreError> {
        if let Some((d, _)) = expected {
            digest::hex_of(d)?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err(&self.dir))?;
        let mut reader = HashReader::new(reader);
        io::copy(&mut reader, tmp.as_file_mut()).map_err(io_err(tmp.path()))?;
        let (actual, size) = reader.finish().map_err(io_err(&self.dir))?;
        if let Some((d, want)) = expected {
            if d != actual {
                return Err(StoreError::DigestMismatch { digest: d.into(), actual });
            }
            if let Some(want) = want.filter(|w| *w != size) {
                return Err(StoreError::SizeMismatch { digest: d.into(), expected: want, actual: size });
            }
        }
        let dest = self.dir.join(digest::hex_of(&actual)?);
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        Ok((actual, size))
    }

    /// An unnamed scratch file in staging (gone when closed): room for a
    /// blob on its way to [`Ingest::put`].
    pub fn scratch(&self) -> Result<File, StoreError> {
        tempfile::tempfile_in(&self.dir).map_err(io_err(&self.dir))
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        self.put(bytes, None)
    }

    /// Whether the blob is staged here or already in the store.
    pub fn has(&self, digest: &str) -> bool {
        digest::hex_of(digest).is_ok_and(|h| self.dir.join(h).exists() || self.store.dir.join("blobs/sha256").join(h).exists())
    }

    /// Opens a staged (or stored) blob.
    pub fn open(&self, digest: &str) -> Result<File, StoreError> {
        let hex = digest::hex_of(digest)?;
        match File::open(self.dir.join(hex)) {
            Ok(f) => Ok(f),
            Err(_) => self.store.open_blob(digest),
        }
    }

    /// Reads a staged JSON blob whole, verifying digest and size.
    pub fn read_small(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>, StoreError> {
        read_verified(self.open(digest)?, digest, size)
    }

    /// Moves the blobs of the chosen images into the store and names them,
    /// atomically with respect to other imports and removals.
    pub fn commit(self, images: &[(String, Descriptor, Vec<String>)]) -> Result<(), StoreError> {
        let _lock = self.store.lock()?;
        for (_, _, blobs) in images {
            self.move_blobs(blobs)?;
        }
        let mut by_name: BTreeMap<String, Descriptor> = BTreeMap::new();
        for d in self.store.read_index()? {
            if let Some(n) = d.annotations().as_ref().and_then(|a| a.get(NAME_ANNOTATION)).cloned() {
                by_name.insert(n, d);
            }
        }
        for (name, desc, _) in images {
            let mut d = desc.clone();
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(NAME_ANNOTATION.into(), name.clone());
            ann.insert(REF_ANNOTATION.into(), name.clone());
            d.set_annotations(Some(ann));
            by_name.insert(name.clone(), d);
        }
        let all: Vec<Descriptor> = by_name.into_values().collect();
        self.store.write_index(&all)?;
        // Blobs an image no longer named here used (a re-tag) are left to
        // the next `berth image rm`, which collects everything unreachable.
        Ok(())
    }

    /// Moves staged blobs into the store without naming an image (content
    /// another tool names, such as containerd's). Like every blob no image
    /// names, they go at the next `berth image rm`.
    pub fn commit_blobs(self, digests: &[String]) -> Result<(), StoreError> {
        let _lock = self.store.lock()?;
        self.move_blobs(digests)
    }

    /// Moves staged blobs into `blobs/` (the caller holds the lock).
    fn move_blobs(&self, digests: &[String]) -> Result<(), StoreError> {
        for d in digests {
            let hex = digest::hex_of(d)?;
            let dest = self.store.dir.join("blobs/sha256").join(hex);
            if dest.exists() {
                continue;
            }
            let src = self.dir.join(hex);
            if !src.exists() {
                return Err(StoreError::Missing { digest: d.clone() });
            }
            fs::rename(&src, &dest).map_err(io_err(&dest))?;
        }
        Ok(())
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
