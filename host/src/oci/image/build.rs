//! `berth image build`: a wasm module or component (and optional files)
//! to an OCI image, as the Docker-compatible `wasi/wasm` form or as the
//! CNCF wasm artifact. Same inputs, same digests.
use super::layer::{self, Tree};
use super::names;
use super::store::{NAME_ANNOTATION, REF_ANNOTATION};
use super::{canonical_json, digest};
use crate::wasm::{inspect, load};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
    RootFsBuilder,
};
use serde::Serialize;
use std::collections::HashMap;
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
    #[error("assembling the image's OCI documents")]
    Spec(#[from] oci_spec::OciSpecError),
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
    pub manifest: Descriptor,
}

/// The config of the CNCF wasm artifact (`application/vnd.wasm.config.v0+json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<inspect::World>,
}

fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Descriptor {
    Descriptor::new(media_type, size as u64, digest::parse(digest).expect("berth's own sha256 digests are valid"))
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
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(host.arch.as_str()))
        .os(Os::from(host.os.as_str()))
        .config(
            ConfigBuilder::default()
                .entrypoint(opts.entrypoint.clone())
                .env(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
                .build()?,
        )
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![blob.diff_id.clone()]).build()?)
        .history(vec![HistoryBuilder::default().created_by("berth image build --rootfs").build()?])
        .build()?;
    let desc = descriptor(MediaType::ImageLayerGzip, &blob.digest, blob.bytes.len());
    assemble(name, MediaType::ImageConfig, &canonical_json(&config), (desc, blob.bytes), &host.os, &host.arch)
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
    let form = if opts.artifact {
        if !opts.adds.is_empty() || opts.rootfs.is_some() {
            return Err(BuildError::Input("--add and --rootfs need the compat image form: a wasm artifact holds the module alone; drop --artifact"));
        }
        let layer_digest = digest::of_bytes(&wasm);
        let component = match p2 {
            true => Some(inspect::component_world(&wasm).map_err(|source| BuildError::World { module: shown.to_string(), source })?),
            false => None,
        };
        let config = WasmConfig { architecture: "wasm", os: if p2 { "wasip2" } else { "wasip1" }, layer_digests: vec![layer_digest.clone()], component };
        let os = config.os;
        let layer = (descriptor(MediaType::Other(WASM_LAYER_MEDIA_TYPE.into()), &layer_digest, wasm.len()), wasm);
        (MediaType::Other(WASM_CONFIG_MEDIA_TYPE.into()), canonical_json(&config), layer, os)
    } else {
        let stem = module.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty() && !s.starts_with('.')).unwrap_or("app");
        let entry = format!("/{stem}.wasm");
        let mut tree = base_tree(opts)?;
        tree.add_bytes(&entry, wasm, 0o755)?;
        let blob = layer::write_layer(&tree).map_err(BuildError::Write)?;
        let labels = HashMap::from([(WASI_LABEL.to_string(), if p2 { "p2" } else { "p1" }.to_string())]);
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Wasm)
            .os(Os::from("wasi"))
            .config(ConfigBuilder::default().entrypoint(vec![entry]).labels(labels).build()?)
            .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![blob.diff_id.clone()]).build()?)
            .history(vec![HistoryBuilder::default()
                .created_by("berth image build")
                .comment(format!("wasm {}", if p2 { "component" } else { "module" }))
                .build()?])
            .build()?;
        let desc = descriptor(MediaType::ImageLayerGzip, &blob.digest, blob.bytes.len());
        (MediaType::ImageConfig, canonical_json(&config), (desc, blob.bytes), "wasi")
    };
    let (config_type, config, layer, os) = form;
    assemble(name, config_type, &config, layer, os, "wasm")
}

