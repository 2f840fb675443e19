//! OCI inputs: runtime bundles (`config.json` + rootfs) and images to
//! [`RunPlan`]s.
//!
//! [`RunPlan`]: crate::plan::RunPlan

pub mod annotations;
pub mod bundle;
pub mod detect;
pub mod entry;
pub mod image;
pub mod registry;
