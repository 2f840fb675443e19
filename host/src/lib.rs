//! berth-host: the berth WebAssembly container engine.
//!
//! Data flows one way: container or CLI input -> [`plan::RunPlan`] ->
//! runtime ([`wasm`]) -> exit status. `RunPlan` is plain serde data; the
//! runtimes never read `config.json` themselves. Every wasmtime type stays
//! inside [`wasm`].

pub mod caps;
pub mod cli;
pub mod containerd;
pub mod error;
pub mod helper;
pub mod helper_main;
pub mod install;
pub mod native;
pub mod oci;
pub mod paths;
pub mod plan;
pub mod process;
pub mod rooted;
pub mod size;
pub mod stdio;
pub mod wasm;
