//! The wasm runtime. Every wasmtime type stays inside this module.
//!
//! - [`engine`]: the one shared `Engine` (pooling allocator, epochs).
//! - [`cache`]: precompiled-code cache.
//! - [`code`]: compiled code (a module or a component).
//! - [`load`]: bytes to module or component (detection, `.wat`, cache).
//! - [`inspect`]: a component's imports and exports, read without compiling.
//! - [`limits`]: memory cap and CPU quota of one guest.
//! - [`interrupt`]: signals and timeouts that stop a guest.
//! - [`run`]: runs a [`RunPlan`](crate::plan::RunPlan) to an [`Exit`].
//! - [`http`], [`server`]: serving `wasi:http/incoming-handler` components.

pub mod cache;
pub mod code;
pub mod engine;
mod error;
pub mod http;
pub mod inspect;
pub mod interrupt;
pub mod invoke;
pub mod limits;
pub mod load;
pub mod netns;
pub mod run;
pub mod server;
mod trust;
mod wasi;
pub mod worker;

pub use engine::{EngineError, EngineOptions, WasmEngine};
pub use error::RunError;
pub use interrupt::{Interrupt, Reason};
pub use limits::Meter;
pub use run::{Exit, Prepared, Runtime};
