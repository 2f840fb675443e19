//! `berth run`: a module or component file, an image from the local
//! store, or an OCI bundle.
use super::size::parse_size;
use crate::caps::{dirs, identity, net::NetPolicy};
use crate::oci::image::{self, names, store::Store, unpack};
use crate::oci::{annotations, bundle, entry};
use crate::plan::{CpuQuota, Entrypoint, ModuleSource, RunPlan};
use crate::wasm::{cache::Cache, EngineOptions, Exit, Reason, Runtime, WasmEngine};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: the guest's code; 134 on a trap; 128+N when stopped by signal N; \
124 on timeout; 125 when berth fails.")]
pub struct RunArgs {
    /// Run an OCI runtime bundle (config.json + rootfs/) instead of a file.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Grant a host directory: HOST:GUEST[:ro]. Repeatable.
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro]")]
    dirs: Vec<String>,
    /// Set a guest environment variable (KEY alone passes the host's value). Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Allow outgoing connections: [tcp/|udp/]CIDR:PORT[-PORT], comma-separated or repeated.
    #[arg(long, value_name = "RULE")]
    net_connect: Vec<String>,
    /// Allow binding and listening: [tcp/|udp/]CIDR:PORT[-PORT], comma-separated or repeated.
    #[arg(long, value_name = "RULE")]
    net_listen: Vec<String>,
    /// Allow DNS lookups (wasi:sockets/ip-name-lookup).
    #[arg(long)]
    net_lookup: bool,
    /// Cap on the guest's linear memory plus tables, e.g. 64MiB.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPU share of one core, e.g. 0.5.
    #[arg(long, value_name = "CPUS")]
    cpus: Option<f64>,
    /// Wall-clock limit, e.g. 5s or 2m; exit status 124 when it runs out.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Refuse modules larger than this before compiling.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_module_size: String,
    /// Allow running precompiled (.cwasm) files: they are trusted machine code.
    #[arg(long)]
    allow_precompiled: bool,
    /// Do not read or write the precompile cache.
    #[arg(long)]
    no_cache: bool,
    /// When to pull IMAGE from its registry: missing (not in the local store), always, never.
    #[arg(long, value_enum, default_value_t = Pull::Missing, env = "BERTH_PULL")]
    pull: Pull,
    #[command(flatten)]
    remote: super::registry::RemoteArgs,
    /// MODULE[#EXPORT] (a file) or IMAGE (from `berth image ls`), then the guest's arguments.
    #[arg(value_name = "MODULE[#EXPORT]|IMAGE [ARGS]", trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    Missing,
    Always,
    Never,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let max_module = parse_size(&args.max_module_size).context("--max-module-size")?;
    // Held until the guest ends: `berth image rm` keeps the rootfs meanwhile.
    let mut _rootfs_lease = None;
    let plan = match &args.bundle {
        Some(dir) => {
            refuse_cli_grants(&args)?;
            let d = crate::oci::detect::detect(dir, &bundle::load_spec(dir)?)?;
            tracing::debug!(bundle = %dir.display(), kind = ?d.kind, reason = %d.reason, "runtime chosen");
            if d.kind == crate::oci::detect::Kind::Native {
                return super::native::run(dir, &d.reason);
            }
            bundle_plan(&args, dir)?
        }
        None => match image_target(&args)? {
            Some(store) => {
                let (plan, lease) = image_plan(&args, &store)?;
                _rootfs_lease = lease;
                plan
            }
            None => file_plan(&args)?,
        },
    };
    tracing::debug!(plan = ?plan, "run plan");
    // A bundle that names a network namespace gets its guest's sockets
    // there; berth has one thread yet, so every later one joins it too.
    if let Some(ns) = &plan.net_namespace {
        crate::wasm::netns::join_process(ns).context("the bundle's network namespace")?;
    }
    let engine = WasmEngine::new(&EngineOptions::single())?;
    let cache = if args.no_cache { Cache::disabled() } else { Cache::new(crate::paths::cache_dir()) };
    let runtime = Runtime::new(engine, cache, max_module);
    let prepared = runtime.prepare(&plan)?;
    tracing::debug!(module = %plan.entrypoint.source, kind = ?prepared.kind(), cache_hit = prepared.info.cache_hit, "loaded");
    if let Some(user) = &plan.user {
        identity::assume(user)?;
    }
    if crate::wasm::http::is_http_handler(&prepared) {
        return serve_plan(Arc::new(runtime), &prepared, &plan);
    }
    let (exit, usage) = crate::wasm::worker::run_foreground(&runtime, &prepared, &plan, 2)?;
    tracing::debug!(exit = ?exit, memory_bytes = usage.memory_bytes, table_bytes = usage.table_bytes, refused_growth = usage.refused, "guest finished");
    match &exit {
        Exit::Trap(_) => eprint!("{}", exit.trap_report(&plan.name).unwrap_or_default()),
        Exit::Stopped(Reason::Timeout) => {
            eprintln!("berth: {} stopped: timeout of {} reached", plan.name, humantime::format_duration(plan.limits.timeout.unwrap_or_default()))
        }
        Exit::Stopped(Reason::Signal(s)) => tracing::info!(signal = s, "guest stopped by signal"),
        Exit::Code(_) => {}
    }
    Ok(exit.status())
}

