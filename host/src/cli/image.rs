//! `berth image`: build, import, list, inspect and remove OCI images.
use crate::oci::image::{self, build, import, platform::Platform, store::Store};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an image from a wasm module or component.
    Build(BuildArgs),
    /// Import an OCI image layout (archive or directory) or a `docker save` archive.
    Import(ImportArgs),
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove images and the blobs only they used.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "IMAGE")]
        names: Vec<String>,
    },
    /// Print an image's manifest and config as JSON.
    Inspect {
        #[arg(value_name = "IMAGE")]
        name: String,
    },
    /// Pull an image from a registry.
    Pull(super::registry::PullArgs),
    /// Push an image to the registry its name names.
    Push(super::registry::PushArgs),
    /// Give an image another name (e.g. a registry's), as `docker tag` does.
    Tag {
        #[arg(value_name = "SOURCE")]
        src: String,
        #[arg(value_name = "TARGET")]
        dst: String,
    },
    /// Log in to a registry (credentials kept in $BERTH_ROOT/auth/config.json).
    Login(super::registry::LoginArgs),
    /// Forget a registry's credentials.
    Logout {
        #[arg(value_name = "REGISTRY")]
        registry: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The .wasm (or .wat) module or component (omit with --rootfs for a native image).
    #[arg(value_name = "MODULE", required_unless_present = "rootfs")]
    module: Option<PathBuf>,
    /// Image name, e.g. example.com/app:1.0.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tag: String,
    /// Write an OCI image layout tarball here instead of importing the image.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Build the CNCF wasm OCI artifact (application/wasm layer) instead of a wasi/wasm image.
    #[arg(long)]
    artifact: bool,
    /// Add a host directory to the image: HOST_DIR:IMAGE_PATH. Repeatable.
    #[arg(long = "add", value_name = "HOST_DIR:IMAGE_PATH")]
    adds: Vec<String>,
    /// A directory that becomes the image's root filesystem.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Entrypoint of a native (--rootfs, no MODULE) image; repeat for each argument.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Archive (.tar, .tar.gz, .tar.zst) or OCI layout directory.
    #[arg(value_name = "ARCHIVE")]
    path: PathBuf,
    /// Platform to import from a multi-platform image (default: wasi/wasm, else this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Name for the imported image (overrides the archive's names).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

pub fn store() -> Result<Store> {
    let dir = Store::default_dir();
    Store::open(&dir).with_context(|| format!("opening the image store at {}", dir.display()))
}

pub fn image(cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Build(a) => build_image(a),
        ImageCommand::Import(a) => import_image(a),
        ImageCommand::Ls => list(),
        ImageCommand::Rm { names } => {
            let store = store()?;
            for n in names {
                let (rec, freed) = image::remove(&store, &n)?;
                println!("removed {} ({}, {} bytes freed)", rec.name, rec.manifest.digest(), freed);
            }
            Ok(0)
        }
        ImageCommand::Inspect { name } => inspect(&name),
        ImageCommand::Pull(a) => super::registry::pull(&store()?, a),
        ImageCommand::Push(a) => super::registry::push(&store()?, a),
        ImageCommand::Tag { src, dst } => super::registry::tag(&store()?, &src, &dst),
        ImageCommand::Login(a) => super::registry::login(a),
        ImageCommand::Logout { registry } => super::registry::logout(&registry),
    }
}

fn build_image(a: BuildArgs) -> Result<i32> {
    let mut adds = Vec::new();
    for spec in &a.adds {
        let Some((host, guest)) = spec.rsplit_once(':') else {
            bail!("--add {spec:?}: use HOST_DIR:IMAGE_PATH, e.g. ./static:/static");
        };
        if host.is_empty() || !guest.starts_with('/') {
            bail!("--add {spec:?}: HOST_DIR must be given and IMAGE_PATH must be absolute, e.g. ./static:/static");
        }
        adds.push((PathBuf::from(host), guest.to_string()));
    }
    let opts = build::BuildOptions { module: a.module, name: a.tag, artifact: a.artifact, adds, rootfs: a.rootfs, entrypoint: a.entrypoint };
    let built = build::build(&opts)?;
    let digest = built.manifest.digest().to_string();
    match &a.output {
        Some(out) => {
            let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", out.display()))?;
            build::write_archive(&built, std::io::BufWriter::new(tmp.as_file_mut())).with_context(|| format!("writing {}", out.display()))?;
            tmp.persist(out).with_context(|| format!("writing {}", out.display()))?;
            println!("{} {digest} -> {}", built.name, out.display());
        }
        None => {
            let store = store()?;
            let ingest = store.ingest()?;
            let mut blobs = Vec::new();
            for (d, bytes) in &built.blobs {
                ingest.put(&bytes[..], Some((d, Some(bytes.len() as u64))))?;
                blobs.push(d.clone());
            }
            ingest.commit(&[(built.name.clone(), built.manifest.clone(), blobs)])?;
            println!("{} {digest}", built.name);
        }
    }
    Ok(0)
}

fn import_image(a: ImportArgs) -> Result<i32> {
    let platform = a.platform.as_deref().map(str::parse::<Platform>).transpose()?;
    let store = store()?;
    let size = std::fs::metadata(&a.path).map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0);
    let bar = indicatif::ProgressBar::with_draw_target(Some(size), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(indicatif::ProgressStyle::with_template("importing {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}").expect("valid template"));
    let progress = |f: std::fs::File| -> Box<dyn Read> { Box::new(bar.wrap_read(f)) };
    let opts = import::ImportOptions { platform, name: a.name };
    let imported = import::import(&store, &a.path, &opts, &progress).with_context(|| format!("importing {}", a.path.display()))?;
    bar.finish_and_clear();
    for i in imported {
        println!("{} {} {}", i.name, i.digest, i.platform);
    }
    Ok(0)
}

fn list() -> Result<i32> {
    let store = store()?;
    println!("{:<48} {:<19} {:<14} {:>10}", "NAME", "DIGEST", "PLATFORM", "SIZE");
    for r in store.list()? {
        let size = store
            .manifest(r.manifest.digest().as_ref())
            .map(|m| r.manifest.size() + m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>())
            .unwrap_or(0);
        let platform = r.manifest.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())).unwrap_or_else(|| "-".into());
        let short = format!("sha256:{}", &r.manifest.digest().digest()[..12]);
        println!("{:<48} {:<19} {:<14} {:>10}", r.name, short, platform, super::size::human(size));
    }
    Ok(0)
}

fn inspect(name: &str) -> Result<i32> {
    let store = store()?;
    let rec = store.resolve(name)?;
    let manifest = store.read_small(rec.manifest.digest().as_ref())?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let config: serde_json::Value = serde_json::from_slice(&store.read_small(config_digest)?)?;
    let out = serde_json::json!({ "name": rec.name, "digest": rec.manifest.digest().to_string(), "platform": rec.manifest.platform(), "manifest": manifest, "config": config });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
