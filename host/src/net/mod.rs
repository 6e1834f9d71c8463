//! The network: the node's libp2p swarm, and the protocol `/ww/0.1.0` over which peers
//! reach each other's membranes.
//!
//! [`Network::start`] builds the swarm (TCP and QUIC, noise, yamux, identify, ping,
//! Kademlia, raw protocol streams) and runs it as a task on the current tokio runtime;
//! [`Network`] is the handle to it, `Send` and cheap to clone. `ww run` starts it with
//! [`Starting::spawn`], on a thread of its own beside pid0, and whoever needs it awaits it.
//!
//! - [`Network::open`] dials a peer (at the addresses given, where the node already knows
//!   it, or where Kademlia finds it) and opens a `/ww/0.1.0` stream to it;
//! - [`Network::incoming`] yields the `/ww/0.1.0` streams peers open, within
//!   [`MAX_STREAMS_PER_PEER`] each;
//! - [`identity`]: the node's ed25519 key (`--identity`, `ww keygen`);
//! - [`bootstrap`]: the image's `boot/<peer-id>` files, and dialing them with backoff.
//!
//! What a stream carries is not this module's business: `crate::rpc` serves the node's
//! membrane on every inbound stream and speaks Cap'n Proto on outbound ones, and
//! `crate::caps::net` hands outbound streams to cells. This module uses nothing else in the
//! crate.
//!
//! # Limits
//!
//! A peer can cost the node only so much: at most [`MAX_CONNECTIONS_PER_PEER`] connections
//! per peer, [`MAX_INCOMING_CONNECTIONS`] incoming connections in all (and
//! [`MAX_PENDING_INCOMING`] still handshaking), yamux's own cap of streams per connection,
//! and [`MAX_STREAMS_PER_PEER`] live `/ww/0.1.0` streams per peer: a stream past that is
//! reset at once and logged (libp2p-stream also resets a stream that arrives while the
//! previous one is still being taken: it keeps no queue). The size of a message on a stream is bounded by the RPC
//! system that reads it (`crate::rpc::server::MAX_MESSAGE_WORDS`).

pub mod allow;
pub mod bootstrap;
pub mod identity;
mod swarm;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};

/// The protocol a `/ww/0.1.0` stream speaks: a Cap'n Proto two-party connection whose
/// bootstrap capability (on the side that accepted the stream) is the node's membrane.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ww/0.1.0");

/// The Kademlia protocol of ww nodes: their own DHT, apart from IPFS's.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ww/kad/1.0.0");

/// What identify tells peers this node speaks.
pub const IDENTIFY_VERSION: &str = "/ww/0.1.0";

/// Live `/ww/0.1.0` streams one peer may have open to this node at once.
pub const MAX_STREAMS_PER_PEER: usize = 16;

/// Connections one peer may have established with this node at once.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// Incoming connections established at once, all peers together.
pub const MAX_INCOMING_CONNECTIONS: u32 = 256;

/// Incoming connections still in their handshake at once.
pub const MAX_PENDING_INCOMING: u32 = 64;

