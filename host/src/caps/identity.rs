//! A guest never gets more file access than its OCI `process.user` would
//! get from the kernel.
//!
//! berth lets the kernel enforce that: a process that runs one container
//! (the `berth` command) takes on the container's credentials before it
//! opens any granted directory, so every later file operation of the guest
//! is checked by the kernel against that uid, gid and group list.
use serde::{Deserialize, Serialize};

/// A POSIX identity (OCI `process.user`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the container asks to run as uid {want}, but berth runs as uid {have} and cannot switch; \
         run berth as root, or set process.user.uid to {have} (or 0) in config.json"
    )]
    CannotSwitch { want: u32, have: u32 },
    #[error("switching to uid {uid} gid {gid}: {call} failed")]
    Switch {
        uid: u32,
        gid: u32,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What [`assume`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Assumed {
    /// The process now runs as the container's user.
    Switched,
    /// Nothing to do: the process already has no more access than the user.
    Unchanged,
}

/// Makes the whole process (all threads) run as `user`.
///
/// Only for processes that host a single container. As root, switches
/// groups, gid and uid (dropping all capabilities when the uid is not 0).
/// As another user, allows a container user of 0 or of that same uid (the
/// guest then gets at most the caller's own access) and refuses any other.
pub fn assume(user: &User) -> Result<Assumed, IdentityError> {
    let have = rustix::process::geteuid().as_raw();
    if have != 0 {
        return if user.uid == 0 || user.uid == have { Ok(Assumed::Unchanged) } else { Err(IdentityError::CannotSwitch { want: user.uid, have }) };
    }
    if user.uid == 0 && user.gid == 0 && user.additional_gids.is_empty() {
        return Ok(Assumed::Unchanged);
    }
    let fail = |call| IdentityError::Switch { uid: user.uid, gid: user.gid, call, source: std::io::Error::last_os_error() };
    let groups: &[libc::gid_t] = &user.additional_gids;
    // SAFETY: `groups` is a valid slice of gid_t for the duration of the
    // call. glibc's setgroups/setgid/setuid apply to every thread of the
    // process (it broadcasts the change), which is what we need here.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(fail("setgroups"));
    }
    // SAFETY: plain syscall wrapper with an integer argument.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // SAFETY: plain syscall wrapper with an integer argument.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err(fail("setuid"));
    }
    tracing::debug!(uid = user.uid, gid = user.gid, groups = ?user.additional_gids, "assumed container identity");
    Ok(Assumed::Switched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_may_not_claim_another_uid() {
        if rustix::process::geteuid().is_root() {
            // The refusal path is for unprivileged callers; as root the
            // switch itself is covered by the CLI bundle tests.
            let u = User { uid: 0, gid: 0, additional_gids: vec![] };
            assert_eq!(assume(&u).unwrap(), Assumed::Unchanged);
            return;
        }
        let have = rustix::process::geteuid().as_raw();
        let other = User { uid: have + 1, gid: 0, additional_gids: vec![] };
        assert!(matches!(assume(&other), Err(IdentityError::CannotSwitch { .. })));
        let same = User { uid: have, gid: 0, additional_gids: vec![] };
        assert_eq!(assume(&same).unwrap(), Assumed::Unchanged);
    }
}
