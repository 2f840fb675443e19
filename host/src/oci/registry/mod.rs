//! OCI registries: `berth image pull`, `push` and `login`, through the
//! distribution API client `oci-client` (token and basic auth, TLS with the
//! system roots plus `--ca-file` and the node's `certs.d` ([`hosts`]),
//! plain HTTP for loopback registries).
//!
//! Pulled blobs stream into the store's staging area and are verified
//! against their digest and size there, exactly as `berth image import`'s
//! are; an image becomes visible only once all of it is in.
pub mod auth;
mod blob;
pub mod hosts;
pub mod pull;
pub mod push;

use super::image::names;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Plain HTTP (no TLS): for loopback registries, or anywhere with
    /// [`PlainHttp::Forced`].
    pub plain_http: PlainHttp,
    /// Extra CA certificates (PEM) to trust beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The `certs.d` directories searched for the registry's CA
    /// certificates and `hosts.toml` (see [`hosts`]).
    pub certs_dirs: Vec<PathBuf>,
    /// How long one read or connect may take before the request fails.
    pub timeout: Duration,
    /// Layers downloaded at once.
    pub parallel: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    No,
    /// Only for `localhost`, `127.0.0.0/8` and `[::1]`.
    Loopback,
    /// For any registry (`--plain-http=force`).
    Forced,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            plain_http: PlainHttp::No,
            ca_file: None,
            certs_dirs: hosts::DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
            timeout: Duration::from_secs(30),
            parallel: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("{registry} is not a loopback registry: plain HTTP would send images and credentials in the clear; use TLS, or --plain-http=force")]
    PlainHttpRefused { registry: String },
    #[error("reading the CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Hosts(#[from] hosts::HostsError),
    #[error("the TLS settings for {registry} ({}) hold no certificate berth can read; give PEM certificates", .files.join(", "))]
    BadCertificates {
        registry: String,
        files: Vec<String>,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{what}: {registry}'s TLS certificate {problem}")]
    Tls { what: String, registry: String, problem: String },
    #[error("{what} at {registry}: wrong user name or password; log in again with `berth image login {registry}`")]
    Unauthorized { what: String, registry: String },
    #[error("{reference}: not found at the registry (no such image, tag, digest or blob)")]
    NotFound { reference: String },
    #[error("{what}")]
    Remote {
        what: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{what}: {registry} answered berth's TLS handshake with something else; if it is a plain-HTTP registry on this machine, add --plain-http")]
    NotTls {
        what: String,
        registry: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
    #[error(transparent)]
    Import(#[from] super::image::import::ImportError),
    #[error(transparent)]
    Store(#[from] super::image::store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("starting the network runtime")]
    Runtime(#[source] std::io::Error),
}

/// A client for one registry, with the credentials berth has for it.
pub(crate) struct Remote {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub auth: RegistryAuth,
    pub registry: String,
    /// How long one read may take; also the window a download's progress
    /// is judged over (see `blob`).
    pub timeout: Duration,
    /// Whether it is reached over TLS.
    tls: bool,
}

/// Whether a registry host (with an optional port) is this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Remote {
    /// A client for the registry of `reference`, with its credentials.
    pub fn new(registry: &str, opts: &RemoteOptions) -> Result<Remote, RegistryError> {
        // TLS uses ring (built with gcc alone); a provider installed before
        // is kept. rustls deprecates ring's provider for its lack of
        // post-quantum key exchange, which only aws-lc-rs (cmake and a
        // large C library in every static binary) offers today.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = match opts.plain_http {
            PlainHttp::No => ClientProtocol::Https,
            PlainHttp::Loopback if !is_loopback(registry) => return Err(RegistryError::PlainHttpRefused { registry: registry.into() }),
            PlainHttp::Loopback | PlainHttp::Forced => ClientProtocol::Http,
        };
        let tls = matches!(protocol, ClientProtocol::Https);
        // The CAs to trust beside the system's: --ca-file's, then the
        // node's certs.d.
        let mut cas = Vec::new();
        if let Some(path) = &opts.ca_file {
            let data = std::fs::read(path).map_err(|source| RegistryError::CaFile { path: path.clone(), source })?;
            cas.push((path.clone(), data));
        }
        let node = if tls { hosts::for_registry(registry, &opts.certs_dirs)? } else { hosts::HostTls::default() };
        cas.extend(node.cas);
        let files: Vec<String> = cas.iter().map(|(path, _)| path.display().to_string()).collect();
        let extra_root_certificates = cas.into_iter().map(|(_, data)| Certificate { encoding: CertificateEncoding::Pem, data }).collect();
        if let Some(file) = &node.skip_verify {
            tracing::warn!(registry, hosts_toml = %file.display(), "skip_verify: the registry's TLS certificate is not checked");
        }
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: node.skip_verify.is_some(),
            extra_root_certificates,
            read_timeout: Some(opts.timeout),
            connect_timeout: Some(opts.timeout),
            max_concurrent_download: opts.parallel.max(1),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            // berth chooses platforms itself (see pull).
            platform_resolver: None,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(RegistryError::Runtime)?;
        let auth = auth::credentials(registry)?;
        // (`Client::new` would fall back to a client without the CAs and
        // timeouts when the config is refused.)
        let client = Client::try_from(config).map_err(|source| RegistryError::BadCertificates { registry: registry.into(), files, source })?;
        Ok(Remote { rt, client, auth, registry: registry.into(), timeout: opts.timeout, tls })
    }

    /// `what` failed at the registry: the error a user can act on.
    pub fn error(&self, what: impl Into<String>, e: oci_client::errors::OciDistributionError) -> RegistryError {
        use oci_client::errors::OciDistributionError as E;
        let what = what.into();
        match &e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => RegistryError::Unauthorized { what, registry: self.registry.clone() },
            E::ImageManifestNotFoundError(_) => RegistryError::NotFound { reference: what },
            E::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                            | oci_client::errors::OciErrorCode::NotFound
                    )
                }) =>
            {
                RegistryError::NotFound { reference: what }
            }
            E::RegistryError { envelope, .. }
                if envelope
                    .errors
                    .iter()
                    .any(|x| matches!(x.code, oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied)) =>
            {
                RegistryError::Unauthorized { what, registry: self.registry.clone() }
            }
            E::ServerError { code: 401, .. } => RegistryError::Unauthorized { what, registry: self.registry.clone() },
            E::RequestError(r) if r.status().is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403) => {
                RegistryError::Unauthorized { what, registry: self.registry.clone() }
            }
            E::RequestError(r) if r.status().is_some_and(|s| s.as_u16() == 404) => RegistryError::NotFound { reference: what },
            E::ServerError { code: 404, .. } => RegistryError::NotFound { reference: what },
            _ if self.tls && is_loopback(&self.registry) && not_tls(&e) => RegistryError::NotTls { what, registry: self.registry.clone(), source: e },
            _ if self.tls => match certificate_problem(&e, &self.registry) {
                Some(problem) => RegistryError::Tls { what, registry: self.registry.clone(), problem },
                None => RegistryError::Remote { what, source: e },
            },
            _ => RegistryError::Remote { what, source: e },
        }
    }
}

