//! The node's capabilities over Cap'n Proto: the Membrane (the bootstrap capability), the
//! StatusPoller, and Host.
//!
//! Each connection bootstraps a [`MembraneServer`] that knows who is at the other end (a
//! [`Caller`]). What a graft gives depends on that and on pid0, and nothing else:
//!
//! - the node's own cells (pid0's bridge, a native pid0's fd 3) get the node's Host, pid0's
//!   Executor and an Attenuator, not bound to the epoch (they are pid0's own authority);
//! - a client (`--rpc-socket`, a network peer), when pid0 exports a membrane, gets exactly
//!   the session pid0's membrane gives for that caller, which the node grafts onto with the
//!   caller filled in;
//! - a client when pid0 exports none: a socket client (the operator) the node's Host and
//!   pid0's Executor; a network peer what `--peer-session` says ([`PeerSession`]: by default
//!   a Host narrowed to `id`, `addrs` and `peers`, never anything that runs programs).
//!
//! Every session handed to a client is issued in the current epoch and everything in it is
//! put behind a membrane of its own ([`super::membrane`]) bound to that epoch: whatever is
//! reached through it later (results, pipelined capabilities, what `Host.connect` dials, and
//! what the client passes in) crosses the same membrane and is revoked with it. The epoch
//! and the StatusPoller are the node's and never revoked.
//!
//! Everything here runs on the thread of the RPC system ([`super::server`]): capabilities
//! are `Rc`, never shared across threads.

use std::cell::RefCell;
use std::collections::HashMap;

use capnp::capability::Rc;

use super::attenuate::AttenuatorServer;
use super::epoch::{Epoch, SessionEpoch};
use super::membrane::{Membrane, Policy, Tally, copy_through};
use super::process::ExecutorServer;
use super::schema::host_capnp::{executor, host};
use super::schema::membrane_capnp::{caller, membrane, status_poller};
use super::schema::methods;
use crate::caps::CellInfo;
use crate::caps::fd::FdGrants;
use crate::executor::Executor;
use crate::executor::cell::Spawner;
use crate::executor::limits::Limits;
use crate::executor::process::Children;
use crate::executor::stdio::Stdio;
use crate::net::{self, Network, Starting};

/// The executor power of one cell, as the node hands it to its sessions: children spawned
/// through it are that cell's, programs given by path come from its filesystem, and its
/// limits bound theirs.
#[derive(Clone)]
pub struct ExecutorGrant {
    executor: Executor,
    info: CellInfo,
    limits: Limits,
    stdio: Stdio,
}

impl ExecutorGrant {
    /// The executor power of the cell described by `info`, bound by `limits`: `stdio` is what
    /// a child that asks to `inherit` a stream gets (the cell's own streams).
    pub fn new(executor: Executor, info: CellInfo, limits: Limits, stdio: Stdio) -> ExecutorGrant {
        ExecutorGrant {
            executor,
            info,
            limits,
            stdio,
        }
    }
}

/// Who is at the other end of a connection the node serves: what its grafts are told
/// (`Caller` in `capnp/membrane.capnp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client of `--rpc-socket`.
    Socket,
    /// A network peer, by its authenticated libp2p peer id (base58).
    Peer(String),
    /// One of the node's own cells: pid0's bridge, a native pid0's fd 3.
    Cell,
}

impl Caller {
    fn write(&self, mut to: caller::Builder<'_>) {
        match self {
            Caller::Socket => to.set_socket(()),
            Caller::Peer(id) => to.set_peer(id.as_str()),
            Caller::Cell => to.set_cell(()),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Socket => f.write_str("the RPC socket"),
            Caller::Peer(id) => write!(f, "peer {id}"),
            Caller::Cell => f.write_str("a cell"),
        }
    }
}

/// What a network peer's session holds when pid0 exports no membrane (`--peer-session`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerSession {
    /// Nothing but the epoch and the StatusPoller.
    Nothing,
    /// A Host narrowed to `id`, `addrs` and `peers`: no dialing, no executor.
    #[default]
    Info,
    /// What a `--rpc-socket` client gets: the Host and pid0's Executor. Anyone who can
    /// graft can then run programs on the node.
    Full,
}

