//! `--listen` and `--identity`: where the node listens and who it is; starting its network
//! and saying where it listens.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::PeerId;
use miette::{Diagnostic, Report};
use ww::net::bootstrap::{self, BootPeer};
use ww::net::{self, NetConfig, NetError, NetEvent, Starting};
use ww::rpc::RpcServer;

/// The node's place on the network.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// Listen for peers at this multiaddr (repeatable; WW_LISTEN takes a comma-separated
    /// list). Default: /ip4/127.0.0.1/tcp/0, loopback on a port the OS picks. ww prints
    /// each address it listens on, with /p2p/<peer id>.
    #[arg(
        long = "listen",
        value_name = "MULTIADDR",
        env = "WW_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,

    /// The node's ed25519 key file (libp2p's protobuf encoding), created with mode 0600 when
    /// missing; WW_IDENTITY. Without it the node has a new identity every run.
    #[arg(long = "identity", value_name = "PATH", env = "WW_IDENTITY")]
    pub identity: Option<PathBuf>,

    /// Only this peer may graft over /ww/0.1.0 (repeatable; adds to the image's
    /// etc/allow-peers). Streams from any other peer are dropped before they reach the
    /// membrane. Without this flag or that file, any peer that reaches the node may graft.
    #[arg(long = "allow-peer", value_name = "PEER_ID")]
    pub allow_peer: Vec<String>,

    /// What a network peer's session holds when pid0 exports no membrane: `nothing`,
    /// `info` (a Host answering only id, addrs and peers) or `full` (the Host and pid0's
    /// executor: anyone who can graft can run programs on this node).
    #[arg(
        long = "peer-session",
        value_name = "WHAT",
        value_enum,
        default_value_t
    )]
    pub peer_session: ww::rpc::PeerSession,
}

impl NetArgs {
    /// The node's identity and listen addresses, checked (and the key created) before
    /// anything starts.
    pub fn config(&self) -> Result<NetConfig, Report> {
        let mut listen = Vec::new();
        let given: Vec<&str> = self
            .listen
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let given = if given.is_empty() {
            vec![net::DEFAULT_LISTEN]
        } else {
            given
        };
        for addr in given {
            listen.push(addr.parse().map_err(|e: libp2p::multiaddr::Error| {
                net::NetError::ListenAddr {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                }
            })?);
        }
        let keypair = match &self.identity {
            Some(path) => net::identity::load_or_create(path)?.0,
            None => net::identity::generate(),
        };
        Ok(NetConfig {
            keypair,
            listen,
            known: Vec::new(),
        })
    }
}

impl NetArgs {
    /// Who may graft over /ww/0.1.0 (`--allow-peer` and the image's `etc/allow-peers`);
    /// `None`: anyone. Read before anything starts; an unreadable list stops the node.
    pub fn allowed(&self, image: Option<&Path>) -> Result<Option<Arc<HashSet<PeerId>>>, Report> {
        let allowed = net::allow::allowed(&self.allow_peer, image)?;
        if let Some(allowed) = &allowed {
            tracing::info!(peers = allowed.len(), "only allowed peers may graft");
        }
        Ok(allowed.map(Arc::new))
    }
}

/// Starts the node's network beside pid0 (see [`Starting`]). Once it listens and before
/// anything uses it, unless `quiet`, prints each address it listens on
/// (`ww: listening on <multiaddr>/p2p/<id>`) on stderr.
pub fn start(config: NetConfig, runtime: &tokio::runtime::Handle, quiet: bool) -> Starting {
    Starting::spawn(config, runtime, move |network| {
        if !quiet {
            for addr in network.addrs() {
                eprintln!("ww: listening on {addr}");
            }
        }
    })
}

/// Once the network has started: serves the node's membrane to peers on `/ww/0.1.0`, keeps
/// dialing the `boot/` peers, and, unless `quiet`, prints any address the node comes to
/// listen on later. A network that fails to start is the boot loop's to report.
pub fn on_start(
    starting: Starting,
    server: RpcServer,
    boot: Vec<BootPeer>,
    allowed: Option<Arc<HashSet<PeerId>>>,
    quiet: bool,
) {
    tokio::spawn(async move {
        let Ok(network) = starting.network().await else {
            return;
        };
        let mut events = network.events();
        if let Err(e) = server.serve_peers(&network, allowed) {
            tracing::warn!("peers cannot reach the membrane: {e}");
        }
        bootstrap::keep_connected(&network, boot);
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(NetEvent::Listening(addr)) if !quiet => eprintln!("ww: listening on {addr}"),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// The network's failure to start, as ww's error.
#[derive(Debug)]
pub struct StartFailed(pub Arc<NetError>);

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StartFailed {}

impl Diagnostic for StartFailed {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.code()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.help()
    }
}
