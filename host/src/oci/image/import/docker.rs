//! `docker save` archives: their `manifest.json` becomes an OCI manifest
//! per image, over the config and layer files it names.
use super::archive::{norm, Found};
use super::{finish, invalid, parse, Candidate, ImportError, ImportOptions, Imported};
use crate::oci::image::platform;
use crate::oci::image::store::Ingest;
use crate::oci::image::{digest, names};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

/// `docker save` output: `manifest.json` lists config and layer files.
pub(super) fn from_docker(ingest: &Ingest<'_>, found: &Found, opts: &ImportOptions) -> Result<Vec<(Imported, Descriptor, Vec<String>)>, ImportError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = parse("manifest.json", found.docker_manifest.as_deref().unwrap_or_default())?;
    let file = |p: &str| -> Result<String, ImportError> {
        let mut p = norm(p);
        for _ in 0..8 {
            if let Some(d) = found.files.get(&p) {
                return Ok(d.clone());
            }
            match found.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(invalid("manifest.json", format!("names {p}, which the archive does not hold")))
    };
    let mut out = Vec::new();
    for e in entries {
        let config_digest = file(&e.config)?;
        let config = ingest.read_small(&config_digest, None)?;
        let platform = platform::of_config(&config);
        if let Some(want) = &opts.platform {
            if !want.matches(&platform) {
                return Err(ImportError::NoPlatform { name: e.config.clone(), wanted: want.to_string(), available: platform.to_string() });
            }
        }
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = file(l)?;
            let size = ingest.open(&d)?.metadata().map_err(|source| ImportError::Read { path: l.into(), source })?.len();
            layers.push(Descriptor::new(MediaType::ImageLayer, size, digest::parse(&d)?));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(MediaType::ImageConfig, config.len() as u64, digest::parse(&config_digest)?))
            .layers(layers)
            .build()
            .map_err(|e| invalid("manifest.json", format!("its image: {e}")))?;
        let (md, size) = ingest.put_bytes(&crate::oci::image::canonical_json(&manifest))?;
        let desc = Descriptor::new(MediaType::ImageManifest, size, digest::parse(&md)?);
        let tags: Vec<String> = match (&opts.name, e.repo_tags.unwrap_or_default()) {
            (Some(n), _) => vec![n.clone()],
            (None, t) if t.is_empty() => return Err(ImportError::Unnamed { digest: md }),
            (None, t) => t,
        };
        for t in tags {
            let c = Candidate { desc: desc.clone(), manifest: manifest.clone(), platform: platform.clone() };
            out.push(finish(ingest, found, names::normalize(&t)?, c)?);
        }
    }
    Ok(out)
}
