//! A plan's capabilities as a WASI context: exactly its args, env,
//! preopens and sockets; nothing inherited from the host but stdio.
use super::error::RunError;
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
        b.preopened_dir(&p.host, &p.guest, perms).map_err(|e| RunError::Preopen { host: p.host.display().to_string(), guest: p.guest.clone(), source: e })?;
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

/// Opens a stdio path for the guest ([`crate::stdio::open`]).
pub(crate) fn open_stdio(path: &Path, write: bool) -> Result<std::fs::File, RunError> {
    crate::stdio::open(path, write).map_err(|source| RunError::Stdio { path: path.display().to_string(), source })
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