/// What a node serves: its network (and with it its id), its epoch, the executor its
/// sessions get, and what network peers get.
#[derive(Clone)]
pub struct Node {
    /// The membrane's epoch.
    pub epoch: Epoch,
    /// The executor sessions get; without one, `Host.executor` and `Session.executor` fail.
    pub executor: Option<ExecutorGrant>,
    /// The network: `Host.id`, `addrs`, `peers` and `connect` answer from it (waiting for
    /// it to start, if it has not yet).
    pub network: Starting,
    /// A network peer's session when pid0 exports no membrane.
    pub peer_session: PeerSession,
}

impl Node {
    /// The node on `network`, with a fresh epoch and the executor power `executor`; network
    /// peers get [`PeerSession::Info`].
    pub fn new(network: Starting, executor: Option<ExecutorGrant>) -> Node {
        Node {
            epoch: Epoch::new(),
            executor,
            network,
            peer_session: PeerSession::default(),
        }
    }
}

/// The membrane a cell exported, and the connection it came on.
pub(crate) type Exported = Rc<RefCell<Option<(u64, membrane::Client)>>>;

/// The node as its capabilities see it, on the RPC thread.
pub(crate) struct NodeState {
    epoch: Epoch,
    spawner: Option<RefCell<SpawnerState>>,
    network: Starting,
    peer_session: PeerSession,
    /// Counts every client session alive on the node.
    sessions: Tally,
    /// Counts the sessions of each network peer, by peer id (an entry that counts none is
    /// dropped when the next peer's entry is made).
    peer_sessions: RefCell<HashMap<String, Tally>>,
    /// Counts every attenuated capability alive on the node.
    attenuations: Tally,
    /// pid0's exported membrane, while its exporting connection lasts.
    pub(crate) exported: Exported,
}

/// A cell's spawning power, as `executor::host::spawn_child` takes it.
pub(crate) struct SpawnerState {
    pub spawner: Spawner,
    pub info: CellInfo,
    pub fds: FdGrants,
}

impl SpawnerState {
    fn new(grant: ExecutorGrant) -> SpawnerState {
        SpawnerState {
            spawner: Spawner {
                executor: Some(grant.executor),
                limits: grant.limits,
                stdio: grant.stdio,
                // The sessions' children: killed when the grant is replaced or the node's
                // RPC system ends.
                children: Children::default(),
                // Cap'n Proto spawns never pass IPFS or the network on (their options have no
                // such fields).
                ipfs: None,
                network: None,
                // Children of sessions are children of pid0.
                depth: 0,
            },
            info: grant.info,
            // Cap'n Proto cannot pass fds: children spawned through it get none.
            fds: FdGrants::default(),
        }
    }
}

impl NodeState {
    pub(crate) fn new(node: Node) -> NodeState {
        NodeState {
            epoch: node.epoch,
            spawner: node
                .executor
                .map(|grant| RefCell::new(SpawnerState::new(grant))),
            network: node.network,
            peer_session: node.peer_session,
            sessions: Tally::default(),
            peer_sessions: RefCell::default(),
            attenuations: Tally::default(),
            exported: Exported::default(),
        }
    }

    /// The network, once started.
    async fn network(&self) -> Result<Network, capnp::Error> {
        self.network
            .network()
            .await
            .map_err(|e| capnp::Error::failed(format!("the node's network: {e}")))
    }

    /// Hands sessions a new cell's executor power (after the image was reloaded), killing
    /// the children spawned through the old one.
    pub(crate) fn regrant(&self, grant: ExecutorGrant) {
        if let Some(spawner) = &self.spawner {
            *spawner.borrow_mut() = SpawnerState::new(grant);
        }
    }

    pub(crate) fn spawner(&self) -> Option<&RefCell<SpawnerState>> {
        self.spawner.as_ref()
    }

    fn executor(self: &Rc<Self>) -> Option<executor::Client> {
        self.spawner.as_ref()?;
        Some(capnp_rpc::new_client(ExecutorServer::new(self.clone())))
    }

    /// What counts the sessions of `caller`: a peer's over all its connections, anyone
    /// else's per connection.
    fn client_tally(&self, caller: &Caller) -> Tally {
        let Caller::Peer(id) = caller else {
            return Tally::default();
        };
        let mut peers = self.peer_sessions.borrow_mut();
        if !peers.contains_key(id) {
            peers.retain(|_, tally| tally.count() > 0);
        }
        peers.entry(id.clone()).or_default().clone()
    }

