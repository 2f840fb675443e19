//! What containerd tells `start`, and how `start` answers, in both of the
//! protocols containerd speaks to shims:
//!
//! - **bootstrap** (containerd 2.3+): a protobuf `BootstrapParams` on
//!   stdin, naming the instance, containerd's addresses, the log level, the
//!   directory for the shim's socket, and the runtime options as one of its
//!   extensions; the reply is a `BootstrapResult` on stdout.
//! - **legacy** (containerd 1.x to 2.2): the same facts as flags and
//!   environment variables, the runtime options as a bare protobuf `Any`
//!   on stdin (or nothing), and a bare socket address as the reply.
//!
//! containerd 2.3 passes the legacy flags and environment alongside the
//! bootstrap message, so a message is told from a legacy `Any` by its
//! identity: its instance id and namespace are the `-id` and `-namespace`
//! of the command line. (A legacy `Any` also decodes as `BootstrapParams`,
//! with its type URL as the instance id.)
use crate::options::{OptionsError, ShimConfig};
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim::{Flags, StartOpts};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message as _;

/// What `start` reads of stdin at most (containerd's own bound).
const MAX_INPUT: u64 = 10 << 20;
/// The task API version berth's server speaks to containerd 2.x (it also
/// answers on v2's service names, for 1.x).
const TASK_API_VERSION: i32 = 3;
/// The longest path of a unix socket (`sun_path` holds 108 bytes, with
/// its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Which protocol containerd spoke to `start`: the reply must match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Bootstrap,
    Legacy,
}

/// What a `start` was told, from either protocol.
#[derive(Debug)]
pub struct StartRequest {
    pub protocol: Protocol,
    /// The instance, containerd's addresses, the socket directory.
    pub opts: StartOpts,
    /// berth's shim config, from the runtime options.
    pub config: ShimConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("reading what containerd sent on stdin")]
    Stdin(#[source] std::io::Error),
    #[error(
        "stdin ({len} bytes) holds neither containerd 2.3's BootstrapParams nor the runtime options (a protobuf Any) of older containerd: \
         the message is cut off or garbled"
    )]
    Garbled {
        len: usize,
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
    #[error("the BootstrapParams on stdin are for {namespace}/{instance}, but this start is for {flag_namespace}/{flag_id} (-namespace, -id)")]
    OtherInstance { namespace: String, instance: String, flag_namespace: String, flag_id: String },
    #[error("the BootstrapParams on stdin have no {0}, which containerd always sends: the message is cut off")]
    Incomplete(&'static str),
    #[error("TTRPC_ADDRESS is not set; containerd sets it for the shims it starts")]
    NoTtrpcEnv,
    #[error("the BootstrapParams carry {0} runtime options; give berth one options table")]
    ManyOptions(usize),
    #[error("the BootstrapParams' socket_dir {0:?} is not an absolute path; set the shim manager's socket_dir in containerd's config to one")]
    RelativeSocketDir(String),
    #[error("the shim socket {path} is {len} bytes long, over the {MAX_SOCKET_PATH} a unix socket may have; set a shorter socket_dir in containerd's config")]
    SocketTooLong { path: String, len: usize },
    #[error(transparent)]
    Options(#[from] OptionsError),
}

/// Reads stdin and makes sense of it with `flags` and the environment.
pub fn read(flags: &Flags) -> Result<StartRequest, BootstrapError> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    let mut input = Vec::new();
    // Nothing is piped in when the shim is started by hand.
    if !stdin.is_terminal() {
        stdin.lock().take(MAX_INPUT).read_to_end(&mut input).map_err(BootstrapError::Stdin)?;
    }
    parse(&input, flags, std::env::var("TTRPC_ADDRESS").ok())
}

/// What `input` (stdin), `flags` and the environment's `TTRPC_ADDRESS`
/// tell a `start`.
pub fn parse(input: &[u8], flags: &Flags, ttrpc_env: Option<String>) -> Result<StartRequest, BootstrapError> {
    match BootstrapParams::parse_from_bytes(input) {
        Ok(params) if !input.is_empty() && params.instance_id == flags.id && params.namespace == flags.namespace => from_params(params, flags),
        // A legacy `Any` decodes with its type URL and value as the
        // instance id and namespace, and nothing else set.
        Ok(params) if !input.is_empty() && !identity_only(&params) => Err(BootstrapError::OtherInstance {
            namespace: params.namespace,
            instance: params.instance_id,
            flag_namespace: flags.namespace.clone(),
            flag_id: flags.id.clone(),
        }),
        Ok(_) => legacy(input, flags, ttrpc_env),
        Err(source) => match Any::parse_from_bytes(input) {
            Ok(_) => legacy(input, flags, ttrpc_env),
            Err(_) => Err(BootstrapError::Garbled { len: input.len(), source }),
        },
    }
}

fn identity_only(params: &BootstrapParams) -> bool {
    let identity = BootstrapParams { instance_id: params.instance_id.clone(), namespace: params.namespace.clone(), ..Default::default() };
    *params == identity
}

fn from_params(params: BootstrapParams, flags: &Flags) -> Result<StartRequest, BootstrapError> {
    // What containerd fills in every message; a message cut off between
    // two fields still decodes, without them. (One cut after the last of
    // them cannot be told from a message without options.)
    for (field, value) in [
        ("containerd_version", &params.containerd_version),
        ("containerd_ttrpc_address", &params.containerd_ttrpc_address),
        ("containerd_grpc_address", &params.containerd_grpc_address),
        ("containerd_binary", &params.containerd_binary),
    ] {
        if value.is_empty() {
            return Err(BootstrapError::Incomplete(field));
        }
    }
    if let Some(dir) = params.socket_dir.as_deref().filter(|d| !d.is_empty()) {
        if !dir.starts_with('/') {
            return Err(BootstrapError::RelativeSocketDir(dir.to_string()));
        }
    }
    let mut opts = StartOpts::from(params);
    // The `-debug` flag is passed alongside, as containerd's own shims
    // read it.
    opts.debug |= flags.debug;
    let config = match opts.extensions.as_slice() {
        [] => ShimConfig::default(),
        // The one extension containerd 2.3 sends is the runtime's options;
        // one of another type is the options of another runtime, which
        // `from_any` names.
        [any] => crate::options::from_any(any)?,
        many => return Err(BootstrapError::ManyOptions(many.len())),
    };
    Ok(StartRequest { protocol: Protocol::Bootstrap, opts, config })
}

fn legacy(input: &[u8], flags: &Flags, ttrpc_env: Option<String>) -> Result<StartRequest, BootstrapError> {
    let ttrpc_address = ttrpc_env.filter(|a| !a.is_empty()).ok_or(BootstrapError::NoTtrpcEnv)?;
    let config = crate::options::from_options(input)?;
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address,
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        log_level: if flags.debug { LogLevel::LOG_LEVEL_DEBUG } else { LogLevel::LOG_LEVEL_INFO },
        ..Default::default()
    };
    Ok(StartRequest { protocol: Protocol::Legacy, opts, config })
}

