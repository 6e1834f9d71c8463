//! The swarm: its behaviour, and the task that drives it and answers the handles.
//!
//! Addresses enter Kademlia's routing table only from identify (what a peer says it listens
//! on, once connected and authenticated), so the node tells other peers only addresses a
//! peer vouched for itself, never ones a cell guessed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, connection_limits, identify, kad, noise, ping, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{
    Command, IDENTIFY_VERSION, IDLE_TIMEOUT, KAD_PROTOCOL, MAX_CONNECTIONS_PER_PEER,
    MAX_INCOMING_CONNECTIONS, MAX_PENDING_INCOMING, NetConfig, NetError, NetEvent, Shared, lock,
    with_peer,
};

/// Everything the node speaks besides the transports.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    streams: libp2p_stream::Behaviour,
}

/// Builds the swarm, starts listening, and spawns the task that runs it; the control for
/// opening and accepting streams.
pub(super) fn spawn(
    config: NetConfig,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<NetEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    ready: watch::Sender<bool>,
) -> Result<libp2p_stream::Control, NetError> {
    let transport = |e: &dyn std::error::Error| NetError::Transport(super::describe(e));
    let resolver = hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
        tracing::warn!(
            "no DNS for /dns multiaddrs: cannot read /etc/resolv.conf ({})",
            super::describe(&e)
        );
        let none = hickory_resolver::config::ResolverConfig::from_name_servers(Vec::new());
        (none, Default::default())
    });
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_dns_config(resolver.0, resolver.1)
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                .with_max_established_incoming(Some(MAX_INCOMING_CONNECTIONS))
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(super::DIAL_TIMEOUT);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            // Answer lookups even with only loopback or private addresses, which is what
            // a node learns its peers by here.
            kad.set_mode(Some(kad::Mode::Server));
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                        .with_agent_version(format!("ww/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                kad,
                streams: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    let known = config.known.into_iter().collect();
    let mut listeners = Vec::new();
    for addr in config.listen {
        let listener = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr,
                reason: super::describe(&e),
            })?;
        listeners.push(listener);
    }
    let control = swarm.behaviour().streams.new_control();
    let unready = listeners.iter().copied().collect();
    let driver = Driver {
        unready,
        ready,
        swarm,
        shared,
        events,
        waiting: HashMap::new(),
        dialing: HashSet::new(),
        lookups: HashMap::new(),
        known,
    };
    tokio::spawn(driver.run(commands));
    Ok(control)
}

type Reply = oneshot::Sender<Result<(), NetError>>;

/// The swarm and what it owes the handles.
struct Driver {
    /// Listeners that have reported no address yet.
    unready: HashSet<ListenerId>,
    /// Set once every listener has reported an address (or failed).
    ready: watch::Sender<bool>,
    swarm: Swarm<Behaviour>,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<NetEvent>,
    /// Dials waiting for a connection to a peer.
    waiting: HashMap<PeerId, Vec<Reply>>,
    /// Peers being dialed.
    dialing: HashSet<PeerId>,
    /// Kademlia lookups for peers with no known address.
    lookups: HashMap<kad::QueryId, PeerId>,
    /// Addresses known for peers from the start (`boot/`), added to every dial of them.
    known: HashMap<PeerId, Vec<Multiaddr>>,
}

impl Driver {
    /// Runs until every handle is gone.
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Dial { peer, addrs, reply }) => self.dial(peer, addrs, reply),
                    None => break,
                },
                Some(event) = self.swarm.next() => self.on_event(event),
            }
        }
        tracing::debug!("the network stopped");
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<libp2p::Multiaddr>, reply: Reply) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.waiting.entry(peer).or_default().push(reply);
        if self.dialing.contains(&peer) {
            return;
        }
        self.dial_at(peer, addrs, true);
    }

    /// Dials `peer` at `addrs` and what the behaviours know; when nothing is known and
    /// `lookup`, asks Kademlia first.
    fn dial_at(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>, lookup: bool) {
        for addr in self.known.get(&peer).into_iter().flatten() {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(peer);
            }
            Err(DialError::NoAddresses) if lookup => {
                tracing::debug!(%peer, "no known address; looking the peer up");
                let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.lookups.insert(query, peer);
                self.dialing.insert(peer);
            }
            Err(DialError::NoAddresses) => self.fail(peer, Failure::NotFound),
            Err(e) => self.fail(peer, Failure::Unreachable(super::describe(&e))),
        }
    }

    fn fail(&mut self, peer: PeerId, failure: Failure) {
        self.dialing.remove(&peer);
        for reply in self.waiting.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(failure.clone().into_error(peer)));
        }
    }

    fn listener_reported(&mut self, listener: ListenerId) {
        if self.unready.remove(&listener) && self.unready.is_empty() {
            self.ready.send_replace(true);
        }
    }

    fn connected(&mut self, peer: PeerId) {
        self.dialing.remove(&peer);
        for reply in self.waiting.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Ok(()));
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                self.listener_reported(listener_id);
                tracing::debug!(%address, "listening");
                lock(&self.shared).listening.push(address.clone());
                let full = with_peer(&address, *self.swarm.local_peer_id());
                let _ = self.events.send(NetEvent::Listening(full));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.shared).listening.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("a listener failed: {error}");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                if let Err(e) = reason {
                    tracing::warn!(?addresses, "a listener closed: {e}");
                }
                self.listener_reported(listener_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %addr, "connected");
                lock(&self.shared)
                    .peers
                    .entry(peer_id)
                    .or_default()
                    .push(addr);
                if num_established.get() == 1 {
                    let _ = self.events.send(NetEvent::Connected(peer_id));
                }
                self.connected(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                endpoint,
                num_established,
                cause,
                ..
            } => {
                let addr = endpoint.get_remote_address();
                tracing::debug!(peer = %peer_id, %addr, ?cause, "connection closed");
                let mut shared = lock(&self.shared);
                if num_established == 0 {
                    shared.peers.remove(&peer_id);
                } else if let Some(addrs) = shared.peers.get_mut(&peer_id)
                    && let Some(at) = addrs.iter().position(|a| a == addr)
                {
                    addrs.remove(at);
                }
                drop(shared);
                if num_established == 0 {
                    let _ = self.events.send(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if self.swarm.is_connected(&peer) {
                    self.connected(peer);
                } else {
                    self.fail(peer, Failure::Unreachable(super::describe(&error)));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            })) => {
                let Some(peer) = self.lookups.get(&id).copied() else {
                    return;
                };
                let found = match &result {
                    Ok(ok) => ok.peers.iter().find(|p| p.peer_id == peer),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                        peers.iter().find(|p| p.peer_id == peer)
                    }
                };
                if let Some(info) = found {
                    let addrs = info.addrs.clone();
                    self.lookups.remove(&id);
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                    tracing::debug!(%peer, ?addrs, "found the peer through routing");
                    self.dial_at(peer, addrs, false);
                } else if step.last {
                    self.lookups.remove(&id);
                    // The lookup may have taught the routing table its address anyway.
                    self.dial_at(peer, Vec::new(), false);
                }
            }
            _ => {}
        }
    }
}

/// Why a dial failed, for every handle waiting on it.
#[derive(Clone)]
enum Failure {
    NotFound,
    Unreachable(String),
}

impl Failure {
    fn into_error(self, peer: PeerId) -> NetError {
        match self {
            Failure::NotFound => NetError::NotFound { peer },
            Failure::Unreachable(reason) => NetError::Unreachable { peer, reason },
        }
    }
}
