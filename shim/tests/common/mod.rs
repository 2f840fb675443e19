//! Helpers shared by the shim's end-to-end suites (most drive the shim
//! through `ctr`, with [`ctr::Env`]; `cri.rs` through containerd's CRI
//! plugin).
#![allow(dead_code)]
pub mod ctr;
use berth_host::oci::image::build::{self, BuildOptions};
use berth_tests::containerd::Containerd;
use std::path::{Path, PathBuf};
use std::process::Output;

pub const RUNTIME: &str = "io.containerd.berth.v1";

/// The directory of the shim cargo built, for containerd's PATH.
pub fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v1")).parent().unwrap().to_path_buf()
}

/// Builds an image with `berth image build` and imports it into `c`'s
/// namespace `ns` (`--platform wasi/wasm` for a wasm image).
pub fn import(c: &Containerd, ns: &str, opts: &BuildOptions) {
    let built = build::build(opts).unwrap();
    let tar = c.dir.path().join(format!("{}.tar", opts.name.replace(['/', ':'], "_")));
    build::write_archive(&built, std::fs::File::create(&tar).unwrap()).unwrap();
    let mut args = vec!["image", "import"];
    if opts.rootfs.is_none() {
        args.extend(["--platform", "wasi/wasm"]);
    }
    args.push(tar.to_str().unwrap());
    let o = c.ctr_in(ns, &args);
    assert!(o.status.success(), "import {}: {}", opts.name, text(&o));
}

/// [`import`] of a wasm module as image `name`.
pub fn import_wasm(c: &Containerd, ns: &str, module: &str, name: &str) {
    import(c, ns, &BuildOptions { module: Some(module.into()), name: name.into(), artifact: false, adds: vec![], rootfs: None, entrypoint: vec![] });
}

/// [`import`] of a static busybox rootfs as native image `name`.
pub fn import_busybox(c: &Containerd, ns: &str, name: &str, entrypoint: &[&str]) {
    let root = c.dir.path().join(format!("rootfs-{}", name.replace(['/', ':'], "_")));
    berth_tests::busybox::rootfs(&root);
    let entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
    import(c, ns, &BuildOptions { module: None, name: name.into(), artifact: false, adds: vec![], rootfs: Some(root), entrypoint });
}

/// Processes whose parent is one of `parents`: (pid, state letter, name).
pub fn children_of(parents: &[u32]) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else { continue };
        let f: Vec<&str> = rest.split(' ').collect();
        let ppid = f.get(1).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        if parents.contains(&ppid) {
            out.push((pid, f.first().unwrap_or(&"?").to_string(), name.to_string()));
        }
    }
    out
}

/// Zombie processes (pid and name) whose parent is one of `parents`.
pub fn zombies_of(parents: &[u32]) -> Vec<(u32, String)> {
    children_of(parents).into_iter().filter(|(_, state, _)| state == "Z").map(|(pid, _, name)| (pid, name)).collect()
}

/// Waits (5 s at most) until none of the processes `shims` lists has a
/// zombie child: a shim reaps every child it has.
pub fn wait_no_zombies(shims: impl Fn() -> Vec<u32>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let z = zombies_of(&shims());
        if z.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "zombies left under the shim: {z:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TCP server on 127.0.0.1:`port` (in network namespace `ns`, or the
/// test's own) that answers every connection with `banner`.
pub fn banner_server(ns: Option<&str>, port: u16, banner: &'static str) {
    use std::io::{Read, Write};
    let bind = move || std::net::TcpListener::bind(("127.0.0.1", port));
    let l = match ns {
        Some(ns) => berth_host::wasm::netns::within(Path::new(ns), bind).unwrap(),
        None => bind().unwrap(),
    };
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.read(&mut [0u8; 64]);
            let _ = s.write_all(banner.as_bytes());
        }
    });
}

/// Mount points under `dir` (from this process's mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&*dir)).map(String::from).collect()
}

/// A host directory with a tmpfs mounted inside it (at `sub`), unmounted
/// and removed on drop.
pub struct WithSubmount(pub PathBuf);

impl WithSubmount {
    pub fn new(path: PathBuf) -> WithSubmount {
        std::fs::create_dir_all(path.join("sub")).unwrap();
        std::fs::write(path.join("top.txt"), "top").unwrap();
        assert!(std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(path.join("sub")).status().unwrap().success());
        WithSubmount(path)
    }
}

impl Drop for WithSubmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.join("sub")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