    fn host(self: &Rc<Self>) -> host::Client {
        capnp_rpc::new_client(HostServer { node: self.clone() })
    }
}

/// The most sessions one client may hold at once: a socket connection, or a network peer
/// over all its connections and streams together (a session lives while the client holds
/// anything it gave). Each costs the node a few KiB; past this a graft fails OVERLOADED
/// until the client releases some.
pub const MAX_SESSIONS_PER_CONNECTION: usize = 1024;

/// The most client sessions alive on the node at once, whoever holds them (many peer ids
/// cost an attacker nothing): past it a graft fails OVERLOADED, and memory stays bounded.
pub const MAX_SESSIONS: usize = 16_384;

/// The bootstrap capability of one connection: `graft` gives a session in the current
/// epoch, for the caller at the other end.
pub(crate) struct MembraneServer {
    node: Rc<NodeState>,
    caller: Caller,
    /// Counts the client's live sessions (shared by a peer's connections).
    sessions: Tally,
}

impl MembraneServer {
    /// The node's membrane as `caller` reaches it.
    pub(crate) fn new(node: Rc<NodeState>, caller: Caller) -> MembraneServer {
        let sessions = node.client_tally(&caller);
        MembraneServer {
            node,
            caller,
            sessions,
        }
    }

    /// The session of one of the node's own cells: the node's Host, pid0's Executor and an
    /// Attenuator, not bound to the epoch.
    fn cell_session(&self, mut session: super::schema::membrane_capnp::session::Builder<'_>) {
        let node = &self.node;
        session.set_host(node.host());
        if let Some(executor) = node.executor() {
            session.set_executor(executor);
        }
        session.set_attenuator(capnp_rpc::new_client(AttenuatorServer {
            alive: node.attenuations.clone(),
        }));
    }
}

impl MembraneServer {
    /// The session of a client (the socket, a peer) in `epoch`, into `results`: what pid0's
    /// exported membrane gives this caller, or else the node's defaults, all behind a
    /// membrane bound to the epoch. The epoch and status are set by the caller.
    async fn client_session(
        &self,
        epoch: SessionEpoch,
        results: &mut membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let node = &self.node;
        if self.sessions.count() >= MAX_SESSIONS_PER_CONNECTION {
            return Err(capnp::Error::overloaded(format!(
                "{} holds {MAX_SESSIONS_PER_CONNECTION} sessions; release some (drop what \
                 they gave) before grafting again",
                self.caller
            )));
        }
        if node.sessions.count() >= MAX_SESSIONS {
            return Err(capnp::Error::overloaded(format!(
                "the node holds {MAX_SESSIONS} sessions; graft again later"
            )));
        }
        // Everything a client's session holds is behind a membrane bound to this epoch.
        let membrane = Membrane::new(Policy {
            epoch: Some(epoch),
            tally: vec![self.sessions.clone(), node.sessions.clone()],
            ..Policy::default()
        });
        let exported = node.exported.borrow().as_ref().map(|(_, m)| m.clone());
        if let Some(exported) = exported {
            let mut request = exported.graft_request();
            self.caller.write(request.get().init_caller());
            let theirs = request.send().promise.await?;
            // The whole of pid0's answer, every capability in it passing out through the
            // session's membrane.
            copy_through(theirs.hook.get()?, results.hook.get()?, |cap| {
                membrane.pass_out(cap)
            })?;
            if !results.get().has_session() {
                results.get().init_session();
            }
            return Ok(());
        }
        let mut session = results.get().init_session();
        let full =
            !matches!(self.caller, Caller::Peer(_)) || node.peer_session == PeerSession::Full;
        if full {
            session.set_host(membrane.wrap(node.host()));
            if let Some(executor) = node.executor() {
                session.set_executor(membrane.wrap(executor));
            }
        } else if node.peer_session == PeerSession::Info {
            let host = <host::Client as capnp::traits::HasTypeId>::TYPE_ID;
            let info = ["id", "addrs", "peers"]
                .into_iter()
                .filter_map(|name| Some((host, methods::method_id(host, name)?)))
                .collect();
            session.set_host(membrane.wrap_allowing(node.host(), info));
        }
        Ok(())
    }
}

