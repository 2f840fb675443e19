//! A plan's capabilities as a WASI context: exactly its args, env,
//! preopens and sockets; nothing inherited from the host but stdio.
use super::run::RunError;
use crate::caps::net::{NetPolicy, NetUse};
use crate::plan::{RunPlan, Stdio};
use std::path::Path;
use std::sync::Arc;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub(crate) fn builder(plan: &RunPlan) -> Result<WasiCtxBuilder, RunError> {
    let mut b = base(plan)?;
    stdio(&mut b, &plan.stdio)?;
    Ok(b)
}

/// Everything of [`builder`] but stdio (which is left empty).
pub(crate) fn base(plan: &RunPlan) -> Result<WasiCtxBuilder, RunError> {
    let mut b = WasiCtxBuilder::new();
    b.args(&plan.args).envs(&plan.env);
    if let Some(cwd) = &plan.cwd {
        b.initial_cwd(cwd);
    }
    for p in &plan.preopens {
        let perms = if p.readonly { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        b.preopened_dir(&p.host, &p.guest, perms).map_err(|e| RunError::Preopen {
            host: p.host.display().to_string(),
            guest: p.guest.clone(),
            reason: e.to_string(),
        })?;
    }
    network(&mut b, &plan.net);
    Ok(b)
}

fn stdio(b: &mut WasiCtxBuilder, s: &Stdio) -> Result<(), RunError> {
    use wasmtime_wasi::cli::{InputFile, OutputFile};
    let Stdio::Paths { stdin, stdout, stderr } = s else {
        b.inherit_stdio();
        return Ok(());
    };
    if let Some(p) = stdin {
        b.stdin(InputFile::new(open_stdio(p, false)?));
    }
    if let Some(p) = stdout {
        b.stdout(OutputFile::new(open_stdio(p, true)?));
    }
    if let Some(p) = stderr {
        b.stderr(OutputFile::new(open_stdio(p, true)?));
    }
    Ok(())
}

/// [`open_stdio`] of a path containerd gave, where empty means none
/// (`/dev/null`).
pub fn open_stdio_or_null(path: &str, write: bool) -> Result<std::fs::File, RunError> {
    open_stdio(Path::new(if path.is_empty() { "/dev/null" } else { path }), write)
}

/// Opens a stdio path without blocking on the other end of a FIFO: an
/// output FIFO is opened read-write (its reader may not be there yet), an
/// input FIFO non-blocking and then switched to blocking reads (so the
/// guest sees EOF when the writer closes); files are read or appended.
pub fn open_stdio(path: &Path, write: bool) -> Result<std::fs::File, RunError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let err = |e: std::io::Error| RunError::Stdio { path: path.display().to_string(), reason: e.to_string() };
    let fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    let mut o = std::fs::OpenOptions::new();
    let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
    match (fifo, write) {
        (true, true) => o.read(true).write(true),
        (true, false) => {
            flags |= libc::O_NONBLOCK;
            o.read(true)
        }
        (false, true) => o.append(true).create(true),
        (false, false) => o.read(true),
    };
    let f = o.custom_flags(flags).open(path).map_err(err)?;
    if fifo && !write {
        let fl = rustix::fs::fcntl_getfl(&f).map_err(|e| err(e.into()))?;
        rustix::fs::fcntl_setfl(&f, fl - rustix::fs::OFlags::NONBLOCK).map_err(|e| err(e.into()))?;
    }
    Ok(f)
}

fn network(b: &mut WasiCtxBuilder, net: &NetPolicy) {
    use crate::caps::net::Proto;
    b.allow_tcp(net.uses(Proto::Tcp)).allow_udp(net.uses(Proto::Udp)).allow_ip_name_lookup(net.name_lookup);
    let policy = Arc::new(net.clone());
    b.socket_addr_check(move |addr, use_| {
        let what = match use_ {
            SocketAddrUse::TcpBind => NetUse::TcpBind,
            SocketAddrUse::TcpListen => NetUse::TcpListen,
            SocketAddrUse::TcpAccept => NetUse::TcpAccept,
            SocketAddrUse::TcpConnect => NetUse::TcpConnect,
            SocketAddrUse::UdpBind => NetUse::UdpBind,
            SocketAddrUse::UdpSend => NetUse::UdpSend,
            SocketAddrUse::UdpReceive => NetUse::UdpReceive,
        };
        let allowed = policy.allows(what, addr);
        if !allowed {
            tracing::info!(address = %addr, operation = ?what, "socket operation denied by policy");
        }
        Box::pin(async move { allowed })
    });
}