/// How long a dial (with a Kademlia lookup, when needed) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Network::listening`] waits at most.
pub const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// How long a connection with no open stream is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a node listens when told nothing: loopback, a port the OS picks.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// What can go wrong on the network.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum NetError {
    /// The key file could not be read or written.
    #[error("cannot use the identity file {path}: {reason}")]
    #[diagnostic(
        code(ww::net::identity),
        help(
            "--identity (or WW_IDENTITY) names an ed25519 key file in libp2p's protobuf \
             encoding; ww creates one (mode 0600) when the path does not exist, and \
             `ww keygen PATH` makes one"
        )
    )]
    Identity {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },

    /// `ww keygen` would overwrite a file.
    #[error("{path} already exists")]
    #[diagnostic(
        code(ww::net::identity_exists),
        help("ww keygen never overwrites a key; choose another path or remove the file")
    )]
    IdentityExists {
        /// The file.
        path: String,
    },

    /// A `--listen` address is malformed.
    #[error("bad --listen address `{addr}`: {reason}")]
    #[diagnostic(
        code(ww::net::listen_addr),
        help(
            "write a multiaddr such as /ip4/127.0.0.1/tcp/0 or /ip4/0.0.0.0/udp/4001/quic-v1 \
             (repeat --listen, or separate them with commas in WW_LISTEN)"
        )
    )]
    ListenAddr {
        /// The address given.
        addr: String,
        /// Why it is not one.
        reason: String,
    },

    /// The node cannot listen on an address.
    #[error("cannot listen on {addr}: {reason}")]
    #[diagnostic(
        code(ww::net::listen),
        help(
            "the port may be taken, or the address not this machine's; port 0 lets the OS choose"
        )
    )]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },

    /// The transports could not be set up.
    #[error("cannot start the network: {0}")]
    #[diagnostic(code(ww::net::transport), help("this is a fault of the host system"))]
    Transport(String),

    /// A peer id is malformed.
    #[error("`{id}` is not a peer id: {reason}")]
    #[diagnostic(
        code(ww::net::peer_id),
        help("a peer id is base58, as `ww keygen` prints it (12D3KooW…)")
    )]
    PeerId {
        /// What was given.
        id: String,
        /// Why it is not one.
        reason: String,
    },

    /// A peer's address is malformed.
    #[error("`{addr}` is not a multiaddr: {reason}")]
    #[diagnostic(
        code(ww::net::addr),
        help("write a multiaddr such as /ip4/127.0.0.1/tcp/4001")
    )]
    Addr {
        /// What was given.
        addr: String,
        /// Why it is not one.
        reason: String,
    },

    /// A node cannot dial itself.
    #[error("{peer} is this node itself")]
    #[diagnostic(code(ww::net::self_dial))]
    SelfDial {
        /// Its id.
        peer: PeerId,
    },

    /// No address of the peer is known and routing did not find one.
    #[error("peer {peer} not found: no address was given, and no known peer knows one")]
    #[diagnostic(
        code(ww::net::not_found),
        help("give its addresses, or connect first to a peer that is connected to it")
    )]
    NotFound {
        /// The peer.
        peer: PeerId,
    },

    /// Dialing failed.
    #[error("cannot reach peer {peer}: {reason}")]
    #[diagnostic(code(ww::net::unreachable))]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },

    /// The peer refused or failed the `/ww/0.1.0` stream.
    #[error("cannot open a /ww/0.1.0 stream to {peer}: {reason}")]
    #[diagnostic(code(ww::net::stream))]
    Stream {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },

    /// The swarm task has ended.
    #[error("the node's network has stopped")]
    #[diagnostic(code(ww::net::stopped), help("the node is shutting down"))]
    Stopped,
}

/// `error` and its sources, one after the other: libp2p's errors often say little
/// themselves and the cause (an `io::Error`) only in their source.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.is_empty() {
        format!("{error:?}")
    } else {
        text
    }
}

/// A peer id from its base58 form.
pub fn parse_peer_id(id: &str) -> Result<PeerId, NetError> {
    id.parse()
        .map_err(|e: libp2p::identity::ParseError| NetError::PeerId {
            id: id.to_owned(),
            reason: e.to_string(),
        })
}

/// A multiaddr from its text.
pub fn parse_addr(addr: &str) -> Result<Multiaddr, NetError> {
    addr.parse()
        .map_err(|e: libp2p::multiaddr::Error| NetError::Addr {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

/// How the node starts.
pub struct NetConfig {
    /// Its identity.
    pub keypair: Keypair,
    /// Where it listens.
    pub listen: Vec<Multiaddr>,
    /// Where peers are, as far as the node knows before it starts (its `boot/` peers):
    /// added to every dial of them, so that a cell that dials one by id alone finds it.
    pub known: Vec<(PeerId, Vec<Multiaddr>)>,
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .finish()
    }
}

/// A peer the node is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: PeerId,
    /// The addresses of the connections to it.
    pub addrs: Vec<Multiaddr>,
}

/// What happens on the network, for whoever subscribed ([`Network::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// The node listens on a new address (ending in `/p2p/<id>`).
    Listening(Multiaddr),
    /// The first connection to a peer was established.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
}

