//! The shim's commands: `start` (group containers into one shim process),
//! `delete` (clean up after a dead shim), and serving the task API.
//!
//! containerd 1.6 and 1.7 speak task API v2 and read a bare socket address
//! from `start`; newer containerd speaks v3. The messages are the same on
//! the wire, so one task service is registered under both names.
use crate::task::TaskService;
use containerd_shim::asynchronous::{spawn, ExitSignal};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::Server;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Annotation CRI sets on every container of a pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// berth's own grouping annotation.
pub const GROUP: &str = "berth.dev/group";

/// The shim group of the container whose bundle is `bundle`: its pod, else
/// its `berth.dev/group`, else itself.
pub fn group_of(bundle: &Path, id: &str) -> String {
    let spec = berth_host::oci::bundle::load_spec(bundle).ok();
    let ann = spec.as_ref().and_then(|s| s.annotations().clone()).unwrap_or_default();
    match (ann.get(SANDBOX_ID), ann.get(GROUP)) {
        (Some(pod), _) if !pod.is_empty() => format!("pod-{pod}"),
        (_, Some(g)) if !g.is_empty() => format!("group-{g}"),
        _ => id.to_string(),
    }
}

/// `start`: starts the group's shim server, or finds the running one, and
/// prints its address. Nothing else is printed: containerd 1.6 reads the
/// combined stdout and stderr as the reply. Returns the exit status.
pub async fn start(flags: &Flags) -> i32 {
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let result = async {
        let cwd = std::env::current_dir().map_err(|e| Error::Other(format!("bundle directory: {e}")))?;
        let group = group_of(&cwd, &opts.id);
        let address = spawn(opts, &group, Vec::new()).await?;
        std::fs::write(cwd.join("address"), &address).map_err(|e| Error::Other(format!("writing the address file: {e}")))?;
        Ok::<_, Error>(address)
    };
    match result.await {
        Ok(address) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(address.as_bytes()).and_then(|()| out.flush());
            0
        }
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: starting the shim for {}: {e}", flags.id);
            1
        }
    }
}

/// `delete`: the shim serving this container is gone; undo its rootfs
/// mount and report the container killed.
pub fn delete(flags: &Flags) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_default();
    // A native container outlives its shim: kill what is left and remove
    // it. (Nothing is printed: stdout is the reply.)
    let _ = berth_host::native::delete(&crate::container::native_root(&flags.namespace), &flags.id);
    crate::container::unmount_rootfs(&cwd.join("rootfs"));
    let mut resp = DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(crate::container::timestamp(std::time::SystemTime::now())).into();
    let bytes = resp.write_to_bytes().unwrap_or_default();
    let mut out = std::io::stdout();
    match out.write_all(&bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: delete of {}: {e}", flags.id);
            1
        }
    }
}

/// Serves the task API on `flags.socket` until the last container is
/// deleted. When another shim of the group already serves that socket,
/// returns at once: that shim takes the container.
pub async fn serve(flags: &Flags) -> Result<(), String> {
    crate::logging::init(flags.debug, &flags.namespace, &flags.id);
    let path = flags.socket.strip_prefix("unix://").unwrap_or(&flags.socket);
    if Path::new(path).exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            tracing::debug!(socket = path, "the group's shim is already serving");
            signal_started();
            return Ok(());
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let publisher = RemotePublisher::new(&ttrpc_address).await.map_err(|e| format!("connecting to containerd at {ttrpc_address}: {e}"))?;
    crate::reaper::start().map_err(|e| format!("becoming the reaper of native containers: {e}"))?;
    let exit = Arc::new(ExitSignal::default());
    let task = Arc::new(TaskService::new(flags.namespace.clone(), flags.address.clone(), publisher, exit.clone()));
    let v3 = create_task(task.clone());
    let v2 = create_task(task).into_iter().map(|(name, s)| (name.replace("containerd.task.v3.", "containerd.task.v2."), s)).collect();
    let mut server = Server::new()
        .bind(&flags.socket)
        .map_err(|e| format!("listening on {}: {e}", flags.socket))?
        .register_service(v3)
        .register_service(v2);
    server.start().await.map_err(|e| format!("serving {}: {e}", flags.socket))?;
    signal_started();
    tracing::info!(socket = path, shim_pid = std::process::id(), "berth shim serving");
    exit.wait().await;
    tracing::info!("berth shim exiting");
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Tells the `start` command (which reads our stdout until it closes)
/// that the server is up, by pointing stdout at stderr.
fn signal_started() {
    // SAFETY: dup2 on the process's own standard descriptors; both are
    // open for the life of the process.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}
