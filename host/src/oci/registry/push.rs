//! `berth image push`: an image of the store to the registry its name
//! names. Blobs the registry has (a HEAD answers) are not sent again; the
//! manifest goes last, with its own media type (an OCI image manifest, a
//! wasm artifact's `artifactType` included, as the store holds it).
use super::{reference, RegistryError, Remote, RemoteOptions};
use crate::oci::image::names;
use crate::oci::image::store::Store;
use futures_util::TryStreamExt;
use oci_client::RegistryOperation;

#[derive(Debug, Clone)]
pub struct Pushed {
    pub name: String,
    pub digest: String,
    /// Blobs sent, and those the registry already had.
    pub sent: usize,
    pub skipped: usize,
}

/// Pushes the store's image `name` to its registry.
pub fn push(store: &Store, name: &str, opts: &RemoteOptions) -> Result<Pushed, RegistryError> {
    let rec = store.resolve(name)?;
    let parsed = names::parse(&rec.name)?;
    let remote = Remote::new(&parsed.domain, opts)?;
    let r = reference(&parsed);
    let what = format!("pushing {}", rec.name);
    remote.rt.block_on(remote.client.auth(&r, &remote.auth, RegistryOperation::Push)).map_err(|e| remote.error(&what, e))?;
    let digest = rec.manifest.digest().to_string();
    let bytes = store.read_small(&digest)?;
    let manifest = store.manifest(&digest)?;
    let mut blobs = vec![manifest.config().clone()];
    blobs.extend(manifest.layers().iter().cloned());
    let (mut sent, mut skipped) = (0, 0);
    for b in &blobs {
        let d = b.digest().to_string();
        let exists = remote.rt.block_on(remote.client.blob_exists(&r, &d)).map_err(|e| remote.error(format!("{what}: blob {d}"), e))?;
        if exists {
            skipped += 1;
            continue;
        }
        let path = store.blob_path(&d)?;
        let upload = async {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| oci_client::errors::OciDistributionError::GenericError(Some(format!("opening {}: {e}", path.display()))))?;
            let stream = tokio_util::io::ReaderStream::new(file).map_err(|e| oci_client::errors::OciDistributionError::GenericError(Some(e.to_string())));
            remote.client.push_blob_stream(&r, stream, &d, Some(b.size())).await
        };
        remote.rt.block_on(upload).map_err(|e| remote.error(format!("{what}: uploading blob {d}"), e))?;
        sent += 1;
    }
    let media_type = rec.manifest.media_type().to_string();
    let content_type = http::HeaderValue::from_str(&media_type)
        .map_err(|_| RegistryError::Invalid { what: what.clone(), problem: format!("media type {media_type:?} is not a header value") })?;
    remote.rt.block_on(remote.client.push_manifest_raw(&r, bytes, content_type)).map_err(|e| remote.error(format!("{what}: its manifest"), e))?;
    Ok(Pushed { name: rec.name, digest, sent, skipped })
}
