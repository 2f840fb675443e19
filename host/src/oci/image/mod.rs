//! OCI images for wasm: building them, the local store, importing
//! archives, unpacking layers safely, and turning an image into a
//! [`RunPlan`] through the same path as a runtime bundle.
//!
//! - [`build`]: `.wasm` to a `wasi/wasm` image or a CNCF wasm artifact.
//! - [`store`]: content-addressed blobs and names under `$BERTH_ROOT/images`.
//! - [`import`]: OCI layouts and `docker save` archives into the store.
//! - [`unpack`]: layer entries created strictly beneath a rootfs.
//! - [`rootfs`]: unpacked rootfs directories cached by layer chain.

pub mod build;
pub mod digest;
pub mod import;
pub mod layer;
pub mod names;
pub mod platform;
pub mod rootfs;
pub mod store;
pub mod unpack;

use super::bundle::{self, BundleError};
use crate::plan::{Entrypoint, ModuleSource, RunPlan, User};
use oci_spec::image::ImageConfiguration;
use serde_json::json;
use std::collections::HashSet;
use store::{Record, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("image {name}: {problem}")]
    Invalid { name: String, problem: String },
    #[error("image {name}")]
    Layers {
        name: String,
        #[source]
        source: ArtifactLayers,
    },
    #[error("image {name}")]
    Plan {
        name: String,
        #[source]
        source: BundleError,
    },
}

/// What kind of image a manifest describes.
pub enum Kind {
    /// A CNCF wasm artifact: the module is the single `application/wasm` layer.
    Artifact,
    /// A filesystem image (`wasi/wasm` compat, or native).
    Filesystem(Box<ImageConfiguration>),
}

/// Reads an image's manifest and config from the store.
pub fn open(store: &Store, rec: &Record) -> Result<(oci_spec::image::ImageManifest, Kind), ImageError> {
    let manifest = store.manifest(rec.manifest.digest().as_ref())?;
    let cfg = manifest.config();
    if cfg.media_type().to_string() == build::WASM_CONFIG_MEDIA_TYPE {
        return Ok((manifest, Kind::Artifact));
    }
    let bytes = store.read_small(cfg.digest().as_ref())?;
    let config: ImageConfiguration = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Invalid { name: rec.name.clone(), problem: format!("its config {} is not a valid image config: {e}", cfg.digest()) })?;
    Ok((manifest, Kind::Filesystem(Box::new(config))))
}

/// A document's bytes as berth hashes them: JSON with sorted keys
/// (serde_json's map), so that the same inputs always give the same
/// digests, whatever order a type declares its fields in.
pub(crate) fn canonical_json(doc: &impl serde::Serialize) -> Vec<u8> {
    let value = serde_json::to_value(doc).expect("OCI documents serialize");
    serde_json::to_vec(&value).expect("JSON values serialize")
}

/// The module layer of a wasm artifact: its single `application/wasm` (or
/// component) layer.
pub fn artifact_layer(manifest: &oci_spec::image::ImageManifest) -> Result<&oci_spec::image::Descriptor, ArtifactLayers> {
    let is_module = |l: &&oci_spec::image::Descriptor| {
        let t = l.media_type().to_string();
        t == build::WASM_LAYER_MEDIA_TYPE || t == build::COMPONENT_LAYER_MEDIA_TYPE
    };
    let wasm: Vec<_> = manifest.layers().iter().filter(is_module).collect();
    match wasm.as_slice() {
        [layer] => Ok(layer),
        _ => Err(ArtifactLayers(wasm.len())),
    }
}

/// A wasm artifact without exactly one module layer: how many it has.
#[derive(Debug, thiserror::Error)]
#[error("a wasm artifact needs exactly one application/wasm layer; it has {0}")]
pub struct ArtifactLayers(pub usize);

