//! `berth image pull|push|tag|login|logout`: images and OCI registries.
use crate::oci::image::{names, platform::Platform, store::Store};
use crate::oci::registry::{self, auth, pull, push, PlainHttp, RemoteOptions};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

/// How to reach a registry (shared by pull, push, login and `berth run`).
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Plain HTTP, no TLS: for a registry on this machine (localhost,
    /// 127.0.0.0/8, [::1]); `--plain-http=force` for any registry.
    #[arg(long, value_name = "force", num_args = 0..=1, default_missing_value = "loopback", require_equals = true)]
    plain_http: Option<String>,
    /// PEM file of CA certificates to trust beside the system's.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Where registries' CA certificates (`HOST/ca.crt`, any `HOST/*.crt`)
    /// and containerd's `HOST/hosts.toml` are read from, instead of
    /// /etc/containerd/certs.d and /etc/docker/certs.d.
    #[arg(long, value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// How long the registry may take to answer one read or connect.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    registry_timeout: humantime::Duration,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

impl RemoteArgs {
    pub fn options(&self) -> Result<RemoteOptions> {
        let plain_http = match self.plain_http.as_deref() {
            None => PlainHttp::No,
            Some("loopback") => PlainHttp::Loopback,
            Some("force") => PlainHttp::Forced,
            Some(other) => bail!("--plain-http={other}: use --plain-http (loopback registries) or --plain-http=force"),
        };
        let mut opts = RemoteOptions { plain_http, ca_file: self.ca_file.clone(), timeout: *self.registry_timeout, ..Default::default() };
        if let Some(dir) = &self.certs_dir {
            opts.certs_dirs = vec![dir.clone()];
        }
        Ok(opts)
    }
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. registry.example.com/app:1 or app@sha256:...
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Platform to pull from a multi-platform image (default: wasi/wasm, else this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image of the local store; its name says where it goes (`berth image tag` renames).
    #[arg(value_name = "IMAGE")]
    image: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Registry host, e.g. registry.example.com or localhost:5000.
    #[arg(value_name = "REGISTRY")]
    registry: String,
    #[arg(short, long, value_name = "USER")]
    username: String,
    /// Read the password from standard input (else it is asked for on the terminal).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Progress bars on a terminal, one per blob.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars { multi: indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()), bars: Mutex::default() }
    }
}

impl pull::Progress for Bars {
    fn start(&self, digest: &str, size: u64) {
        let bar = self.multi.add(indicatif::ProgressBar::new(size));
        bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}").expect("valid template"));
        bar.set_prefix(digest.trim_start_matches("sha256:")[..12].to_string());
        self.bars.lock().unwrap().insert(digest.into(), bar);
    }
    fn advance(&self, digest: &str, n: u64) {
        if let Some(b) = self.bars.lock().unwrap().get(digest) {
            b.inc(n);
        }
    }
    fn done(&self, digest: &str) {
        if let Some(b) = self.bars.lock().unwrap().remove(digest) {
            b.finish_and_clear();
        }
    }
}

/// Pulls `image`; progress bars on a terminal unless `quiet`.
pub fn pull_image(store: &Store, image: &str, platform: Option<&Platform>, remote: &RemoteArgs) -> Result<pull::Pulled> {
    let opts = remote.options()?;
    let shown = !remote.quiet && std::io::stderr().is_terminal();
    let bars = Bars::new();
    let progress: &dyn pull::Progress = if shown { &bars } else { &pull::Quiet };
    Ok(pull::pull(store, image, platform, &opts, progress)?)
}

pub fn pull(store: &Store, a: PullArgs) -> Result<i32> {
    let platform = a.platform.as_deref().map(str::parse::<Platform>).transpose()?;
    let p = pull_image(store, &a.image, platform.as_ref(), &a.remote)?;
    println!("{} {} {} ({} downloaded)", p.name, p.digest, p.platform, super::size::human(p.downloaded));
    Ok(0)
}

pub fn push(store: &Store, a: PushArgs) -> Result<i32> {
    let opts = a.remote.options()?;
    let p = push::push(store, &a.image, &opts)?;
    println!("{} {} ({} blobs sent, {} already there)", p.name, p.digest, p.sent, p.skipped);
    Ok(0)
}

pub fn tag(store: &Store, src: &str, dst: &str) -> Result<i32> {
    let rec = store.tag(src, dst)?;
    println!("{} {}", rec.name, rec.manifest.digest());
    Ok(0)
}

pub fn login(a: LoginArgs) -> Result<i32> {
    let registry = registry_host(&a.registry)?;
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).context("reading the password from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on; give it with --password-stdin");
        }
        rpassword_prompt(&format!("password for {}@{registry}: ", a.username))?
    };
    registry::check_login(&registry, &a.username, &password, &a.remote.options()?).with_context(|| format!("logging in to {registry}"))?;
    let path = auth::store(&registry, &a.username, &password)?;
    println!("logged in to {registry} (credentials in {})", path.display());
    Ok(0)
}

pub fn logout(registry: &str) -> Result<i32> {
    let registry = registry_host(registry)?;
    if auth::forget(&registry)? {
        println!("logged out of {registry}");
    } else {
        println!("no credentials for {registry} in {}", auth::berth_file().display());
    }
    Ok(0)
}

/// The registry part of what a user typed (`https://r.example.com/` too).
fn registry_host(given: &str) -> Result<String> {
    let host = given.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    // A host alone parses as a repository of Docker Hub: give it a path.
    let parsed =
        names::parse(&format!("{host}/x")).with_context(|| format!("{given:?} is not a registry host (e.g. registry.example.com or localhost:5000)"))?;
    if parsed.domain == "docker.io" && host != "docker.io" {
        bail!("{given:?} is not a registry host (e.g. registry.example.com or localhost:5000)");
    }
    Ok(parsed.domain)
}

/// Reads a password from the terminal without echoing it.
fn rpassword_prompt(prompt: &str) -> Result<String> {
    use std::io::Write;
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").context("opening the terminal")?;
    let mut t = rustix::termios::tcgetattr(&tty).context("reading the terminal's settings")?;
    let saved = t.clone();
    t.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &t).context("turning off echo")?;
    let mut w = &tty;
    let _ = write!(w, "{prompt}");
    let mut line = String::new();
    let r = std::io::BufRead::read_line(&mut std::io::BufReader::new(&tty), &mut line);
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &saved);
    let _ = writeln!(w);
    r.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