/// What the swarm task shares with the handles.
#[derive(Default)]
struct Shared {
    /// The addresses the node listens on, without `/p2p/<id>`.
    listening: Vec<Multiaddr>,
    /// Connected peers and the remote addresses of their connections.
    peers: HashMap<PeerId, Vec<Multiaddr>>,
    /// Live inbound `/ww/0.1.0` streams per peer.
    streams: HashMap<PeerId, usize>,
}

/// What a handle asks the swarm task to do.
enum Command {
    /// Connect to `peer` (see [`Network::dial`]).
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
}

/// A handle on the node's network. Cheap to clone, `Send`; every clone is the same node.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

struct Inner {
    /// True once every listener has its address.
    listening: watch::Receiver<bool>,
    peer_id: PeerId,
    /// `peer_id` in base58, made once: `Host.id` answers it on every call.
    id: String,
    commands: mpsc::UnboundedSender<Command>,
    control: libp2p_stream::Control,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<NetEvent>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The data stays consistent across a panic elsewhere: every update is one assignment.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Network {
    /// Builds the swarm, listens on `config.listen`, and runs it as a task of the current
    /// tokio runtime (so: inside one). A listen address that cannot be bound is an error
    /// here, before anything runs.
    pub fn start(config: NetConfig) -> Result<Network, NetError> {
        let peer_id = config.keypair.public().to_peer_id();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (events, _) = broadcast::channel(256);
        let (commands, receiver) = mpsc::unbounded_channel();
        let (ready, listening) = watch::channel(config.listen.is_empty());
        let control = swarm::spawn(config, shared.clone(), events.clone(), receiver, ready)?;
        Ok(Network {
            inner: Arc::new(Inner {
                listening,
                id: peer_id.to_base58(),
                peer_id,
                commands,
                control,
                shared,
                events,
            }),
        })
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The node's peer id in base58.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Waits until every listener has its address (a first poll of the swarm: well under
    /// a millisecond), or [`LISTEN_WAIT`] at most; then [`Network::addrs`] holds them all.
    pub async fn listening(&self) {
        let mut listening = self.inner.listening.clone();
        let ready = listening.wait_for(|ready| *ready);
        if tokio::time::timeout(LISTEN_WAIT, ready).await.is_err() {
            tracing::warn!("the network has not reported all its listen addresses yet");
        }
    }

    /// The addresses the node listens on, each ending in `/p2p/<id>`.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        lock(&self.inner.shared)
            .listening
            .iter()
            .map(|addr| with_peer(addr, self.inner.peer_id))
            .collect()
    }

    /// The peers connected now, sorted by id.
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = lock(&self.inner.shared)
            .peers
            .iter()
            .map(|(id, addrs)| Peer {
                id: *id,
                addrs: addrs.clone(),
            })
            .collect();
        peers.sort_by_key(|p| p.id.to_bytes());
        peers
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        lock(&self.inner.shared).peers.contains_key(peer)
    }

    /// What happens on the network from now on.
    pub fn events(&self) -> broadcast::Receiver<NetEvent> {
        self.inner.events.subscribe()
    }

