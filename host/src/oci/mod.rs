//! OCI inputs: runtime bundles (`config.json` + rootfs) to [`RunPlan`]s.
//!
//! [`RunPlan`]: crate::plan::RunPlan

pub mod annotations;
pub mod bundle;
pub mod entry;