/// A component that exports `wasi:http/incoming-handler` is served, as
/// containers with it are, at `BERTH_HTTP_ADDR` / `berth.dev/http-listen`.
fn serve_plan(runtime: Arc<Runtime>, prepared: &crate::wasm::Prepared, plan: &RunPlan) -> Result<i32> {
    use crate::oci::annotations::{DEFAULT_HTTP_ADDR, HTTP_ADDR_ENV};
    let addr = match (plan.http_listen, std::env::var(HTTP_ADDR_ENV)) {
        (Some(a), _) => a,
        (None, Ok(v)) => v.parse().with_context(|| format!("{HTTP_ADDR_ENV}={v:?} is not a listen address; use IP:PORT, e.g. 127.0.0.1:8080"))?,
        (None, Err(_)) => DEFAULT_HTTP_ADDR.parse().expect("default address"),
    };
    let service = Arc::new(crate::wasm::http::HttpService::new(runtime, prepared, plan)?);
    let limits = crate::wasm::server::Limits { slots: EngineOptions::single().pool_instances as usize - 1, ..Default::default() };
    super::serve::serve_until_signalled(service, addr, plan.net_namespace.as_deref(), limits, std::time::Duration::from_secs(30))
}

fn file_plan(args: &RunArgs) -> Result<RunPlan> {
    let Some((target, guest_args)) = args.command.split_first() else {
        bail!("no module given; usage: berth run [OPTIONS] MODULE[#EXPORT] [ARGS]... or berth run --bundle DIR");
    };
    let (path, export) = entry::split_export(target, |p| Path::new(p).exists());
    let mut plan = RunPlan {
        name: Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.clone()),
        entrypoint: Entrypoint { source: ModuleSource::File(PathBuf::from(&path)), export },
        args: std::iter::once(path).chain(guest_args.iter().cloned()).collect(),
        allow_precompiled: args.allow_precompiled,
        ..Default::default()
    };
    apply_grants(args, &mut plan)?;
    apply_limits(args, &mut plan)?;
    Ok(plan)
}

/// The store holding the image `berth run TARGET` names, when TARGET is
/// not a file but an image name or digest there.
fn image_target(args: &RunArgs) -> Result<Option<Store>> {
    let Some(target) = args.command.first() else { return Ok(None) };
    let (path, _) = entry::split_export(target, |p| Path::new(p).exists());
    if Path::new(&path).exists() || path.starts_with('/') || path.starts_with('.') {
        return Ok(None);
    }
    let dir = Store::default_dir();
    let ext = Path::new(&path).extension().and_then(|e| e.to_str()).unwrap_or("");
    let local = if dir.join("index.json").exists() {
        let store = Store::open(&dir)?;
        store.resolve(target).is_ok().then_some(store)
    } else {
        None
    };
    let pull = match (args.pull, &local) {
        (Pull::Never, _) | (Pull::Missing, Some(_)) => false,
        // A missing file is not an image to fetch.
        (_, _) if matches!(ext, "wasm" | "wat" | "cwasm") => false,
        (Pull::Always, _) | (Pull::Missing, None) => names::parse(target).is_ok(),
    };
    if pull {
        let store = Store::open(&dir).with_context(|| format!("opening the image store at {}", dir.display()))?;
        let p = super::registry::pull_image(&store, target, None, &args.remote).with_context(|| match local {
            Some(_) => format!("pulling {target} (--pull always)"),
            None => format!("{target:?} is not in the local store (`berth image ls` lists images) and pulling it failed (--pull never looks only locally)"),
        })?;
        tracing::info!(image = %p.name, digest = %p.digest, downloaded = p.downloaded, "pulled");
        return Ok(Some(store));
    }
    if local.is_some() {
        return Ok(local);
    }
    if !matches!(ext, "wasm" | "wat" | "cwasm") {
        bail!(
            "{target:?} is neither a file nor an image in the local store; `berth image ls` lists images, `berth image import` or `berth image pull` adds one"
        );
    }
    Ok(None)
}

