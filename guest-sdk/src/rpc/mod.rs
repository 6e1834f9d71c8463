//! Cap'n Proto to the host: the node's membrane, and a membrane of the cell's own.
//!
//! [`connect`] opens a two-party connection to the host's RPC system
//! (`ww:host/rpc.connect`, a pair of WASI streams) whose bootstrap capability is the
//! node's [`Membrane`](membrane::Client): [`graft`] it for a [`Session`] of capabilities
//! (`capnp/membrane.capnp`, `capnp/host.capnp`). [`export`] does the same while offering
//! a membrane the cell implements as its own bootstrap capability: pid0's becomes the
//! membrane the node serves to local clients (`ww run --rpc-socket`) and to peers.
//! [`export_caps`] is the short way to offer named capabilities ([`Export`]) that way, and
//! [`export_for`] and [`export_with`] choose them per graft from who grafts ([`Caller`]);
//! a client finds them in its session with [`Session::export`]. Before handing a
//! capability on, a cell can narrow it ([`Session::attenuate`]: only some methods, a rate,
//! an expiry, a [`Revoker`]), enforced by the node. A connection to a peer
//! ([`crate::net::connect`]) is the same [`Connection`], with the peer's membrane at the
//! far end.
//!
//! Cap'n Proto here is [`capnp_rpc`], single-threaded and asynchronous. This module runs it
//! on an executor of its own, [`block_on`], which waits in `wasi:io/poll` for the
//! connection's streams (and any other pollable a task [`wait`]s for): a cell serving
//! calls on an exported capability keeps serving them while it waits for a call of its
//! own, and an idle cell sleeps in the host. [`run`] is the short way: it connects, runs
//! the connection as a task and gives the membrane to a future of yours.
//!
//! ```no_run
//! use ww::rpc::capnp;
//!
//! let id = ww::rpc::run(|membrane| async move {
//!     let session = ww::rpc::graft(&membrane).await?;
//!     let host = session.host.ok_or_else(|| capnp::Error::failed("no host".into()))?;
//!     let reply = host.id_request().send().promise.await?;
//!     Ok::<_, capnp::Error>(reply.get()?.get_peer_id()?.to_string()?)
//! })??;
//! println!("the node is {id}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Many calls can be in flight at once: send them all, then await them
//! ([`futures::future::join_all`]). Implement a capability with the `Server` trait of its
//! interface in [`schema`] and [`capnp_rpc::new_client`]; the [`schema`] types are the
//! host's own generated code.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use capnp::capability::FromClientHook;
use capnp::message::ReaderOptions;
use capnp::traits::HasTypeId;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::io::BufReader;

use crate::bindings::ww::host::rpc as raw;

mod attenuate;
mod callers;
mod exports;
mod outgoing;
mod reactor;
pub mod schema;

pub use attenuate::{Attenuate, Revoker, attenuate};
pub use callers::Caller;
pub use exports::{Export, export_caps, export_for, export_with};
pub use reactor::{AsyncInputStream, AsyncOutputStream, Wait, block_on, sleep, spawn, wait};
pub use schema::counter_capnp::{counter, watcher};
pub use schema::host_capnp::{byte_stream, executor, host, process};
pub use schema::membrane_capnp::{attenuator, caller, membrane, policy, revoker, status_poller};

/// The `capnp` crate this module's types come from (messages, errors, capabilities).
pub use capnp;
/// The `capnp-rpc` crate this module runs (e.g. [`capnp_rpc::new_client`] to serve a
/// capability).
pub use capnp_rpc;

/// The largest message the connection takes, in words: the host's own limit, a 64 MiB
/// program plus 1 MiB.
const TRAVERSAL_LIMIT_WORDS: usize = 8_519_680;

/// How deep a message may nest, as on the host.
const NESTING_LIMIT: i32 = 64;

/// The read buffer between the connection's input stream and Cap'n Proto: 64 KiB, the
/// most the host passes at once.
const BUFFER: usize = 64 * 1024;

/// Why a connection, or the executor running it, failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RpcError {
    /// The host refused the connection (e.g. an export by a cell other than pid0).
    Connect(String),
    /// A connection to a peer ([`crate::net::connect`]) failed: a malformed peer id or
    /// address, a peer that cannot be found or reached, a refused stream, or a cell that
    /// does not hold the network capability. The host's message says which.
    Dial(String),
    /// Nothing could progress and nothing was waited for: the future given to
    /// [`block_on`] could never complete.
    Deadlock,
    /// [`block_on`] was called inside [`block_on`].
    Nested,
    /// A Cap'n Proto call or the connection failed.
    Capnp(capnp::Error),
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Connect(why) => write!(f, "connecting to the host's RPC system: {why}"),
            RpcError::Dial(why) => write!(f, "connecting to the peer: {why}"),
            RpcError::Deadlock => f.write_str(
                "deadlock: no task can progress and none waits for anything that could wake it",
            ),
            RpcError::Nested => f.write_str("ww::rpc::block_on called inside ww::rpc::block_on"),
            RpcError::Capnp(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RpcError::Capnp(e) => Some(e),
            _ => None,
        }
    }
}

