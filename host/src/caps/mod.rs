//! The capability model: what a guest may reach. Deny by default.
//!
//! - [`dirs`]: directory grants (`--dir HOST:GUEST[:ro]`).
//! - [`http`]: outbound HTTP origins for wasi:http guests (`--http-outbound`).
//! - [`net`]: socket allow-lists (`--net-connect`, `--net-listen`).
//! - [`identity`]: never more file access than the container's user.

pub mod dirs;
pub mod http;
pub mod identity;
pub mod net;
