//! Helpers for the `berth` command's end-to-end tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[allow(unused_imports)]
pub use berth_tests::guests;

pub mod fake_registry;
pub mod server;

/// A `berth` invocation with its own state root, so tests never share or
/// touch a real cache.
pub struct Berth {
    pub root: tempfile::TempDir,
}

impl Berth {
    pub fn new() -> Self {
        Berth { root: tempfile::tempdir().unwrap() }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(berth_bin());
        // Tests reach registries only on loopback, and say so (`--pull`).
        c.env("BERTH_ROOT", self.root.path()).env_remove("BERTH_LOG").env("BERTH_PULL", "never").stdin(Stdio::null());
        // The user's Docker credentials (and their helpers) stay out of the
        // tests; a test that reads a Docker config sets its own.
        c.env("DOCKER_CONFIG", self.root.path().join("no-docker-config"));
        c
    }

    /// Runs `berth ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Runs berth with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        Out::from(self.cmd().args(args).envs(env.iter().copied()).output().unwrap())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.path().join("cache")
    }
}

/// The `berth` under test: this build's, or the binary that `BERTH_BIN`
/// names (a release artifact, such as the aarch64 one that test.sh runs
/// through qemu-user).
pub fn berth_bin() -> PathBuf {
    match std::env::var_os("BERTH_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "BERTH_BIN={} is not a file: point it at a berth binary (./dist.sh builds the release ones)", p.display());
            p
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_berth")),
    }
}

/// Captured result of one run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Asserts the exit status, showing both streams when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit status\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a berth error: status 125, a single `berth: error:` line
    /// containing every `needle`, and no panic or backtrace.
    pub fn expect_berth_error(&self, needles: &[&str]) -> &Self {
        self.expect_code(125);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "error must be one line, got:\n{}", self.stderr);
        assert!(lines[0].starts_with("berth: error: "), "{}", self.stderr);
        for n in needles {
            assert!(lines[0].contains(n), "error {:?} lacks {n:?}", lines[0]);
        }
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"), "{}", self.stderr);
        self
    }
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// `size` bytes that do not compress.
pub fn noise(size: usize) -> Vec<u8> {
    let mut seed = 0x9e3779b97f4a7c15u64;
    (0..size)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
