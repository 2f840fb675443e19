//! CNCF wasm artifacts in containerd's content store: the module of a
//! container whose image is one.
use super::{ApiError, Client, Descriptor};
use crate::oci::image::build::WASM_CONFIG_MEDIA_TYPE;
use crate::oci::image::platform::Platform;
use crate::oci::image::store::{Store, StoreError};
use crate::plan::ModuleSource;

/// The largest manifest or index read from the content store.
const MAX_JSON: u64 = 4 << 20;
/// The largest wasm layer fetched: berth's module cap, which a larger one
/// would meet when it runs.
const MAX_LAYER: u64 = crate::wasm::load::DEFAULT_MAX_MODULE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("image {image}")]
    Layers {
        image: String,
        #[source]
        source: crate::oci::image::ArtifactLayers,
    },
    #[error("image {image}: its {what} {digest} is not valid")]
    Json {
        image: String,
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("keeping the module of image {image} in berth's store")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
    #[error("opening berth's image store")]
    OpenStore(#[source] StoreError),
    #[error("image {image}: reading back its fetched layer")]
    Scratch {
        image: String,
        #[source]
        source: std::io::Error,
    },
}

/// The module of container `id` when its image (in containerd) is a CNCF
/// wasm artifact: the image's single `application/wasm` layer, kept in
/// berth's store by digest (fetched from containerd's content store the
/// first time, verified on the way in and again when it is run).
/// `Ok(None)`: the container has no image, or its image is no wasm artifact.
pub async fn artifact_module(client: &mut Client, store: &Store, id: &str) -> Result<Option<(String, ModuleSource)>, ArtifactError> {
    let image = client.container_image(id).await?;
    if image.is_empty() {
        return Ok(None);
    }
    let mut desc = client.image_target(&image).await?;
    if is_index(&desc.media_type) {
        let index: oci_spec::image::ImageIndex = read_json(client, &image, "index", &desc).await?;
        let wasm = index.manifests().iter().find(|m| m.platform().as_ref().is_some_and(|p| Platform::from_oci(p).is_wasm()));
        let Some(m) = wasm else { return Ok(None) };
        desc = Descriptor { media_type: m.media_type().to_string(), digest: m.digest().to_string(), size: m.size() };
    }
    let manifest: oci_spec::image::ImageManifest = read_json(client, &image, "manifest", &desc).await?;
    if manifest.config().media_type().to_string() != WASM_CONFIG_MEDIA_TYPE {
        return Ok(None);
    }
    let layer = crate::oci::image::artifact_layer(&manifest).map_err(|source| ArtifactError::Layers { image: image.clone(), source })?;
    let layer = Descriptor { media_type: layer.media_type().to_string(), digest: layer.digest().to_string(), size: layer.size() };
    let keep = |source| ArtifactError::Store { image: image.clone(), source };
    let path = store.blob_path(&layer.digest).map_err(keep)?;
    if !path.exists() {
        // Streamed through an unnamed file in the store's staging area, not
        // memory; the store checks it again on the way in.
        let ingest = store.ingest().map_err(keep)?;
        let mut scratch = ingest.scratch().map_err(keep)?;
        client.read_blob_into(&layer, MAX_LAYER, &mut scratch).await?;
        std::io::Seek::rewind(&mut scratch).map_err(|source| ArtifactError::Scratch { image: image.clone(), source })?;
        ingest.put(scratch, Some((&layer.digest, Some(layer.size)))).map_err(keep)?;
        ingest.commit_blobs(std::slice::from_ref(&layer.digest)).map_err(keep)?;
        tracing::info!(image = %image, layer = %layer.digest, bytes = layer.size, "wasm artifact layer fetched from containerd's content store");
    }
    Ok(Some((image, ModuleSource::Blob { path, digest: layer.digest })))
}

/// The JSON document (`what` of `image`) that `desc` names in containerd's
/// content store.
async fn read_json<T: serde::de::DeserializeOwned>(client: &mut Client, image: &str, what: &'static str, desc: &Descriptor) -> Result<T, ArtifactError> {
    let bytes = client.read_blob(desc, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|source| ArtifactError::Json { image: image.to_string(), what, digest: desc.digest.clone(), source })
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json" || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}
