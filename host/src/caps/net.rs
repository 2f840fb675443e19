//! Socket allow-lists: `[tcp/|udp/]CIDR:PORT[-PORT]`, deny by default.
//!
//! `--net-connect` rules say where a guest may connect (TCP) or send (UDP);
//! `--net-listen` rules say where it may bind and listen. A guest with no
//! rules has no sockets at all.
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
#[error("invalid network rule {rule:?}: {reason}; expected [tcp/|udp/]CIDR:PORT[-PORT], e.g. 127.0.0.1/32:8000 or udp/10.0.0.0/8:53")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One allow rule: a protocol, a network and an inclusive port range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    pub proto: Proto,
    pub net: IpNet,
    pub ports: (u16, u16),
}

impl NetRule {
    fn matches(&self, proto: Proto, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.proto == proto && self.net.contains(&ip) && (self.ports.0..=self.ports.1).contains(&addr.port())
    }
}

impl std::str::FromStr for NetRule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, RuleError> {
        let err = |reason: &str| RuleError { rule: s.to_string(), reason: reason.to_string() };
        let t = s.trim();
        let (proto, rest) = if let Some(r) = t.strip_prefix("udp/") {
            (Proto::Udp, r)
        } else if let Some(r) = t.strip_prefix("tcp/") {
            (Proto::Tcp, r)
        } else {
            (Proto::Tcp, t)
        };
        let (addr, ports) = rest.rsplit_once(':').ok_or_else(|| err("missing ':PORT'"))?;
        let addr = addr.strip_prefix('[').map(|a| a.replacen(']', "", 1)).unwrap_or_else(|| addr.to_string());
        let net: IpNet = if addr.contains('/') {
            addr.parse().map_err(|_| err("the address is not a valid CIDR"))?
        } else {
            let ip: IpAddr = addr.parse().map_err(|_| err("the address is not a valid IP or CIDR"))?;
            IpNet::from(ip)
        };
        let port = |p: &str| p.parse::<u16>().map_err(|_| err("the port is not a number in 0-65535"));
        let ports = match ports {
            "*" => (0, u16::MAX),
            p => match p.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(p)?, port(p)?),
            },
        };
        if ports.0 > ports.1 {
            return Err(err("the port range is reversed"));
        }
        Ok(NetRule { proto, net: net.trunc(), ports })
    }
}

/// What a guest wants to do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetUse {
    TcpBind,
    TcpListen,
    TcpAccept,
    TcpConnect,
    UdpBind,
    UdpSend,
    UdpReceive,
}

/// A guest's socket grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    pub connect: Vec<NetRule>,
    pub listen: Vec<NetRule>,
    /// Whether `wasi:sockets/ip-name-lookup` (DNS) is allowed.
    pub name_lookup: bool,
}

impl NetPolicy {
    /// Parses comma-separated rules (an annotation value) into `out`.
    pub fn parse_list(list: &str, out: &mut Vec<NetRule>) -> Result<(), RuleError> {
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            out.push(r.parse()?);
        }
        Ok(())
    }

    pub fn uses(&self, proto: Proto) -> bool {
        self.connect.iter().chain(&self.listen).any(|r| r.proto == proto)
    }

    /// Decides one socket operation.
    pub fn allows(&self, what: NetUse, addr: SocketAddr) -> bool {
        let any = |rules: &[NetRule], proto| rules.iter().any(|r| r.matches(proto, addr));
        let has = |rules: &[NetRule], proto| rules.iter().any(|r| r.proto == proto);
        // The wildcard address with port 0 is what the OS binds implicitly
        // before a connect or send.
        let implicit = addr.ip().is_unspecified() && addr.port() == 0;
        match what {
            NetUse::TcpBind => any(&self.listen, Proto::Tcp) || (implicit && has(&self.connect, Proto::Tcp)),
            NetUse::TcpListen => any(&self.listen, Proto::Tcp),
            // The listen rule decided who may serve; peers of an allowed
            // listener may connect from anywhere.
            NetUse::TcpAccept => has(&self.listen, Proto::Tcp),
            NetUse::TcpConnect => any(&self.connect, Proto::Tcp),
            NetUse::UdpBind => any(&self.listen, Proto::Udp) || (implicit && has(&self.connect, Proto::Udp)),
            NetUse::UdpSend => any(&self.connect, Proto::Udp),
            NetUse::UdpReceive => has(&self.listen, Proto::Udp) || any(&self.connect, Proto::Udp),
        }
    }
}