/// Config (its bytes), manifest and manifest descriptor around one layer.
fn assemble(name: String, config_type: MediaType, config: &[u8], layer: (Descriptor, Vec<u8>), os: &str, arch: &str) -> Result<Built, BuildError> {
    let config_digest = digest::of_bytes(config);
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(config_type.clone(), &config_digest, config.len()))
        .layers(vec![layer.0.clone()]);
    // The wasm artifact says what it is (registries' referrers and
    // `wkg`/`oras` list it by this); an image is an image.
    if config_type == MediaType::Other(WASM_CONFIG_MEDIA_TYPE.into()) {
        manifest = manifest.artifact_type(config_type);
    }
    let manifest_bytes = canonical_json(&manifest.build()?);
    let manifest_digest = digest::of_bytes(&manifest_bytes);
    let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_digest, manifest_bytes.len());
    manifest_desc.set_platform(Some(PlatformBuilder::default().architecture(Arch::from(arch)).os(Os::from(os)).build()?));
    let layer_digest = layer.0.digest().to_string();
    Ok(Built { name, blobs: vec![(manifest_digest, manifest_bytes), (config_digest, config.to_vec()), (layer_digest, layer.1)], manifest: manifest_desc })
}

/// Writes the image as an OCI image layout tarball, named so that both
/// `ctr image import` and `berth image import` pick the name up.
pub fn write_archive(built: &Built, out: impl Write) -> io::Result<()> {
    let mut desc = built.manifest.clone();
    desc.set_annotations(Some(HashMap::from([(NAME_ANNOTATION.to_string(), built.name.clone()), (REF_ANNOTATION.to_string(), names::tag_of(&built.name))])));
    let index = ImageIndexBuilder::default().schema_version(2u32).media_type(MediaType::ImageIndex).manifests(vec![desc]).build().map_err(io::Error::other)?;
    let index = canonical_json(&index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The manifest and archive digests of the images built from `wat`: the
    /// artifact, the compat image, and a native image.
    fn digests(dir: &std::path::Path, wat: &str) -> Vec<String> {
        let module = dir.join("app.wat");
        std::fs::write(&module, wat).unwrap();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/motd"), "hi\n").unwrap();
        std::fs::set_permissions(rootfs.join("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(rootfs.join("etc/motd"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let opts = |module: Option<PathBuf>, artifact: bool, entrypoint: Vec<String>| BuildOptions {
            module,
            name: "example.com/app:1".into(),
            artifact,
            adds: vec![],
            rootfs: (!artifact).then(|| rootfs.clone()),
            entrypoint,
        };
        let mut out = Vec::new();
        for o in [opts(Some(module.clone()), true, vec![]), opts(Some(module.clone()), false, vec![]), opts(None, false, vec!["/bin/sh".into()])] {
            let built = build(&o).unwrap();
            let mut archive = Vec::new();
            write_archive(&built, &mut archive).unwrap();
            out.push(format!("{} {}", built.manifest.digest(), digest::of_bytes(&archive)));
        }
        out
    }

    /// Same inputs, same digests, release after release: an image built
    /// again is the image pushed, pulled and cached before. These are the
    /// digests berth has made for these inputs since its images were
    /// first built.
    #[test]
    fn built_images_keep_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = digests(dir.path(), r#"(module (func (export "_start")))"#);
        let p2 = digests(dir.path(), r#"(component (core module $m (func (export "run"))) (core instance (instantiate $m)))"#);
        let native =
            "sha256:2723bcb981432c716a9cb4072ae684ab9010948e122088c475089e7c42648d17 sha256:21565872714be37c286072702c47976a91d914c4899f861ff27a7fc757bf757c";
        assert_eq!(
            p1[..2],
            [
                "sha256:1de1fa191a57246f132f78a227eeff7753fb88de3c955d9d32c087d1814c28d3 sha256:f91c9e2a0bb6538a220ab082f7c7c48bb974bc985b5e5d070d7df285b748b777",
                "sha256:235e82c428848ba3029843d5852306e3c59fa07d7baa6881326637be7c26d009 sha256:28d5a0282675099bfe4142d2d73ebbdb3be83486c161d229a9832db0f1faf9ff",
            ]
        );
        assert_eq!(
            p2[..2],
            [
                "sha256:c5110c5c40dd32142f9ccc28090a4c28d31af84109fc2612389a286079b3118d sha256:e0063e84c424c67d4a0d5a230a4949358f0f48960a08a0434af1adee39328789",
                "sha256:77adff7f68bbf3c0231aa36b36e0c8fd85a5ad64f57e54d9a7954ad1e8305f90 sha256:3559becfdbde798421c91a0288078b8db05ba73025e050e811486fad1564772e",
            ]
        );
        // A native image names this machine's architecture.
        if super::super::platform::host().arch == "amd64" {
            assert_eq!((p1[2].as_str(), p2[2].as_str()), (native, native));
        }
    }
}