fn image_plan(args: &RunArgs, store: &Store) -> Result<(RunPlan, Option<image::rootfs::Lease>)> {
    let (name, guest_args) = args.command.split_first().expect("checked by image_target");
    let (mut plan, lease) = image::plan_for_image(store, name, guest_args, &unpack::Limits::default())?;
    plan.allow_precompiled = args.allow_precompiled;
    apply_grants(args, &mut plan)?;
    apply_limits(args, &mut plan)?;
    Ok((plan, lease))
}

/// `--dir`, `--env` and `--net-*`: what the user grants on top of a file
/// or an image (a `-e` replaces an image's variable of the same name).
fn apply_grants(args: &RunArgs, plan: &mut RunPlan) -> Result<()> {
    for d in &args.dirs {
        plan.preopens.push(dirs::parse_dir(d)?);
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => set_env(plan, k, v.to_string()),
            Some(_) => bail!("invalid --env {e:?}: the name is empty; use KEY=VALUE"),
            None => match std::env::var(e) {
                Ok(v) => set_env(plan, e, v),
                Err(_) => tracing::debug!(name = %e, "--env names a variable the host does not have; not set"),
            },
        }
    }
    let mut net = NetPolicy { name_lookup: args.net_lookup, ..Default::default() };
    for r in &args.net_connect {
        NetPolicy::parse_list(r, &mut net.connect).context("--net-connect")?;
    }
    for r in &args.net_listen {
        NetPolicy::parse_list(r, &mut net.listen).context("--net-listen")?;
    }
    plan.net = net;
    Ok(())
}

fn set_env(plan: &mut RunPlan, key: &str, value: String) {
    plan.env.retain(|(k, _)| k != key);
    plan.env.push((key.to_string(), value));
}

/// A bundle's grants are in its config.json, never on the command line.
fn refuse_cli_grants(args: &RunArgs) -> Result<()> {
    if !args.command.is_empty() {
        bail!("--bundle takes its command from config.json (process.args); remove {:?}", args.command.join(" "));
    }
    let grants = !args.dirs.is_empty() || !args.env.is_empty() || !args.net_connect.is_empty() || !args.net_listen.is_empty() || args.net_lookup;
    if grants {
        bail!("--dir, --env and --net-* cannot be combined with --bundle; grant them in config.json (mounts, process.env, berth.dev/net-* annotations)");
    }
    Ok(())
}

fn bundle_plan(args: &RunArgs, dir: &Path) -> Result<RunPlan> {
    let mut plan = bundle::plan_from_bundle(dir)?;
    plan.allow_precompiled = args.allow_precompiled;
    apply_limits(args, &mut plan)?;
    Ok(plan)
}

/// `--memory`, `--cpus` and `--timeout` (they override a bundle's limits).
fn apply_limits(args: &RunArgs, plan: &mut RunPlan) -> Result<()> {
    if let Some(m) = &args.memory {
        plan.limits.memory_bytes = Some(parse_size(m).context("--memory")?);
    }
    if let Some(c) = args.cpus {
        if !(c.is_finite() && c > 0.0) {
            bail!("--cpus {c} must be a positive number of cores, e.g. 0.5");
        }
        plan.limits.cpu = Some(CpuQuota { quota_us: (c * 100_000.0) as u64, period_us: 100_000 });
    }
    if let Some(t) = &args.timeout {
        plan.limits.timeout =
            Some(annotations::parse_duration(t).with_context(|| format!("--timeout {t:?} is not a positive duration; use e.g. 5s, 500ms or 2m"))?);
    }
    Ok(())
}
