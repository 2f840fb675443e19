//! Hand-assembled OCI image layouts and `docker save` archives, including
//! malformed ones, for import tests.
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Files of an archive, written in order as a plain tar.
#[derive(Default, Clone)]
pub struct Archive {
    pub files: Vec<(String, Vec<u8>)>,
}

impl Archive {
    pub fn add(&mut self, path: &str, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.files.push((path.to_string(), bytes.into()));
        self
    }

    /// Stores a blob under `blobs/sha256/` and returns its descriptor.
    pub fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Value {
        let d = digest(bytes);
        self.add(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), bytes);
        json!({ "mediaType": media_type, "digest": d, "size": bytes.len() })
    }

    /// An image from uncompressed tar layers; returns the manifest descriptor.
    pub fn image(&mut self, os: &str, arch: &str, entrypoint: &[&str], layers: &[Vec<u8>]) -> Value {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let layer_descs: Vec<Value> = layers.iter().map(|l| self.blob("application/vnd.oci.image.layer.v1.tar", l)).collect();
        let config = json!({ "architecture": arch, "os": os, "config": { "Entrypoint": entrypoint }, "rootfs": { "type": "layers", "diff_ids": diff_ids } });
        let config = self.blob("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
        let manifest = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": layer_descs });
        let mut desc = self.blob("application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
        desc["platform"] = json!({ "os": os, "architecture": arch });
        desc
    }

    /// Adds `oci-layout` and an `index.json` naming each descriptor.
    pub fn index(&mut self, manifests: &[(Option<&str>, Value)]) -> &mut Self {
        let ms: Vec<Value> = manifests
            .iter()
            .map(|(name, d)| {
                let mut d = d.clone();
                if let Some(n) = name {
                    d["annotations"] = json!({ "io.containerd.image.name": n });
                }
                d
            })
            .collect();
        self.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
        self.add("index.json", json!({ "schemaVersion": 2, "manifests": ms }).to_string());
        self
    }

    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, bytes) in &self.files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, &bytes[..]).unwrap();
        }
        b.into_inner().unwrap()
    }
}

/// A one-file uncompressed layer.
pub fn file_layer(path: &str, bytes: &[u8], mode: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(mode);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, bytes).unwrap();
    b.into_inner().unwrap()
}