impl StartRequest {
    /// The address of the socket of shim group `group`: in the requested
    /// socket directory, else in containerd's default one.
    pub fn socket_address(&self, group: &str) -> Result<String, BootstrapError> {
        let address = self.opts.socket_address(group);
        let path = crate::grouping::socket_path(&address);
        if path.len() > MAX_SOCKET_PATH {
            return Err(BootstrapError::SocketTooLong { path: path.to_string(), len: path.len() });
        }
        Ok(address)
    }
}

/// The reply to a `start` that containerd spoke `protocol` to.
pub fn reply(protocol: Protocol, address: &str) -> Vec<u8> {
    match protocol {
        // containerd 1.6 reads the whole output as the address.
        Protocol::Legacy => address.as_bytes().to_vec(),
        Protocol::Bootstrap => {
            let result = BootstrapResult { version: TASK_API_VERSION, address: address.to_string(), protocol: "ttrpc".into(), ..Default::default() };
            // Only strings and an integer: encoding cannot fail.
            result.write_to_bytes().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_host::containerd::api::runtimeoptions::Options;
    use containerd_shim::bootstrap::Extension;
    use containerd_shim_protos::protobuf::EnumOrUnknown;

    const ID: &str = "c1";
    const NS: &str = "k8s.io";
    const TTRPC: &str = "/run/containerd/containerd.sock.ttrpc";

    fn flags() -> Flags {
        Flags { id: ID.into(), namespace: NS.into(), address: "/run/containerd/containerd.sock".into(), ..Default::default() }
    }

    fn options_any(type_url: &str, options: &Options) -> Any {
        Any { type_url: type_url.into(), value: options.write_to_bytes().unwrap(), ..Default::default() }
    }

    /// The message as containerd 2.3's `Command` builds it.
    fn params(extensions: Vec<Any>) -> BootstrapParams {
        BootstrapParams {
            instance_id: ID.into(),
            namespace: NS.into(),
            log_level: EnumOrUnknown::new(LogLevel::LOG_LEVEL_INFO),
            containerd_version: "v2.3.4".into(),
            containerd_ttrpc_address: TTRPC.into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            socket_dir: Some("/run/containerd/s".into()),
            extensions: extensions.into_iter().map(|a| Extension { value: Some(a).into(), ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    fn node_options() -> Any {
        options_any("runtimeoptions.v1.Options", &Options { config_body: b"grouping = \"node\"\n".to_vec(), ..Default::default() })
    }

    #[test]
    fn containerd_2_3s_message_is_read_with_its_options_and_socket_dir() {
        let input = params(vec![node_options()]).write_to_bytes().unwrap();
        let r = parse(&input, &flags(), None).unwrap();
        assert_eq!(r.protocol, Protocol::Bootstrap);
        assert_eq!(r.config.grouping, crate::options::Grouping::Node);
        assert_eq!(r.opts.ttrpc_address, TTRPC);
        let address = r.socket_address("node:").unwrap();
        assert!(address.starts_with("unix:///run/containerd/s/"), "{address}");
        // The same group has the same socket under both protocols.
        let legacy = parse(&node_options().write_to_bytes().unwrap(), &flags(), Some(TTRPC.into())).unwrap();
        assert_eq!(legacy.protocol, Protocol::Legacy);
        assert_eq!(legacy.config.grouping, crate::options::Grouping::Node);
        assert_eq!(legacy.socket_address("node:").unwrap(), address);
        // Elsewhere when containerd says so.
        let mut p = params(vec![]);
        p.socket_dir = Some("/var/run/ctrd/s/".into());
        let r = parse(&p.write_to_bytes().unwrap(), &flags(), None).unwrap();
        assert!(r.socket_address("x").unwrap().starts_with("unix:///var/run/ctrd/s/"));
        assert_eq!(r.config, ShimConfig::default());
    }

    #[test]
    fn legacy_stdin_is_what_it_was() {
        // Nothing on stdin, or the options as a bare Any: the legacy
        // protocol, whose TTRPC address is in the environment.
        let r = parse(&[], &flags(), Some(TTRPC.into())).unwrap();
        assert_eq!((r.protocol, r.config, r.opts.ttrpc_address.as_str()), (Protocol::Legacy, ShimConfig::default(), TTRPC));
        let e = parse(&[], &flags(), None).unwrap_err();
        assert!(matches!(e, BootstrapError::NoTtrpcEnv), "{e}");
        // Default options encode as a type URL alone.
        let bare = options_any("runtimeoptions.v1.Options", &Options::default()).write_to_bytes().unwrap();
        assert_eq!(parse(&bare, &flags(), Some(TTRPC.into())).unwrap().protocol, Protocol::Legacy);
        let e = parse(&options_any("containerd.runc.v1.Options", &Options::default()).write_to_bytes().unwrap(), &flags(), Some(TTRPC.into())).unwrap_err();
        assert!(e.to_string().contains("containerd.runc.v1.Options") && e.to_string().contains("ConfigPath"), "{e}");
    }

    #[test]
    fn bad_messages_are_named() {
        let whole = params(vec![node_options()]).write_to_bytes().unwrap();
        // Cut anywhere: never taken for something else, always an error
        // that says what was wrong (or, cut between fields after the
        // identity, a message that lacks what containerd always sends).
        // (The id alone decodes as an `Any` with the id as its type: an
        // options error that names it.)
        let mut bare = params(vec![]);
        bare.socket_dir = None;
        let undetectable = bare.compute_size() as usize;
        for cut in 1..whole.len() {
            let e = parse(&whole[..cut], &flags(), Some(TTRPC.into())).map(|r| r.protocol);
            match e {
                Err(BootstrapError::Garbled { .. } | BootstrapError::Incomplete(_) | BootstrapError::OtherInstance { .. } | BootstrapError::Options(_)) => {}
                // Cut after the fields containerd always fills in.
                Ok(Protocol::Bootstrap) if cut >= undetectable => {}
                other => panic!("cut at {cut} of {}: {other:?}", whole.len()),
            }
        }
        let e = parse(&[0xff, 0xff, 0xff], &flags(), Some(TTRPC.into())).unwrap_err();
        assert!(matches!(e, BootstrapError::Garbled { len: 3, .. }) && e.to_string().contains("cut off or garbled"), "{e}");
        let mut other = params(vec![]);
        other.instance_id = "c2".into();
        let e = parse(&other.write_to_bytes().unwrap(), &flags(), None).unwrap_err().to_string();
        assert!(e.contains("k8s.io/c2") && e.contains("k8s.io/c1"), "{e}");
        let e = parse(&params(vec![options_any("containerd.runc.v1.Options", &Options::default())]).write_to_bytes().unwrap(), &flags(), None).unwrap_err();
        assert!(e.to_string().contains("containerd.runc.v1.Options"), "{e}");
        let e = parse(&params(vec![node_options(), node_options()]).write_to_bytes().unwrap(), &flags(), None).unwrap_err();
        assert!(matches!(e, BootstrapError::ManyOptions(2)), "{e}");
        let mut relative = params(vec![]);
        relative.socket_dir = Some("run/s".into());
        assert!(matches!(parse(&relative.write_to_bytes().unwrap(), &flags(), None), Err(BootstrapError::RelativeSocketDir(_))));
        let mut long = params(vec![]);
        long.socket_dir = Some(format!("/{}", "d".repeat(60)));
        let r = parse(&long.write_to_bytes().unwrap(), &flags(), None).unwrap();
        let e = r.socket_address("g").unwrap_err().to_string();
        assert!(e.contains("socket_dir") && e.contains("108") || e.contains("107"), "{e}");
    }

    #[test]
    fn the_reply_is_in_the_protocol_spoken() {
        let address = "unix:///run/containerd/s/abc";
        assert_eq!(reply(Protocol::Legacy, address), address.as_bytes());
        let r = BootstrapResult::parse_from_bytes(&reply(Protocol::Bootstrap, address)).unwrap();
        assert_eq!((r.version, r.address.as_str(), r.protocol.as_str()), (3, address, "ttrpc"));
    }
}