    /// Connects to `peer`, unless connected already: at `addrs` and the addresses the node
    /// knows for it; with none, wherever a Kademlia lookup among the connected peers finds
    /// it. Fails after [`DIAL_TIMEOUT`].
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        if peer == self.inner.peer_id {
            return Err(NetError::SelfDial { peer });
        }
        if self.is_connected(&peer) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Dial { peer, addrs, reply })
            .map_err(|_| NetError::Stopped)?;
        match tokio::time::timeout(DIAL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetError::Stopped),
            Err(_) => Err(NetError::Unreachable {
                peer,
                reason: format!("no connection within {} s", DIAL_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Dials `peer` ([`Network::dial`]) and opens a `/ww/0.1.0` stream to it.
    pub async fn open(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<PeerStream, NetError> {
        self.dial(peer, addrs).await?;
        let mut control = self.inner.control.clone();
        let opening = control.open_stream(peer, PROTOCOL);
        let stream = match tokio::time::timeout(DIAL_TIMEOUT, opening).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                return Err(NetError::Stream {
                    peer,
                    reason: "the peer does not speak /ww/0.1.0".into(),
                });
            }
            Ok(Err(e)) => {
                return Err(NetError::Stream {
                    peer,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(NetError::Stream {
                    peer,
                    reason: format!("no answer within {} s", DIAL_TIMEOUT.as_secs()),
                });
            }
        };
        tracing::debug!(%peer, "opened a /ww/0.1.0 stream");
        Ok(PeerStream::new(stream, None))
    }

    /// The `/ww/0.1.0` streams peers open to this node. Only one taker: a second call fails.
    pub fn incoming(&self) -> Result<Incoming, NetError> {
        let mut control = self.inner.control.clone();
        let streams = control
            .accept(PROTOCOL)
            .map_err(|e| NetError::Transport(e.to_string()))?;
        Ok(Incoming {
            streams,
            shared: self.inner.shared.clone(),
        })
    }
}

/// The node's network while it starts on a thread of its own, and once it has: cheap to
/// clone, `Send`. Setting up the transports (QUIC's TLS certificate, the resolver, the
/// behaviours) takes about a millisecond and a few hundred page faults; started this way it
/// stays off a cell's boot path, and whoever uses the network awaits
/// [`Starting::network`].
#[derive(Clone)]
pub struct Starting {
    state: watch::Receiver<Option<Result<Network, Arc<NetError>>>>,
    /// The network once someone has had it: later calls (`Host.id` is on every benchmark's
    /// hot path) take it without the channel's lock.
    started: Arc<std::sync::OnceLock<Network>>,
}

impl fmt::Debug for Starting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Starting").finish_non_exhaustive()
    }
}

impl Starting {
    /// Starts the network on a new thread, for `runtime`, whose tasks will drive it. Once
    /// it listens, `on_ready` runs (on the runtime), and only then does anyone awaiting
    /// [`Starting::network`] get it: what `on_ready` does (say, print the listen
    /// addresses) comes before any use of the network.
    pub fn spawn(
        config: NetConfig,
        runtime: &tokio::runtime::Handle,
        on_ready: impl FnOnce(&Network) + Send + 'static,
    ) -> Starting {
        let (done, state) = watch::channel(None);
        let runtime = runtime.clone();
        let spawned = std::thread::Builder::new()
            .name("ww-net-start".into())
            .spawn({
                let done = done.clone();
                move || {
                    let _entered = runtime.enter();
                    match Network::start(config) {
                        Ok(network) => {
                            runtime.spawn(async move {
                                network.listening().await;
                                on_ready(&network);
                                let _ = done.send(Some(Ok(network)));
                            });
                        }
                        Err(e) => {
                            let _ = done.send(Some(Err(Arc::new(e))));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            let error = NetError::Transport(format!("cannot start a thread: {e}"));
            let _ = done.send(Some(Err(Arc::new(error))));
        }
        Starting {
            state,
            started: Arc::default(),
        }
    }

    /// The network, once started and listening ([`Network::listening`]); why it could not
    /// start, if it could not.
    pub async fn network(&self) -> Result<Network, Arc<NetError>> {
        if let Some(network) = self.started.get() {
            return Ok(network.clone());
        }
        let mut state = self.state.clone();
        let result = match state.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => Some(Err(Arc::new(NetError::Stopped))),
        };
        let network = result.unwrap_or_else(|| Err(Arc::new(NetError::Stopped)))?;
        Ok(self.started.get_or_init(|| network).clone())
    }

    /// Resolves with the error if the network fails to start; never, if it starts.
    pub async fn failed(&self) -> Arc<NetError> {
        match self.network().await {
            Err(e) => e,
            Ok(_) => std::future::pending().await,
        }
    }
}

/// `addr` ending in `/p2p/<peer>`.
pub fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => addr.clone(),
        _ => addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer)),
    }
}

