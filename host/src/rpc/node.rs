//! The node's capabilities over Cap'n Proto: the Membrane (the bootstrap capability), the
//! StatusPoller, and Host.
//!
//! The membrane a peer grafts onto is always the node's own, so that everything a session
//! holds is revoked with it: when pid0 has exported a membrane, a graft grafts onto it too,
//! and the session takes its Host and Executor (when it gave them) and its exports, each
//! behind the epoch guard ([`super::epoch::guard`]); the epoch and the StatusPoller are the
//! node's. pid0's own connections get the node's membrane without its exports (pid0's
//! membrane grafts onto the node's: forwarding there would go round in a circle).
//!
//! Everything here runs on the thread of the RPC system ([`super::server`]): capabilities
//! are `Rc`, never shared across threads.

use std::cell::RefCell;

use capnp::capability::Rc;

use super::epoch::{Epoch, SessionEpoch, guard, guarded};
use super::process::ExecutorServer;
use super::schema::host_capnp::{executor, host};
use super::schema::membrane_capnp::{membrane, status_poller};
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

/// What a node serves: its network (and with it its id), its epoch, and the executor its
/// sessions get.
#[derive(Clone)]
pub struct Node {
    /// The membrane's epoch.
    pub epoch: Epoch,
    /// The executor sessions get; without one, `Host.executor` and `Session.executor` fail.
    pub executor: Option<ExecutorGrant>,
    /// The network: `Host.id`, `addrs`, `peers` and `connect` answer from it (waiting for
    /// it to start, if it has not yet).
    pub network: Starting,
}

impl Node {
    /// The node on `network`, with a fresh epoch and the executor power `executor`.
    pub fn new(network: Starting, executor: Option<ExecutorGrant>) -> Node {
        Node {
            epoch: Epoch::new(),
            executor,
            network,
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

    fn executor(self: &Rc<Self>, epoch: &SessionEpoch) -> Option<executor::Client> {
        self.spawner.as_ref()?;
        Some(guarded(
            epoch,
            ExecutorServer::new(self.clone(), epoch.clone()),
        ))
    }
}

/// The bootstrap capability: `graft` gives a session in the current epoch.
pub(crate) struct MembraneServer {
    node: Rc<NodeState>,
    /// Whether grafts take pid0's exported membrane into account.
    forward: bool,
}

impl MembraneServer {
    /// The node's membrane; with `forward`, sessions carry what pid0's exported membrane
    /// gives.
    pub(crate) fn new(node: Rc<NodeState>, forward: bool) -> MembraneServer {
        MembraneServer { node, forward }
    }
}

impl membrane::Server for MembraneServer {
    async fn graft(
        self: Rc<Self>,
        _: membrane::GraftParams,
        mut results: membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let node = &self.node;
        let exported = self
            .forward
            .then(|| node.exported.borrow().as_ref().map(|(_, m)| m.clone()))
            .flatten();
        let theirs = match exported {
            Some(membrane) => Some(membrane.graft_request().send().promise.await?),
            None => None,
        };
        let theirs = match &theirs {
            Some(response) => Some(response.get()?.get_session()?),
            None => None,
        };
        let epoch = node.epoch.issue();
        let mut session = results.get().init_session();
        session.reborrow().init_epoch().set_seq(epoch.issued());
        match theirs.filter(|s| s.has_host()) {
            Some(s) => session.set_host(host::Client {
                client: guard(&epoch, s.get_host()?.client),
            }),
            None => session.set_host(guarded(
                &epoch,
                HostServer {
                    node: node.clone(),
                    epoch: epoch.clone(),
                },
            )),
        }
        match theirs.filter(|s| s.has_executor()) {
            Some(s) => session.set_executor(executor::Client {
                client: guard(&epoch, s.get_executor()?.client),
            }),
            None => {
                if let Some(executor) = node.executor(&epoch) {
                    session.set_executor(executor);
                }
            }
        }
        // Not guarded: it is how a client learns that its session went stale.
        session.set_status(capnp_rpc::new_client(StatusServer {
            epoch: node.epoch.clone(),
        }));
        if let Some(theirs) = theirs.filter(|s| s.has_exports()) {
            let exports = theirs.get_exports()?;
            let mut list = session.init_exports(exports.len());
            for (i, export) in exports.iter().enumerate() {
                let mut entry = list.reborrow().get(i as u32);
                entry.set_name(export.get_name()?);
                let cap: capnp::capability::Client = export.get_cap().get_as_capability()?;
                entry.init_cap().set_as_capability(guard(&epoch, cap).hook);
            }
        }
        tracing::debug!(epoch = epoch.issued(), "grafted a session");
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
    epoch: SessionEpoch,
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
        match self.node.executor(&self.epoch) {
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
