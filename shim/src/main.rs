//! `containerd-shim-berth-v1`: containerd's shim v2 for berth
//! (`io.containerd.berth.v1`). One shim process serves a group of
//! containers (a pod, a `berth.dev/group`, or one container) and runs their
//! wasm guests in-process on one shared engine.
mod console;
mod container;
mod exec;
mod grouping;
mod helper;
mod info;
mod lifecycle;
mod logging;
mod reaper;
mod rootfs;
mod service;
mod task;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Re-executed as the helper (berth_host::helper): nothing else (no
    // async runtime, no threads) may start.
    if args.get(1).and_then(|a| a.to_str()) == Some(berth_host::helper::ARG) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(berth_host::helper_main::main(&rest));
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            std::process::exit(1);
        }
    };
    if flags.info {
        std::process::exit(info::print());
    }
    let code = match flags.action.as_str() {
        "start" => service::start(flags),
        "delete" => service::delete(&flags),
        "" => service::run_server(&flags),
        other => {
            eprintln!("containerd-shim-berth-v1: unknown action {other:?}; containerd calls start, delete, or no action");
            1
        }
    };
    std::process::exit(code);
}