/// The inbound `/ww/0.1.0` streams, each within its peer's [`MAX_STREAMS_PER_PEER`].
pub struct Incoming {
    streams: libp2p_stream::IncomingStreams,
    shared: Arc<Mutex<Shared>>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next stream a peer opened; `None` once the network has stopped. A stream past its
    /// peer's limit is reset and skipped.
    pub async fn next(&mut self) -> Option<(PeerId, PeerStream)> {
        loop {
            let (peer, stream) = self.streams.next().await?;
            let live = {
                let mut shared = lock(&self.shared);
                let live = shared.streams.entry(peer).or_default();
                if *live < MAX_STREAMS_PER_PEER {
                    *live += 1;
                    None
                } else {
                    Some(*live)
                }
            };
            if let Some(live) = live {
                tracing::warn!(
                    %peer,
                    live,
                    "refused a /ww/0.1.0 stream: the peer has {MAX_STREAMS_PER_PEER} open already"
                );
                drop(stream);
                continue;
            }
            tracing::debug!(%peer, "accepted a /ww/0.1.0 stream");
            let permit = Permit {
                peer,
                shared: self.shared.clone(),
            };
            return Some((peer, PeerStream::new(stream, Some(permit))));
        }
    }
}

/// Counts an inbound stream against its peer's limit until dropped.
struct Permit {
    peer: PeerId,
    shared: Arc<Mutex<Shared>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(live) = shared.streams.get_mut(&self.peer) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                shared.streams.remove(&self.peer);
            }
        }
    }
}

/// A `/ww/0.1.0` stream, as a tokio byte stream.
pub struct PeerStream {
    /// Only ever borrowed mutably (`get_mut`, no locking): the mutex makes the stream
    /// `Sync`, as WASI's stream adapters need.
    inner: Mutex<Compat<libp2p::Stream>>,
    _permit: Option<Permit>,
}

impl PeerStream {
    fn new(stream: libp2p::Stream, permit: Option<Permit>) -> PeerStream {
        PeerStream {
            inner: Mutex::new(stream.compat()),
            _permit: permit,
        }
    }

    fn inner(self: Pin<&mut Self>) -> Pin<&mut Compat<libp2p::Stream>> {
        let inner = self
            .get_mut()
            .inner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Pin::new(inner)
    }
}

impl fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStream").finish_non_exhaustive()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner().poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_peer_appends_once() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let full = with_peer(&addr, peer);
        assert_eq!(
            full.to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
        );
        assert_eq!(with_peer(&full, peer), full);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_started_network_is_given_out_after_on_ready_and_a_failure_is_kept() {
        let runtime = runtime();
        let ready = Arc::new(Mutex::new(Vec::new()));
        let seen = ready.clone();
        let starting = Starting::spawn(
            NetConfig {
                keypair: Keypair::generate_ed25519(),
                listen: vec![DEFAULT_LISTEN.parse().unwrap()],
                known: Vec::new(),
            },
            runtime.handle(),
            move |network| seen.lock().unwrap().extend(network.addrs()),
        );
        let network = runtime.block_on(starting.network()).unwrap();
        let printed = ready.lock().unwrap().clone();
        assert_eq!(printed, network.addrs());
        assert_eq!(printed.len(), 1);
        assert!(
            printed[0]
                .to_string()
                .ends_with(&format!("/p2p/{}", network.id()))
        );

        let failing = Starting::spawn(
            NetConfig {
                keypair: Keypair::generate_ed25519(),
                listen: vec!["/ip4/8.8.8.8/tcp/0".parse().unwrap()],
                known: Vec::new(),
            },
            runtime.handle(),
            |_| panic!("never ready"),
        );
        let error = runtime.block_on(failing.failed());
        assert!(matches!(*error, NetError::Listen { .. }), "{error}");
        assert!(runtime.block_on(failing.network()).is_err());
    }

    #[test]
    fn bad_ids_and_addrs_say_what_they_are() {
        let err = parse_peer_id("not-a-peer").unwrap_err();
        assert!(
            err.to_string().contains("`not-a-peer` is not a peer id"),
            "{err}"
        );
        let err = parse_addr("/ip4/999.0.0.1/tcp/1").unwrap_err();
        assert!(err.to_string().contains("is not a multiaddr"), "{err}");
    }
}
