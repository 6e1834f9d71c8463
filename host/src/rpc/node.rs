//! The node's capabilities over Cap'n Proto: the Membrane (the bootstrap capability), the
//! StatusPoller, and Host.
//!
//! Everything here runs on the thread of the RPC system ([`super::server`]): capabilities
//! are `Rc`, never shared across threads.

use std::cell::RefCell;

use capnp::capability::Rc;

use super::epoch::{Epoch, SessionEpoch, guarded};
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

/// What a node serves: its id, its epoch, and the executor its sessions get.
#[derive(Clone)]
pub struct Node {
    /// What `Host.id` answers.
    pub id: String,
    /// The membrane's epoch.
    pub epoch: Epoch,
    /// The executor sessions get; without one, `Host.executor` and `Session.executor` fail.
    pub executor: Option<ExecutorGrant>,
}

impl Node {
    /// A node with `id`, a fresh epoch and the executor power `executor`.
    pub fn new(id: impl Into<String>, executor: Option<ExecutorGrant>) -> Node {
        Node {
            id: id.into(),
            epoch: Epoch::new(),
            executor,
        }
    }
}

/// The id of a node that has no libp2p identity yet (issue 5 brings one): `ww-ephemeral-`
/// and 32 random hex digits, new at every run. It is not a peer id, and the prefix keeps
/// anyone from taking it for one (a libp2p peer id starts `12D3KooW` or `Qm`).
pub fn ephemeral_id() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: std's hasher keys are random per process; mix in time and pid.
        use std::hash::{BuildHasher as _, Hasher as _};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            hasher.write_u32(std::process::id());
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                hasher.write_u128(t.as_nanos());
            }
            chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ww-ephemeral-{hex}")
}

/// The node as its capabilities see it, on the RPC thread.
pub(crate) struct NodeState {
    id: String,
    epoch: Epoch,
    spawner: Option<RefCell<SpawnerState>>,
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
                // Cap'n Proto spawns never pass IPFS on (their options have no such field).
                ipfs: None,
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
            id: node.id,
            epoch: node.epoch,
            spawner: node
                .executor
                .map(|grant| RefCell::new(SpawnerState::new(grant))),
        }
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
}

impl MembraneServer {
    pub(crate) fn new(node: Rc<NodeState>) -> MembraneServer {
        MembraneServer { node }
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
        let mut session = results.get().init_session();
        session.reborrow().init_epoch().set_seq(epoch.issued());
        session.set_host(guarded(
            &epoch,
            HostServer {
                node: node.clone(),
                epoch: epoch.clone(),
            },
        ));
        if let Some(executor) = node.executor(&epoch) {
            session.set_executor(executor);
        }
        // Not guarded: it is how a client learns that its session went stale.
        session.set_status(capnp_rpc::new_client(StatusServer {
            epoch: node.epoch.clone(),
        }));
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
        results.get().set_peer_id(self.node.id.as_str());
        Ok(())
    }

    async fn addrs(
        self: Rc<Self>,
        _: host::AddrsParams,
        mut results: host::AddrsResults,
    ) -> Result<(), capnp::Error> {
        results.get().init_addrs(0);
        Ok(())
    }

    async fn peers(
        self: Rc<Self>,
        _: host::PeersParams,
        mut results: host::PeersResults,
    ) -> Result<(), capnp::Error> {
        results.get().init_peers(0);
        Ok(())
    }

    async fn connect(
        self: Rc<Self>,
        _: host::ConnectParams,
        _: host::ConnectResults,
    ) -> Result<(), capnp::Error> {
        Err(capnp::Error::unimplemented(
            "this node has no network yet: it cannot dial peers".into(),
        ))
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
