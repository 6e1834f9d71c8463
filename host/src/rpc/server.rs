//! The node's RPC system: one capnp-rpc two-party `RpcSystem` per connection, all on one
//! local task set, each bootstrapping the node's membrane.
//!
//! capnp-rpc is `!Send`, so the capabilities live on the thread of the tokio `LocalSet` that
//! [`RpcServer::start`] ran in. The [`RpcServer`] handle is `Send`: [`RpcServer::serve`] hands
//! a byte stream over a channel to that set, so it can be called from any task or thread
//! (a `tokio::spawn`ed cell task, a socket's accept loop).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use capnp::capability::Rc;
use capnp::message::ReaderOptions;
use capnp_rpc::{RpcSystem, rpc_twoparty_capnp::Side, twoparty};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::RpcError;
use super::epoch::Epoch;
use super::flow::{self, Budget, Limits};
use super::node::{Caller, ExecutorGrant, Exported, MembraneServer, Node, NodeState};
use super::schema::membrane_capnp::membrane;
use crate::executor::limits::MAX_PROGRAM_BYTES;
use crate::net::{Network, PeerStream};
use libp2p::PeerId;

/// The largest message a peer may send, in 8-byte words: room for a program of the largest
/// size a spawn accepts (64 MiB) plus 1 MiB of everything else. A larger message ends that
/// peer's connection, and only that one, from its header ([`flow`] reads it), before any of
/// it is read into memory.
pub const MAX_MESSAGE_WORDS: usize = ((MAX_PROGRAM_BYTES as usize) + (1 << 20)) / 8;

/// The deepest nesting of structs and lists a peer's message may have.
pub const MAX_NESTING: i32 = 64;

/// The limits every incoming message is read with.
pub fn reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(MAX_MESSAGE_WORDS))
        .nesting_limit(MAX_NESTING);
    options
}

/// A byte stream a peer speaks Cap'n Proto on.
trait Stream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Stream for T {}

/// What the handles send the local set.
enum Incoming {
    /// A connection to serve.
    Connection {
        stream: Pin<Box<dyn Stream>>,
        /// Who is at the other end.
        caller: Caller,
        /// Whether the peer's own bootstrap capability becomes the membrane the node serves.
        export: bool,
    },
    /// A new executor power for sessions (the image was reloaded).
    Regrant(ExecutorGrant),
}

/// A handle on the node's RPC system. Cheap to clone, `Send`; every clone serves the same
/// node.
#[derive(Clone)]
pub struct RpcServer {
    connections: mpsc::UnboundedSender<Incoming>,
    epoch: Epoch,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("epoch", &self.epoch.current())
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// Starts serving `node` on the current `LocalSet` (with `tokio::task::spawn_local`):
    /// must be called inside one, on the runtime that runs the node's cells. The node's
    /// capabilities live until every handle and every connection is gone; the children its
    /// sessions spawned are killed then.
    pub fn start(node: Node) -> RpcServer {
        let (connections, incoming) = mpsc::unbounded_channel();
        let epoch = node.epoch.clone();
        tokio::task::spawn_local(accept(node, incoming));
        RpcServer { connections, epoch }
    }

