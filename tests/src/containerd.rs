//! A private containerd for end-to-end tests: config, root, state and
//! sockets in a temp dir; started by the test, stopped by pid on drop.
//! A missing `containerd` or `ctr` binary fails the test with the fix.
//!
//! The tests use the `containerd`, `ctr` and `containerd-shim-runc-v2`
//! first on `PATH`: `test.sh` runs the suites once for each release of the
//! matrix (tests/containerd-matrix.sh), with that release's directory
//! first. The config is written in that release's schema (2 for 1.x, 3
//! for 2.x).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
    env: Vec<(String, String)>,
}

/// `ctr` of the containerd under test, without the deprecation warnings
/// that containerd 2.2+ has it print first (a cgroup v1 host gets one on
/// every call), which would reach the output the tests read.
pub fn ctr_command() -> Command {
    let mut cmd = Command::new(require("ctr"));
    cmd.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1");
    cmd
}

/// The path of `bin` on `PATH` (then in the usual directories).
pub fn require(bin: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"]) {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{bin}` is not installed; the end-to-end tests need Debian's containerd and runc packages (`./test.sh` installs them: apt-get install -y containerd runc; tests/containerd-matrix.sh fetches the other releases)"
    );
}

/// The major and minor version of the containerd first on `PATH`.
pub fn version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let bin = require("containerd");
        let out = Command::new(&bin).arg("--version").output().unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_version(&text).unwrap_or_else(|| panic!("{} --version printed no version: {text:?}", bin.display()))
    })
}

/// The version in `containerd --version`'s line (`containerd
/// github.com/containerd/containerd/v2 2.1.9+unknown`, `... 1.6.20~ds1 ...`).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    text.split_whitespace().skip(2).find_map(|word| {
        let word = word.trim_start_matches('v');
        let mut parts = word.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    })
}

/// The config schema of the containerd on `PATH`: 3 from 2.0 on.
pub fn schema() -> u32 {
    if version().0 >= 2 {
        3
    } else {
        2
    }
}

/// The name of the CRI plugin's table that holds `section` (`runtime`:
/// runtimes, CNI, oom_score_adj, apparmor; `images`: the sandbox image,
/// registries; `grpc`: the streaming server) in this containerd's schema.
pub fn cri_plugin(section: &str) -> &'static str {
    match (schema(), section) {
        (2, _) => "io.containerd.grpc.v1.cri",
        (_, "runtime") => "io.containerd.cri.v1.runtime",
        (_, "images") => "io.containerd.cri.v1.images",
        (_, "grpc") => "io.containerd.grpc.v1.cri",
        (_, other) => panic!("no CRI section {other:?}"),
    }
}

/// A config whose root, state and sockets all live in `p`, in the schema
/// of the containerd on `PATH`: `top` adds top-level keys, `tables`
/// sections of its own.
pub fn private_config(p: &Path, top: &str, tables: &str) -> String {
    format!(
        r#"version = {schema}
root = "{p}/root"
state = "{p}/state"
{top}
[grpc]
  address = "{p}/c.sock"
[ttrpc]
  address = "{p}/c.sock.ttrpc"
[debug]
  address = "{p}/debug.sock"
[metrics]
  address = ""
{v3_plugins}{tables}"#,
        // containerd 2.x serves NRI on one socket for the whole machine
        // (/var/run/nri/nri.sock): a second containerd would fail to start.
        // containerd 2.3's transfer service unpacks only the platforms it
        // is given: wasm images too, on a node that runs them (as
        // `berth install containerd` writes it).
        v3_plugins = if schema() == 3 {
            let arch = if cfg!(target_arch = "aarch64") { "arm64/v8" } else { "amd64" };
            format!(
                r#"[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/{arch}"
    snapshotter = "overlayfs"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "wasi/wasm"
    snapshotter = "overlayfs"
    differ = "walking"
"#
            )
        } else {
            String::new()
        },
        schema = schema(),
        p = p.display()
    )
}

impl Containerd {
    /// Starts containerd and waits until it answers.
    pub fn start() -> Containerd {
        Self::start_with(&[], &[])
    }

    /// Starts containerd with `path_dirs` ahead of `PATH` (where it finds
    /// shims) and extra environment, which its shims inherit.
    pub fn start_with(path_dirs: &[&Path], env: &[(&str, &str)]) -> Containerd {
        Self::start_configured(path_dirs, env, |p| {
            let config = private_config(
                p,
                if schema() == 2 {
                    "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                } else {
                    "disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.runtime\", \"io.containerd.cri.v1.images\"]\n"
                },
                &format!("[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}/opt\"\n", p.display()),
            );
            std::fs::write(p.join("config.toml"), config).unwrap();
        })
    }

