//! `berth image build`: a wasm module or component (and optional files)
//! to an OCI image, as the Docker-compatible `wasi/wasm` form or as the
//! CNCF wasm artifact. Same inputs, same digests.
use super::digest;
use super::layer::{self, Tree};
use super::names;
use super::store::{NAME_ANNOTATION, REF_ANNOTATION};
use crate::wasm::{inspect, load};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::path::PathBuf;

/// Media type of the CNCF wasm artifact config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the CNCF wasm artifact layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The component layer type some tools write in the same artifact form.
pub const COMPONENT_LAYER_MEDIA_TYPE: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Config label recording the WASI level of a compat image (`p1` or `p2`).
pub const WASI_LABEL: &str = "berth.dev/wasi";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Wasm(#[from] load::LoadError),
    #[error(transparent)]
    Tree(#[from] layer::TreeError),
    #[error("{module}: reading the component's imports and exports")]
    World {
        module: String,
        #[source]
        source: wasmparser::BinaryReaderError,
    },
    #[error("writing the image")]
    Write(#[source] io::Error),
    /// Options that do not go together.
    #[error("{0}")]
    Input(&'static str),
}

pub struct BuildOptions {
    /// The wasm module or component; `None` builds a native image from
    /// `rootfs` alone.
    pub module: Option<PathBuf>,
    /// Image name as given (`-t`).
    pub name: String,
    pub artifact: bool,
    /// Extra directories: (host dir, image path).
    pub adds: Vec<(PathBuf, String)>,
    /// A directory whose content becomes the image's root (`--rootfs`).
    pub rootfs: Option<PathBuf>,
    /// `Entrypoint` of a native image (a wasm image's is its module).
    pub entrypoint: Vec<String>,
}

/// A built image: its blobs and the manifest descriptor that names it.
pub struct Built {
    pub name: String,
    /// `(digest, bytes)` of every blob: manifest, config, layers.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Descriptor of the manifest (media type, digest, size, platform).
    pub manifest: Value,
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// The layer tree: `--rootfs` content, then `--add` directories.
fn base_tree(opts: &BuildOptions) -> Result<Tree, BuildError> {
    let mut tree = Tree::default();
    if let Some(root) = &opts.rootfs {
        tree.add_host_dir(root, "/")?;
    }
    for (host, guest) in &opts.adds {
        tree.add_host_dir(host, guest)?;
    }
    Ok(tree)
}

/// A native (`linux/<this machine>`) image from `--rootfs`.
fn build_native(opts: &BuildOptions, name: String) -> Result<Built, BuildError> {
    if opts.rootfs.is_none() || opts.artifact {
        return Err(BuildError::Input("give a wasm MODULE, or --rootfs DIR (without --artifact) for a native image"));
    }
    if opts.entrypoint.is_empty() {
        return Err(BuildError::Input("a native image needs --entrypoint, e.g. --entrypoint /bin/sh"));
    }
    let blob = layer::write_layer(&base_tree(opts)?).map_err(BuildError::Write)?;
    let host = super::platform::host();
    let config = json!({
        "architecture": host.arch,
        "os": host.os,
        "config": { "Entrypoint": opts.entrypoint, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [blob.diff_id] },
        "history": [{ "created_by": "berth image build --rootfs" }],
    });
    let desc = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &blob.digest, blob.bytes.len());
    Ok(assemble(name, "application/vnd.oci.image.config.v1+json", &config, (desc, blob.bytes), &host.os, &host.arch))
}

/// Builds the image in memory.
pub fn build(opts: &BuildOptions) -> Result<Built, BuildError> {
    let name = names::normalize(&opts.name)?;
    let Some(module) = &opts.module else { return build_native(opts, name) };
    if !opts.entrypoint.is_empty() {
        return Err(BuildError::Input("--entrypoint is for native images; a wasm image's entrypoint is its module"));
    }
    let raw = std::fs::read(module).map_err(|source| BuildError::Read { path: module.clone(), source })?;
    let shown = module.display().to_string();
    let (kind, wasm) = load::to_wasm(&shown, raw)?;
    let p2 = kind == crate::wasm::code::Kind::Component;
    let (config_type, config, layer) = if opts.artifact {
        if !opts.adds.is_empty() || opts.rootfs.is_some() {
            return Err(BuildError::Input("--add and --rootfs need the compat image form: a wasm artifact holds the module alone; drop --artifact"));
        }
        let layer_digest = digest::of_bytes(&wasm);
        let mut config = json!({
            "architecture": "wasm",
            "os": if p2 { "wasip2" } else { "wasip1" },
            "layerDigests": [layer_digest],
        });
        if p2 {
            let world = inspect::component_world(&wasm).map_err(|source| BuildError::World { module: shown.to_string(), source })?;
            config["component"] = json!({ "exports": world.exports, "imports": world.imports });
        }
        let layer = (descriptor(WASM_LAYER_MEDIA_TYPE, &layer_digest, wasm.len()), wasm);
        (WASM_CONFIG_MEDIA_TYPE, config, layer)
    } else {
        let stem = module.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty() && !s.starts_with('.')).unwrap_or("app");
        let entry = format!("/{stem}.wasm");
        let mut tree = base_tree(opts)?;
        tree.add_bytes(&entry, wasm, 0o755)?;
        let blob = layer::write_layer(&tree).map_err(BuildError::Write)?;
        let config = json!({
            "architecture": "wasm",
            "os": "wasi",
            "config": {
                "Entrypoint": [entry],
                "Labels": { WASI_LABEL: if p2 { "p2" } else { "p1" } },
            },
            "rootfs": { "type": "layers", "diff_ids": [blob.diff_id] },
            "history": [{ "created_by": "berth image build", "comment": format!("wasm {}", if p2 { "component" } else { "module" }) }],
        });
        let desc = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &blob.digest, blob.bytes.len());
        ("application/vnd.oci.image.config.v1+json", config, (desc, blob.bytes))
    };
    let os = if opts.artifact { config["os"].as_str().unwrap_or("wasip1") } else { "wasi" }.to_string();
    Ok(assemble(name, config_type, &config, layer, &os, "wasm"))
}

/// Config, manifest and manifest descriptor around one layer.
fn assemble(name: String, config_type: &str, config: &Value, layer: (Value, Vec<u8>), os: &str, arch: &str) -> Built {
    // serde_json's Value sorts keys: stable bytes, stable digests.
    let config_bytes = serde_json::to_vec(config).expect("JSON values serialize");
    let config_digest = digest::of_bytes(&config_bytes);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(config_type, &config_digest, config_bytes.len()),
        "layers": [layer.0],
    });
    // The wasm artifact says what it is (registries' referrers and
    // `wkg`/`oras` list it by this); an image is an image.
    if config_type == WASM_CONFIG_MEDIA_TYPE {
        manifest["artifactType"] = json!(WASM_CONFIG_MEDIA_TYPE);
    }
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON values serialize");
    let manifest_digest = digest::of_bytes(&manifest_bytes);
    let mut manifest_desc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest_digest, manifest_bytes.len());
    manifest_desc["platform"] = json!({ "architecture": arch, "os": os });
    let layer_digest = layer.0["digest"].as_str().unwrap_or_default().to_string();
    Built { name, blobs: vec![(manifest_digest, manifest_bytes), (config_digest, config_bytes), (layer_digest, layer.1)], manifest: manifest_desc }
}

/// Writes the image as an OCI image layout tarball, named so that both
/// `ctr image import` and `berth image import` pick the name up.
pub fn write_archive(built: &Built, out: impl Write) -> io::Result<()> {
    let mut desc = built.manifest.clone();
    desc["annotations"] = json!({ NAME_ANNOTATION: built.name, REF_ANNOTATION: names::tag_of(&built.name) });
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc] });
    let index = serde_json::to_vec(&index).expect("JSON values serialize");
    let mut tar = layer::TarOut::new(out);
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    let mut blobs: Vec<&(String, Vec<u8>)> = built.blobs.iter().collect();
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (d, bytes) in blobs {
        let hex = digest::hex_of(d).map_err(io::Error::other)?;
        tar.file(&format!("blobs/sha256/{hex}"), 0o644, bytes.len() as u64, &bytes[..])?;
    }
    tar.file("index.json", 0o644, index.len() as u64, &index[..])?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar.file("oci-layout", 0o644, layout.len() as u64, &layout[..])?;
    tar.finish()?.flush()
}
