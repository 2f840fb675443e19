//! Limits and interrupts: memory cap, timeouts, stack overflow, signals.
//! Each runaway guest must end with a clear error within its limit while
//! berth stays in control.
mod common;
use common::{guests, Berth};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests that keep a core busy run one at a time, so the CPU-time check
/// does not compete with the other spinning guests of this file.
static BUSY: Mutex<()> = Mutex::new(());

fn busy() -> std::sync::MutexGuard<'static, ()> {
    BUSY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn memory_bomb_is_refused_inside_the_guest() {
    // membomb.wat exits 7 once memory.grow returns -1
    let out = Berth::new().run(&["run", "--memory", "8MiB", guests::WAT_MEMBOMB]);
    out.expect_code(7);
}

#[test]
fn memory_limit_from_bundle_style_size_units() {
    Berth::new().run(&["run", "--memory", "64KiB", guests::WAT_MEMBOMB]).expect_code(7);
    Berth::new().run(&["run", "--memory", "lots", guests::WAT_MEMBOMB]).expect_berth_error(&["--memory", "lots"]);
}

#[test]
fn instantiation_over_the_limit_is_a_clear_error() {
    // the module declares one 64 KiB page; a 1 KiB cap cannot hold it
    let out = Berth::new().run(&["run", "--memory", "1KiB", guests::WAT_MEMBOMB]);
    out.expect_berth_error(&["cannot instantiate", "membomb.wat"]);
}

#[test]
fn infinite_loop_stops_at_timeout() {
    let _busy = busy();
    let t = Instant::now();
    let out = Berth::new().run(&["run", "--timeout", "1s", guests::WAT_LOOP]);
    out.expect_code(124);
    assert!(out.stderr.contains("timeout of 1s reached"), "{}", out.stderr);
    assert!(t.elapsed() < Duration::from_secs(30), "timeout was not enforced promptly: {:?}", t.elapsed());
}

#[test]
fn deep_recursion_traps_cleanly() {
    let out = Berth::new().run(&["run", guests::WAT_RECURSION]);
    out.expect_code(134);
    assert!(out.stderr.contains("call stack exhausted"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn trap_prints_the_wasm_backtrace() {
    let out = Berth::new().run(&["run", guests::WAT_TRAP]);
    out.expect_code(134);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains("inner") && out.stderr.contains("outer"), "backtrace names frames: {}", out.stderr);
    assert!(!out.stderr.contains("wasmtime_internal"), "no host backtrace: {}", out.stderr);
}

fn signal_stops_busy_guest(signal: i32, want: i32) {
    let _busy = busy();
    let b = Berth::new();
    let mut child = b.cmd().args(["run", guests::WAT_LOOP]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Give it time to start spinning.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(want));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "guest did not stop after signal {signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_stops_busy_guest_with_143() {
    signal_stops_busy_guest(libc::SIGTERM, 143);
}

#[test]
fn sigint_stops_busy_guest_with_130() {
    signal_stops_busy_guest(libc::SIGINT, 130);
}

/// Runs berth to completion and returns (exit status, CPU seconds it used).
fn run_with_cpu_time(b: &Berth, args: &[&str]) -> (i32, f64) {
    let mut child = b.cmd().args(args).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own unreaped child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    // Already reaped by wait4; this only marks the Child as finished.
    let _ = child.try_wait();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (libc::WEXITSTATUS(status), secs(usage.ru_utime) + secs(usage.ru_stime))
}

#[test]
fn cpu_quota_caps_guest_cpu_time() {
    let _busy = busy();
    let b = Berth::new();
    let (code, free) = run_with_cpu_time(&b, &["run", "--timeout", "2s", guests::WAT_LOOP]);
    assert_eq!(code, 124);
    let (code, capped) = run_with_cpu_time(&b, &["run", "--cpus", "0.1", "--timeout", "2s", guests::WAT_LOOP]);
    assert_eq!(code, 124);
    // Unlimited, the loop burns about the whole 2 s; at a tenth of a core
    // about 0.2 s (plus start-up). Wide margins: this checks the cap, not speed.
    assert!(free > 1.2, "unlimited loop used only {free:.2}s CPU");
    assert!(capped < free / 2.0, "quota not applied: {capped:.2}s with --cpus 0.1 vs {free:.2}s without");
    Berth::new().run(&["run", "--cpus", "-1", guests::WAT_LOOP]).expect_berth_error(&["--cpus"]);
}
