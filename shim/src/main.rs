//! `containerd-shim-berth-v1`: containerd's shim v2 for berth
//! (`io.containerd.berth.v1`). One shim process serves a group of
//! containers (a pod, a `berth.dev/group`, or one container) and runs their
//! wasm guests in-process on one shared engine.
mod container;
mod logging;
mod service;
mod task;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            std::process::exit(1);
        }
    };
    if flags.info {
        eprintln!("containerd-shim-berth-v1: -info is not supported; the runtime is io.containerd.berth.v1");
        std::process::exit(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the async runtime");
    let code = rt.block_on(async {
        match flags.action.as_str() {
            "start" => service::start(&flags).await,
            "delete" => service::delete(&flags),
            "" => match service::serve(&flags).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "shim failed");
                    eprintln!("containerd-shim-berth-v1: {e}");
                    1
                }
            },
            other => {
                eprintln!("containerd-shim-berth-v1: unknown action {other:?}; containerd calls start, delete, or no action");
                1
            }
        }
    });
    std::process::exit(code);
}