impl From<capnp::Error> for RpcError {
    fn from(e: capnp::Error) -> RpcError {
        RpcError::Capnp(e)
    }
}

/// One two-party Cap'n Proto connection, to the host's RPC system ([`connect`],
/// [`export`]) or to a peer ([`crate::net::connect`]): the membrane at its far end, and the
/// [`Driver`] that runs the connection.
///
/// Nothing moves on the connection until its driver runs: [`spawn`](Connection::spawn) it
/// inside [`block_on`], or take it with [`into_parts`](Connection::into_parts) and await it
/// alongside your own future.
pub struct Connection {
    membrane: membrane::Client,
    driver: Driver,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// The far end's bootstrap capability: the node's membrane on a connection to the host,
    /// the peer's on a connection to a peer.
    pub fn membrane(&self) -> membrane::Client {
        self.membrane.clone()
    }

    /// The membrane and the connection's driver, apart.
    pub fn into_parts(self) -> (membrane::Client, Driver) {
        (self.membrane, self.driver)
    }

    /// Runs the connection as a task of the running [`block_on`] (until the far end ends
    /// it, or that `block_on` returns) and gives the membrane.
    ///
    /// # Panics
    ///
    /// Outside [`block_on`].
    pub fn spawn(self) -> membrane::Client {
        let (membrane, driver) = self.into_parts();
        spawn(async move {
            if let Err(e) = driver.await {
                crate::debug!("a connection ended: {e}");
            }
        });
        membrane
    }

    /// Runs Cap'n Proto over the cell's ends of a connection the host opened (`ww:host/rpc`
    /// or `ww:host/net`), with the host's bounds on every message, offering `own` as this
    /// side's bootstrap capability. The far end's bootstrap capability is a membrane.
    ///
    /// Every connection is made here: [`connect`], [`export`] and [`crate::net::connect`].
    pub(crate) fn over(streams: raw::Connection, own: Option<membrane::Client>) -> Connection {
        let input = BufReader::with_capacity(BUFFER, AsyncInputStream::new(streams.input));
        let (output, pump) = outgoing::outgoing(streams.output);
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(Some(TRAVERSAL_LIMIT_WORDS))
            .nesting_limit(NESTING_LIMIT);
        let network = twoparty::VatNetwork::new(input, output, Side::Client, options);
        let mut system = RpcSystem::new(Box::new(network), own.map(|m| m.client));
        let membrane: membrane::Client = system.bootstrap(Side::Server);
        Connection {
            membrane,
            driver: Driver {
                system,
                pump: Some(pump),
            },
        }
    }
}

/// Runs one connection: sends the calls its capabilities make, receives the answers, and
/// serves the calls the far end makes on the cell's own capabilities. Completes when the
/// connection ends.
#[must_use = "a connection does nothing unless its driver runs"]
pub struct Driver {
    system: RpcSystem<Side>,
    /// Passes what the system writes on to the connection's output stream; `None` once
    /// done.
    pump: Option<outgoing::Pump>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = Result<(), capnp::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The system first: what it writes now goes out in the same poll.
        let done = Pin::new(&mut self.system).poll(cx);
        if let Some(pump) = &mut self.pump
            && let Poll::Ready(result) = pump.poll_pump(cx)
        {
            // A failed stream fails the system's next write, which ends it.
            if let Err(e) = result {
                crate::debug!("writing to the connection: {e}");
            }
            self.pump = None;
        }
        done
    }
}

/// Opens a connection to the host's RPC system; its bootstrap capability is the node's
/// membrane.
///
/// Any cell may connect, and more than once. The connection's streams are driven by
/// [`block_on`]: await its calls there.
pub fn connect() -> Result<Connection, RpcError> {
    open(false, None)
}

/// Opens a connection as [`connect`] does, offering `membrane` as the cell's bootstrap
/// capability: the host serves it as the node's membrane to local clients
/// (`ww run --rpc-socket`) for as long as the connection lasts. The connection's own
/// [`membrane`](Connection::membrane) is still the host's.
///
/// Only pid0 may export; the host refuses any other cell ([`RpcError::Connect`]).
pub fn export(membrane: membrane::Client) -> Result<Connection, RpcError> {
    open(true, Some(membrane))
}

/// Opens a connection to the host's RPC system, exporting `own` when `export`.
fn open(export: bool, own: Option<membrane::Client>) -> Result<Connection, RpcError> {
    let streams = raw::connect(export).map_err(RpcError::Connect)?;
    Ok(Connection::over(streams, own))
}