impl membrane::Server for MembraneServer {
    async fn graft(
        self: Rc<Self>,
        _: membrane::GraftParams,
        mut results: membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let node = &self.node;
        let epoch = node.epoch.issue();
        let issued = epoch.issued();
        let status: status_poller::Client = capnp_rpc::new_client(StatusServer {
            epoch: node.epoch.clone(),
        });
        if self.caller == Caller::Cell {
            self.cell_session(results.get().init_session());
        } else {
            self.client_session(epoch, &mut results).await?;
        }
        // The node's, whatever pid0 said: the epoch the membrane enforces (cells' sessions
        // are not bound to it), and the poller (never revoked) that tells when it passes.
        let mut session = results.get().get_session()?;
        session.reborrow().init_epoch().set_seq(issued);
        session.set_status(status);
        tracing::debug!(epoch = issued, caller = %self.caller, "grafted a session");
        Ok(())
    }
}

/// Watches the membrane's epoch; never revoked.
struct StatusServer {
    epoch: Epoch,
}

impl status_poller::Server for StatusServer {
    async fn current(
        self: Rc<Self>,
        _: status_poller::CurrentParams,
        mut results: status_poller::CurrentResults,
    ) -> Result<(), capnp::Error> {
        results.get().init_epoch().set_seq(self.epoch.current());
        Ok(())
    }

    async fn changed(
        self: Rc<Self>,
        params: status_poller::ChangedParams,
        mut results: status_poller::ChangedResults,
    ) -> Result<(), capnp::Error> {
        let since = params.get()?.get_since()?.get_seq();
        let now = self.epoch.changed(since).await;
        results.get().init_epoch().set_seq(now);
        Ok(())
    }
}

/// The Host capability of one session.
struct HostServer {
    node: Rc<NodeState>,
}

impl host::Server for HostServer {
    async fn id(
        self: Rc<Self>,
        _: host::IdParams,
        mut results: host::IdResults,
    ) -> Result<(), capnp::Error> {
        let network = self.node.network().await?;
        results.get().set_peer_id(network.id());
        Ok(())
    }

    async fn addrs(
        self: Rc<Self>,
        _: host::AddrsParams,
        mut results: host::AddrsResults,
    ) -> Result<(), capnp::Error> {
        let addrs = self.node.network().await?.addrs();
        let mut list = results.get().init_addrs(addrs.len() as u32);
        for (i, addr) in addrs.iter().enumerate() {
            list.set(i as u32, addr.to_string().as_str());
        }
        Ok(())
    }

    async fn peers(
        self: Rc<Self>,
        _: host::PeersParams,
        mut results: host::PeersResults,
    ) -> Result<(), capnp::Error> {
        let peers = self.node.network().await?.peers();
        let mut list = results.get().init_peers(peers.len() as u32);
        for (i, peer) in peers.iter().enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_id(peer.id.to_string().as_str());
            let mut addrs = entry.init_addrs(peer.addrs.len() as u32);
            for (j, addr) in peer.addrs.iter().enumerate() {
                addrs.set(j as u32, addr.to_string().as_str());
            }
        }
        Ok(())
    }

    async fn connect(
        self: Rc<Self>,
        params: host::ConnectParams,
        mut results: host::ConnectResults,
    ) -> Result<(), capnp::Error> {
        let network = self.node.network().await?;
        let params = params.get()?;
        let failed = |e: net::NetError| capnp::Error::failed(e.to_string());
        let peer = net::parse_peer_id(params.get_peer_id()?.to_str()?).map_err(failed)?;
        let addrs = params
            .get_addrs()?
            .iter()
            .map(|addr| net::parse_addr(addr?.to_str()?).map_err(failed))
            .collect::<Result<Vec<_>, capnp::Error>>()?;
        let stream = network.open(peer, addrs).await.map_err(failed)?;
        results
            .get()
            .set_membrane(super::server::dial_membrane(peer.to_string(), stream));
        Ok(())
    }

    async fn executor(
        self: Rc<Self>,
        _: host::ExecutorParams,
        mut results: host::ExecutorResults,
    ) -> Result<(), capnp::Error> {
        match self.node.executor() {
            Some(executor) => {
                results.get().set_executor(executor);
                Ok(())
            }
            None => Err(capnp::Error::failed(
                "this session's cell holds no executor".into(),
            )),
        }
    }
}
