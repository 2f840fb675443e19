//! Platforms (`os/arch[/variant]`) and which one berth prefers.
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("platform {0:?} is not of the form OS/ARCH[/VARIANT], e.g. wasi/wasm or linux/amd64")]
pub struct PlatformError(String);

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) }),
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The OS names wasm images use: Docker's `wasi`, and the CNCF
/// artifact's `wasip1` / `wasip2`.
fn is_wasi(os: &str) -> bool {
    matches!(os, "wasi" | "wasip1" | "wasip2")
}

impl Platform {
    /// Whether an image of platform `have` satisfies this wanted platform.
    /// `wasi/wasm` accepts every WASI level.
    pub fn matches(&self, have: &Platform) -> bool {
        let os = self.os == have.os || (self.os == "wasi" && self.arch == "wasm" && is_wasi(&have.os));
        os && self.arch == have.arch && (self.variant.is_none() || self.variant == have.variant)
    }

    pub fn is_wasm(&self) -> bool {
        self.arch == "wasm"
    }

    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform { os: p.os().to_string(), arch: p.architecture().to_string(), variant: p.variant().clone() }
    }

    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.arch.as_str().into());
        p.set_variant(self.variant.clone());
        p
    }
}

/// This machine's native platform, as Go spells it.
pub fn host() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform { os: "linux".into(), arch: arch.into(), variant: None }
}

/// Platforms tried, in order, when none is asked for: wasm, then native.
pub fn preferred() -> Vec<Platform> {
    vec![Platform { os: "wasi".into(), arch: "wasm".into(), variant: None }, host()]
}

/// The platform an image config (OCI, Docker or CNCF wasm) declares.
pub fn of_config(bytes: &[u8]) -> Platform {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    Platform { os: s("os").unwrap_or_else(|| "unknown".into()), arch: s("architecture").unwrap_or_else(|| "unknown".into()), variant: s("variant") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let wasi: Platform = "wasi/wasm".parse().unwrap();
        for have in ["wasi/wasm", "wasip1/wasm", "wasip2/wasm"] {
            assert!(wasi.matches(&have.parse().unwrap()), "{have}");
        }
        assert!(!wasi.matches(&"linux/amd64".parse().unwrap()));
        let p2: Platform = "wasip2/wasm".parse().unwrap();
        assert!(!p2.matches(&"wasip1/wasm".parse().unwrap()));
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert!(!arm.matches(&"linux/arm/v6".parse().unwrap()));
        for bad in ["", "linux", "linux/", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
        assert_eq!(of_config(br#"{"os":"wasi","architecture":"wasm"}"#).to_string(), "wasi/wasm");
        assert_eq!(of_config(b"garbage").to_string(), "unknown/unknown");
    }
}