/// IPv4-mapped IPv6 addresses are matched as the IPv4 address they name.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_rules() {
        let r: NetRule = "127.0.0.1/32:8000".parse().unwrap();
        assert_eq!((r.proto, r.ports), (Proto::Tcp, (8000, 8000)));
        let r: NetRule = "udp/10.0.0.0/8:53-54".parse().unwrap();
        assert_eq!((r.proto, r.ports), (Proto::Udp, (53, 54)));
        let r: NetRule = "::1/128:80".parse().unwrap();
        assert!(r.net.contains(&"::1".parse::<IpAddr>().unwrap()));
        let r: NetRule = "[::1]:80".parse().unwrap();
        assert_eq!(r.net.prefix_len(), 128);
        let r: NetRule = "127.0.0.1:*".parse().unwrap();
        assert_eq!(r.ports, (0, 65535));
        for bad in ["127.0.0.1", "127.0.0.1/33:1", "localhost:80", "1.2.3.4:70000", "1.2.3.4:9-1", "sctp/1.2.3.4:1"] {
            let e = bad.parse::<NetRule>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn deny_by_default() {
        let p = NetPolicy::default();
        for u in [NetUse::TcpBind, NetUse::TcpConnect, NetUse::TcpListen, NetUse::UdpBind, NetUse::UdpSend] {
            assert!(!p.allows(u, sa("127.0.0.1:80")));
            assert!(!p.allows(u, sa("0.0.0.0:0")));
        }
    }

    #[test]
    fn connect_rules() {
        let mut p = NetPolicy::default();
        NetPolicy::parse_list("127.0.0.1/32:8000, udp/127.0.0.53/32:53", &mut p.connect).unwrap();
        assert!(p.allows(NetUse::TcpConnect, sa("127.0.0.1:8000")));
        assert!(p.allows(NetUse::TcpConnect, sa("[::ffff:127.0.0.1]:8000")));
        assert!(!p.allows(NetUse::TcpConnect, sa("127.0.0.1:8001")));
        assert!(!p.allows(NetUse::TcpConnect, sa("127.0.0.2:8000")));
        assert!(!p.allows(NetUse::UdpSend, sa("127.0.0.1:8000")));
        assert!(p.allows(NetUse::UdpSend, sa("127.0.0.53:53")));
        // implicit bind before connect, but no explicit bind or listen
        assert!(p.allows(NetUse::TcpBind, sa("0.0.0.0:0")));
        assert!(!p.allows(NetUse::TcpBind, sa("127.0.0.1:8000")));
        assert!(!p.allows(NetUse::TcpListen, sa("0.0.0.0:4000")));
    }

    #[test]
    fn listen_rules() {
        let mut p = NetPolicy::default();
        NetPolicy::parse_list("127.0.0.1/32:9000-9010", &mut p.listen).unwrap();
        assert!(p.allows(NetUse::TcpBind, sa("127.0.0.1:9005")));
        assert!(p.allows(NetUse::TcpListen, sa("127.0.0.1:9005")));
        assert!(!p.allows(NetUse::TcpListen, sa("0.0.0.0:9005")));
        assert!(!p.allows(NetUse::TcpListen, sa("127.0.0.1:9011")));
        assert!(p.allows(NetUse::TcpAccept, sa("10.1.2.3:50000")));
        assert!(!p.allows(NetUse::TcpConnect, sa("127.0.0.1:9005")));
    }
}
