//! A private containerd for end-to-end tests: config, root, state and
//! sockets in a temp dir; started by the test, stopped by pid on drop.
//! A missing `containerd` or `ctr` binary fails the test with the fix.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

fn require(bin: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"]) {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` is not installed; the end-to-end tests need Debian's containerd and runc packages (`.ci/run` installs them: apt-get install -y containerd runc)");
}

impl Containerd {
    /// Starts containerd and waits until it answers.
    pub fn start() -> Containerd {
        let bin = require("containerd");
        require("ctr");
        let dir = tempfile::Builder::new().prefix("berth-ctrd-").tempdir_in("/tmp").unwrap();
        let p = dir.path();
        let config = format!(
            r#"version = 2
root = "{p}/root"
state = "{p}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{p}/c.sock"
[ttrpc]
  address = "{p}/c.sock.ttrpc"
[debug]
  address = "{p}/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{p}/opt"
"#,
            p = p.display()
        );
        std::fs::write(p.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(p.join("containerd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let mut c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.ctr(&["version"]).status.success() {
                return c;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("containerd exited ({status}) at start; its log:\n{}", c.log());
            }
            assert!(Instant::now() < deadline, "containerd did not answer within 30 s; its log:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK ARGS`, in the `berth-test` namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "berth-test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Only the process this test started, by its pid.
        let pid = self.child.id() as i32;
        // SAFETY: plain syscall on a pid we own (our child, not yet reaped).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshot mounts would keep the temp dir from being removed.
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("root")).stderr(Stdio::null()).status();
    }
}
