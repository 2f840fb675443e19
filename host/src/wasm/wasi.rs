//! A plan's capabilities as a WASI context: exactly its args, env,
//! preopens and sockets; nothing inherited from the host but stdio.
use super::run::RunError;
use crate::caps::net::{NetPolicy, NetUse};
use crate::plan::RunPlan;
use std::sync::Arc;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub(crate) fn builder(plan: &RunPlan) -> Result<WasiCtxBuilder, RunError> {
    let mut b = WasiCtxBuilder::new();
    b.inherit_stdio().args(&plan.args).envs(&plan.env);
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