/// The errors of `e`'s chain, looking inside io errors too (an
/// io::Error's `source()` skips the error it wraps, often another io::Error
/// around rustls's).
fn causes<'a>(e: &'a (dyn std::error::Error + 'static)) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let mut x = err;
        loop {
            out.push(x);
            match x.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(inner) => x = inner,
                None => break,
            }
        }
        next = err.source();
    }
    out
}

/// What is wrong with the registry's certificate, when `e` is a TLS
/// verification failure: what a user can change, in a few words.
fn certificate_problem(e: &(dyn std::error::Error + 'static), registry: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let host = registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry);
    let trust = format!("give its CA with --ca-file FILE, or put it in /etc/docker/certs.d/{registry}/ca.crt");
    causes(e).into_iter().find_map(|x| match x.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(match c {
            C::UnknownIssuer => format!("is not signed by a CA berth trusts: {trust}"),
            C::Expired | C::ExpiredContext { .. } => "has expired: renew it".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet: check the clocks of this machine and the registry".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!("does not name {host}: make one whose subjectAltName holds it"),
            // webpki's error, which rustls carries as an opaque `Other`.
            C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => format!(
                "is a CA certificate serving as the registry's own (what `openssl req -x509` makes unless told \
                 `-addext basicConstraints=critical,CA:FALSE`); berth's TLS (rustls) takes only server certificates: \
                 sign a server certificate for {host} with that CA and trust the CA, or set skip_verify = true in \
                 /etc/containerd/certs.d/{registry}/hosts.toml"
            ),
            other => format!("was refused ({other:?}): {trust}"),
        }),
        _ => None,
    })
}

/// Whether `e` comes from a TLS handshake the server answered with
/// something that is not TLS (a plain-HTTP server's reply).
fn not_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).into_iter().any(|x| matches!(x.downcast_ref::<rustls::Error>(), Some(rustls::Error::InvalidMessage(_))))
}

/// Checks `user`/`password` against `registry`, as `docker login` does: a
/// token registry's token endpoint, else a request that needs them (a tag
/// list, refused with 401 for wrong credentials).
pub fn check_login(registry: &str, user: &str, password: &str, opts: &RemoteOptions) -> Result<(), RegistryError> {
    let mut remote = Remote::new(registry, opts)?;
    remote.auth = RegistryAuth::Basic(user.into(), password.into());
    let probe = Reference::with_tag(registry.into(), "berth-login-check".into(), "latest".into());
    let what = || format!("logging in as {user}");
    // A token registry checks the password when it hands out a token.
    match remote.rt.block_on(remote.client.auth(&probe, &remote.auth, oci_client::RegistryOperation::Pull)) {
        Ok(Some(_token)) => return Ok(()),
        Ok(None) => {}
        Err(e) => return Err(remote.error(what(), e)),
    }
    // A basic-auth registry checks it on a request that needs it.
    match remote.rt.block_on(remote.client.list_tags(&probe, &remote.auth, Some(1), None)) {
        Ok(_) => Ok(()),
        Err(e) => match remote.error(what(), e) {
            // Credentials that work, for a repository that is not there.
            RegistryError::NotFound { .. } => Ok(()),
            other => Err(other),
        },
    }
}

/// The registry reference for a full image name.
pub(crate) fn reference(full: &names::Reference) -> Reference {
    match (&full.tag, &full.digest) {
        (_, Some(d)) => Reference::with_digest(full.domain.clone(), full.path.clone(), d.clone()),
        (Some(t), None) => Reference::with_tag(full.domain.clone(), full.path.clone(), t.clone()),
        (None, None) => Reference::with_tag(full.domain.clone(), full.path.clone(), "latest".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in ["localhost:5000", "localhost", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["example.com", "10.0.0.1:5000", "localhost.example.com", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let opts = RemoteOptions { plain_http: PlainHttp::Loopback, ..Default::default() };
        let err = Remote::new("registry.example.com", &opts).err().expect("refused").to_string();
        assert!(err.contains("registry.example.com") && err.contains("--plain-http=force"), "{err}");
    }
}