    /// Serves the node's membrane to `caller` at the other end of `stream`, as the bootstrap
    /// capability of a connection of its own: a peer that sends garbage, stalls or goes away
    /// ends only its own connection. Callable from any thread or task. `caller` must be who
    /// the node knows is there (it decides what a graft gives), never what the peer claims.
    pub fn serve<S>(&self, stream: S, caller: Caller) -> Result<(), RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.hand_over(Box::pin(stream), caller, false)
    }

    /// Like [`RpcServer::serve`] for one of the node's cells, and takes the cell's own
    /// bootstrap capability (a `Membrane`) as the membrane the node grafts onto for every
    /// client, until this connection ends. This is how pid0 exports its membrane.
    pub fn serve_exporting<S>(&self, stream: S) -> Result<(), RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.hand_over(Box::pin(stream), Caller::Cell, true)
    }

    fn hand_over(
        &self,
        stream: Pin<Box<dyn Stream>>,
        caller: Caller,
        export: bool,
    ) -> Result<(), RpcError> {
        self.connections
            .send(Incoming::Connection {
                stream,
                caller,
                export,
            })
            .map_err(|_| RpcError::Stopped)
    }

    /// Serves the node's membrane on every `/ww/0.1.0` stream peers open to `network`
    /// (within its per-peer limits), each as [`Caller::Peer`] with the peer id the
    /// connection authenticated, from a task on the current tokio runtime. With `allowed`,
    /// a stream from any other peer is dropped unread: it never reaches the membrane, let
    /// alone pid0.
    pub fn serve_peers(
        &self,
        network: &Network,
        allowed: Option<Arc<HashSet<PeerId>>>,
    ) -> Result<(), crate::net::NetError> {
        let mut incoming = network.incoming()?;
        let server = self.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                if allowed
                    .as_ref()
                    .is_some_and(|allowed| !allowed.contains(&peer))
                {
                    tracing::info!(%peer, "refused a /ww/0.1.0 stream: the peer is not allowed");
                    drop(stream);
                    continue;
                }
                tracing::debug!(%peer, "serving the membrane to a peer");
                if server
                    .serve(stream, Caller::Peer(peer.to_string()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Gives later sessions `grant` as their executor power instead of the one the node
    /// started with, and kills the children spawned through the old one. Sessions grafted
    /// before should be revoked too: advance the epoch.
    pub fn regrant(&self, grant: ExecutorGrant) -> Result<(), RpcError> {
        self.connections
            .send(Incoming::Regrant(grant))
            .map_err(|_| RpcError::Stopped)
    }

    /// The membrane's epoch: [`Epoch::advance`] revokes every session grafted so far.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }
}

/// Runs on the local set: starts one RPC system per stream handed over.
async fn accept(node: Node, mut incoming: mpsc::UnboundedReceiver<Incoming>) {
    let state = Rc::new(NodeState::new(node));
    let mut next: u64 = 0;
    while let Some(message) = incoming.recv().await {
        let (stream, caller, export) = match message {
            Incoming::Connection {
                stream,
                caller,
                export,
            } => (stream, caller, export),
            Incoming::Regrant(grant) => {
                state.regrant(grant);
                continue;
            }
        };
        next += 1;
        // Each connection's membrane knows who is at the other end.
        let membrane: membrane::Client =
            capnp_rpc::new_client(MembraneServer::new(state.clone(), caller));
        tokio::task::spawn_local(connection(
            next,
            stream,
            membrane,
            export.then(|| state.exported.clone()),
        ));
    }
}

/// A Cap'n Proto two-party network on `stream`, under [`flow`] control with the node's
/// limits and budget, reading with [`reader_options`]; `peer` names the other end in logs.
/// Every connection the node serves or dials is made here. Must be called on the RPC
/// system's thread: it spawns the task that writes to `stream` there.
fn vat_network<S>(
    stream: S,
    side: Side,
    peer: String,
) -> twoparty::VatNetwork<impl futures::AsyncRead + Unpin>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    // No buffering around these: the flow reader hands over whole frames from memory, and
    // the flow writer queues every write.
    let (reader, writer, pump) = flow::split(stream, peer, Limits::default(), Budget::node());
    tokio::task::spawn_local(pump);
    twoparty::VatNetwork::new(reader, writer, side, reader_options())
}

/// One peer's connection, to its end. With `exported`, the peer's bootstrap capability is
/// the membrane pid0 exports for as long as the connection lasts.
async fn connection(
    id: u64,
    stream: Pin<Box<dyn Stream>>,
    membrane: membrane::Client,
    exported: Option<Exported>,
) {
    tracing::debug!(connection = id, "Cap'n Proto peer connected");
    let network = vat_network(stream, Side::Server, format!("connection {id}"));
    let mut system = RpcSystem::new(Box::new(network), Some(membrane.client));
    if let Some(exported) = &exported {
        let theirs: membrane::Client = system.bootstrap(Side::Client);
        *exported.borrow_mut() = Some((id, theirs));
        tracing::info!(
            connection = id,
            "a cell exported its membrane; the node serves it now"
        );
    }
    match system.await {
        Ok(()) => tracing::debug!(connection = id, "Cap'n Proto peer disconnected"),
        Err(e) => tracing::debug!(connection = id, "Cap'n Proto connection ended: {e}"),
    }
    if let Some(exported) = exported {
        let mut current = exported.borrow_mut();
        if current.as_ref().is_some_and(|(from, _)| *from == id) {
            *current = None;
            tracing::info!(
                connection = id,
                "the exported membrane is gone; the node serves its own"
            );
        }
    }
}

/// The membrane of the peer at the other end of `stream` (a `/ww/0.1.0` stream this node
/// opened), as the client side of a connection of its own, run on the local set until the
/// peer ends it. Must be called on the RPC system's thread.
pub(crate) fn dial_membrane(peer: String, stream: PeerStream) -> membrane::Client {
    let network = vat_network(stream, Side::Client, peer.clone());
    let mut system = RpcSystem::new(Box::new(network), None);
    let membrane: membrane::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(async move {
        match system.await {
            Ok(()) => tracing::debug!(%peer, "the peer's membrane connection ended"),
            Err(e) => tracing::debug!(%peer, "the peer's membrane connection ended: {e}"),
        }
    });
    membrane
}

impl crate::caps::rpc::RpcHost for RpcServer {
    fn serve(&self, stream: tokio::io::DuplexStream, export: bool) -> Result<(), String> {
        let result = if export {
            self.serve_exporting(stream)
        } else {
            RpcServer::serve(self, stream, Caller::Cell)
        };
        result.map_err(|e| e.to_string())
    }

    fn advance_epoch(&self) -> Result<u64, String> {
        Ok(self.epoch.advance())
    }
}
