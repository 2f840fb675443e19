//! Shared test support for berth's test suites.
//!
//! - [`guests`]: paths of the guest programs from `guest-examples/`, built
//!   for wasm by this crate's build script.
//! - [`busybox`]: a static busybox rootfs for native containers.
//! - [`containerd`]: a private containerd started and stopped by a test.
//! - [`oci`]: hand-assembled image archives, malformed ones included.
//! - [`rawtar`]: hand-made (hostile) tar streams.
//! - [`tree`]: snapshots of a directory tree, to prove that a guest left
//!   the host unchanged.

/// Paths of built guest programs (`HELLO_P1`, `HELLO_P2`, ...) and of the
/// `.wat` edge cases (`WAT_TRAP`, `WAT_LOOP`, ...).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod busybox;
pub mod containerd;
pub mod oci;
pub mod rawtar;
pub mod tree;