/// The plan to run image `name` with `args` (which replace the image's
/// `Cmd` when given). The rootfs is unpacked on first use and shown to
/// the guest read-only.
/// The plan to run image `name`, and for an image with a filesystem the
/// lease on its unpacked rootfs, to hold while the guest runs.
pub fn plan_for_image(store: &Store, name: &str, args: &[String], limits: &unpack::Limits) -> Result<(RunPlan, Option<rootfs::Lease>), ImageError> {
    let rec = store.resolve(name)?;
    let invalid = |problem: String| ImageError::Invalid { name: rec.name.clone(), problem };
    let (manifest, kind) = open(store, &rec)?;
    let config = match kind {
        Kind::Artifact => {
            let layer = artifact_layer(&manifest).map_err(|source| ImageError::Layers { name: rec.name.clone(), source })?;
            let digest = layer.digest().to_string();
            let arg0 = format!("{}.wasm", names::short(&rec.name));
            let plan = RunPlan {
                name: rec.name.clone(),
                entrypoint: Entrypoint { source: ModuleSource::Blob { path: store.blob_path(&digest)?, digest }, export: None },
                args: std::iter::once(arg0).chain(args.iter().cloned()).collect(),
                ..Default::default()
            };
            return Ok((plan, None));
        }
        Kind::Filesystem(c) => c,
    };
    let diff_ids = config.rootfs().diff_ids().clone();
    let (root, hit, lease) = rootfs::ensure(store, &manifest, &diff_ids, limits)?;
    tracing::debug!(image = %rec.name, rootfs = %root.display(), cache_hit = hit, "rootfs ready");
    let c = config.config().clone().unwrap_or_default();
    let mut process_args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    process_args.extend(if args.is_empty() { c.cmd().clone().unwrap_or_default() } else { args.to_vec() });
    if process_args.is_empty() {
        return Err(invalid("it has no Entrypoint or Cmd; give the module path after the image name, e.g. `berth run IMAGE /app.wasm`".into()));
    }
    let user = parse_user(c.user().as_deref().unwrap_or("")).map_err(invalid)?;
    let cwd = c.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": process_args,
            "env": c.env().clone().unwrap_or_default(),
            "cwd": cwd,
            "user": { "uid": user.as_ref().map_or(0, |u| u.uid), "gid": user.as_ref().map_or(0, |u| u.gid) },
        },
        "root": { "path": root, "readonly": true },
    });
    let spec: oci_spec::runtime::Spec = serde_json::from_value(spec).map_err(|e| invalid(format!("building its runtime spec: {e}")))?;
    let bundle_dir = root.parent().unwrap_or(&root).to_path_buf();
    let mut plan = bundle::plan_from_spec(&bundle_dir, &spec).map_err(|source| ImageError::Plan { name: rec.name.clone(), source })?;
    plan.name = rec.name.clone();
    plan.user = user;
    Ok((plan, Some(lease)))
}

/// The image config's `User`: empty (the invoking user), `uid` or
/// `uid:gid`. Names would need the image's /etc/passwd and are refused.
fn parse_user(s: &str) -> Result<Option<User>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let (u, g) = s.split_once(':').unwrap_or((s, "0"));
    match (u.parse::<u32>(), g.parse::<u32>()) {
        (Ok(uid), Ok(gid)) => Ok(Some(User { uid, gid, additional_gids: Vec::new() })),
        _ => Err(format!("its config sets User {s:?}; berth accepts only numeric uid[:gid] for wasm images")),
    }
}

/// Removes an image and every blob and cached rootfs no other image needs.
pub fn remove(store: &Store, name: &str) -> Result<(Record, u64), ImageError> {
    let (rec, freed) = store.remove(name)?;
    let mut keep = HashSet::new();
    for r in store.list()? {
        if let Ok((_, Kind::Filesystem(c))) = open(store, &r) {
            keep.insert(rootfs::chain_id(c.rootfs().diff_ids()).trim_start_matches("sha256:").to_string());
        }
    }
    rootfs::prune(store, &keep);
    Ok((rec, freed))
}