    /// Starts containerd on the `config.toml` that `write_config` writes
    /// into the temp dir it is given (see [`private_config`]).
    pub fn start_configured(path_dirs: &[&Path], env: &[(&str, &str)], write_config: impl FnOnce(&Path)) -> Containerd {
        require("ctr");
        let dir = tempfile::Builder::new().prefix("berth-ctrd-").tempdir_in("/tmp").unwrap();
        let p = dir.path();
        write_config(p);
        let mut path: Vec<String> = path_dirs.iter().map(|p| p.display().to_string()).collect();
        path.push(std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("PATH".into(), path.join(":")));
        let child = Self::spawn(p, &env);
        let mut c = Containerd { dir, child, env };
        c.wait_ready();
        c
    }

    fn spawn(dir: &Path, env: &[(String, String)]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("containerd.log")).unwrap();
        Command::new(require("containerd"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited ({status}) at start; its log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "containerd did not answer within 30 s; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops containerd (SIGTERM, as a service manager would) and starts it
    /// again with the same configuration; shims keep running meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path(), &self.env);
        self.wait_ready();
    }

    fn stop(&mut self) {
        // Only the process this test started, by its pid.
        let pid = self.child.id() as i32;
        // SAFETY: plain syscall on a pid we own (our child, not yet reaped).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK ARGS`, in the `berth-test` namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in("berth-test", args)
    }

    /// `ctr --address SOCK ARGS` in namespace `ns` (`k8s.io` is CRI's).
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        ctr_command().arg("--address").arg(self.socket()).args(["--namespace", ns]).args(args).stdin(Stdio::null()).output().expect("running ctr")
    }

    /// `ctr ARGS` with a terminal of its own for stdin, stdout and stderr
    /// (as `ctr run -t` and `ctr task exec -t` want): a fresh pty whose
    /// master the test reads until every holder of the terminal is gone,
    /// so nothing the container wrote is lost. The output is the
    /// terminal's (stdout and stderr as one, with CR LF line ends).
    pub fn ctr_on_terminal(&self, args: &[&str]) -> Output {
        use std::io::Read;
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut master, slave) = {
            let (mut m, mut s) = (-1, -1);
            // SAFETY: openpty writes two descriptors into the given ints; the
            // name, termios and winsize pointers may be null.
            let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
            assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors were just opened and are owned here.
            unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
        };
        let stdio = || Stdio::from(slave.try_clone().expect("dup of the pty"));
        let mut child = ctr_command()
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "berth-test"])
            .args(args)
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .expect("running ctr");
        // Only ctr (and what it starts) holds the terminal now: reads end
        // with EIO once they are all gone, after the last byte.
        drop(slave);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: the other end is closed and drained.
                    Err(_) => break,
                }
            }
            out
        });
        let status = child.wait().expect("waiting for ctr");
        Output { status, stdout: reader.join().expect("the terminal reader"), stderr: Vec::new() }
    }
}

impl Containerd {
    /// Pids of the shims (of any runtime) this containerd started: their
    /// command line names its socket.
    pub fn shim_pids(&self, binary: &str) -> Vec<u32> {
        shim_pids_at(&self.socket(), binary)
    }
}

/// Pids of the processes running `binary` whose command line names the
/// containerd socket `socket` (the shims of that containerd).
pub fn shim_pids_at(socket: &Path, binary: &str) -> Vec<u32> {
    let sock = socket.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(binary) && cmd.contains(&sock) {
            out.push(pid);
        }
    }
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // Shims it started outlive it; a failed test must not leave them.
        for pid in self.shim_pids("containerd-shim") {
            // SAFETY: plain syscall; the pid belongs to a shim of this test's containerd.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // Rootfs and snapshot mounts left by a failed test would keep the
        // temp dir from being removed.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&*self.dir.path().to_string_lossy())).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = Command::new("umount").arg("-l").arg(m).stderr(Stdio::null()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_read_from_what_each_release_prints() {
        assert_eq!(super::parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u1\n"), Some((1, 6)));
        assert_eq!(super::parse_version("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n"), Some((2, 1)));
        assert_eq!(super::parse_version("containerd github.com/containerd/containerd/v2 v2.3.4 abcdef\n"), Some((2, 3)));
        assert_eq!(super::parse_version("containerd\n"), None);
    }
}