/// Connects ([`connect`]), runs the connection and `body` with the node's membrane on
/// [`block_on`], and returns what `body` gives.
///
/// The connection ends when `body` completes: await every call whose effect matters
/// before then (a call sent and not awaited may never reach the host).
pub fn run<F, Fut>(body: F) -> Result<Fut::Output, RpcError>
where
    F: FnOnce(membrane::Client) -> Fut,
    Fut: Future,
{
    block_on(async move {
        let membrane = connect()?.spawn();
        Ok(body(membrane).await)
    })?
}

/// The capabilities of one graft, owned.
///
/// What a session holds depends on who grafts and onto what. A cell's own session (pid0,
/// or any cell, grafting the node's membrane: [`connect`], [`export`]) has a host, an
/// executor when the cell may spawn, and an attenuator. A session from a membrane pid0
/// exports holds what that membrane gave, which may be no host and no executor at all; a
/// network peer's session from a node whose pid0 exports none has a host that answers only
/// `id`, `addrs` and `peers`, and no executor.
#[derive(Clone)]
pub struct Session {
    /// The epoch the session was issued in. Once the membrane's epoch moves past it, every
    /// call on a client's session (`host`, `executor`, the exports, and what they gave)
    /// fails with [`capnp::ErrorKind::Disconnected`]: graft again. A cell's own session is
    /// not revoked by the epoch.
    pub epoch: u64,
    /// The node, or `None` when the session has none (see [`Session`]).
    pub host: Option<host::Client>,
    /// The executor of the cell that holds the membrane (pid0's for the node's), or `None`
    /// when the session has none.
    pub executor: Option<executor::Client>,
    /// Watches the membrane's epoch; never revoked.
    pub status: status_poller::Client,
    /// The capabilities the membrane's cell exports, by name (see [`export_caps`]); empty
    /// when it exports none. Revoked with the session, as `host` and `executor` are.
    pub exports: Vec<Export>,
    /// Narrows capabilities before the cell hands them on ([`Session::attenuate`]): in a
    /// cell's own session only, `None` elsewhere.
    pub attenuator: Option<attenuator::Client>,
}

impl Session {
    /// The export named `name`, as the interface `C` (e.g. [`counter::Client`]), or `None`
    /// when the session has no export of that name. The first one wins when several share
    /// it.
    ///
    /// The cast is not checked: a capability of another interface fails each call (with
    /// [`capnp::ErrorKind::Unimplemented`]).
    pub fn export<C: FromClientHook>(&self, name: &str) -> Option<C> {
        self.exports
            .iter()
            .find(|export| export.name == name)
            .map(|export| export.cap.clone().cast_to())
    }

    /// Starts narrowing `cap` with the session's [`attenuator`](Session::attenuator) (see
    /// [`Attenuate`]); building it fails when the session has none.
    pub fn attenuate<C: FromClientHook + HasTypeId>(&self, cap: C) -> Attenuate<C> {
        Attenuate::new(self.attenuator.clone(), cap)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exports: Vec<&str> = self.exports.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Session")
            .field("epoch", &self.epoch)
            .field("host", &self.host.is_some())
            .field("executor", &self.executor.is_some())
            .field("exports", &exports)
            .field("attenuator", &self.attenuator.is_some())
            .finish_non_exhaustive()
    }
}

/// Grafts onto `membrane`: a [`Session`] in its current epoch.
pub async fn graft(membrane: &membrane::Client) -> Result<Session, capnp::Error> {
    let reply = membrane.graft_request().send().promise.await?;
    let session = reply.get()?.get_session()?;
    // An unset capability reads as an error, not as a capability that fails: ask first.
    Ok(Session {
        epoch: session.get_epoch()?.get_seq(),
        host: session.has_host().then(|| session.get_host()).transpose()?,
        executor: session
            .has_executor()
            .then(|| session.get_executor())
            .transpose()?,
        status: session.get_status()?,
        exports: exports_of(session)?,
        attenuator: session
            .has_attenuator()
            .then(|| session.get_attenuator())
            .transpose()?,
    })
}

/// The exports of a session, in order; none when it has no such field (a session from an
/// older node reads as an empty list).
fn exports_of(
    session: schema::membrane_capnp::session::Reader<'_>,
) -> Result<Vec<Export>, capnp::Error> {
    let mut exports = Vec::new();
    for export in session.get_exports()? {
        exports.push(Export {
            name: export.get_name()?.to_string()?,
            cap: export.get_cap().get_as_capability()?,
        });
    }
    Ok(exports)
}

/// Advances the node's membrane epoch, revoking every capability of every session grafted
/// before (theirs fail with [`capnp::ErrorKind::Disconnected`] from then on), and returns
/// the new epoch. Only pid0 may; the host refuses any other cell.
pub fn advance_epoch() -> Result<u64, String> {
    raw::advance_epoch()
}
