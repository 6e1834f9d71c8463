//! Cap'n Proto to the host: the node's membrane, and a membrane of the cell's own.
//!
//! [`connect`] opens a two-party connection to the host's RPC system
//! (`ww:host/rpc.connect`, a pair of WASI streams) whose bootstrap capability is the
//! node's [`Membrane`](membrane::Client): [`graft`] it for a [`Session`] of capabilities
//! (`capnp/membrane.capnp`, `capnp/host.capnp`). [`export`] does the same while offering
//! a membrane the cell implements as its own bootstrap capability: pid0's becomes the
//! membrane the node serves (`ww run --rpc-socket`).
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
//!     let reply = session.host.id_request().send().promise.await?;
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

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::io::BufReader;

use crate::bindings::ww::host::rpc as raw;

mod outgoing;
mod reactor;
pub mod schema;

pub use reactor::{AsyncInputStream, AsyncOutputStream, Wait, block_on, sleep, spawn, wait};
pub use schema::host_capnp::{byte_stream, executor, host, process};
pub use schema::membrane_capnp::{membrane, status_poller};

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

/// One connection to the host's RPC system: the node's membrane, and the [`Driver`] that
/// runs the connection.
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
    /// The node's membrane (the host's bootstrap capability on this connection).
    pub fn membrane(&self) -> membrane::Client {
        self.membrane.clone()
    }

    /// The membrane and the connection's driver, apart.
    pub fn into_parts(self) -> (membrane::Client, Driver) {
        (self.membrane, self.driver)
    }

    /// Runs the connection as a task of the running [`block_on`] (until the host ends it,
    /// or that `block_on` returns) and gives the membrane.
    ///
    /// # Panics
    ///
    /// Outside [`block_on`].
    pub fn spawn(self) -> membrane::Client {
        let (membrane, driver) = self.into_parts();
        spawn(async move {
            if let Err(e) = driver.await {
                crate::debug!("the connection to the host ended: {e}");
            }
        });
        membrane
    }
}

/// Runs one connection: sends the calls its capabilities make, receives the answers, and
/// serves the calls the host makes on the cell's own capabilities. Completes when the
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
                crate::debug!("writing to the host: {e}");
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

fn open(export: bool, own: Option<membrane::Client>) -> Result<Connection, RpcError> {
    let connection = raw::connect(export).map_err(RpcError::Connect)?;
    let input = BufReader::with_capacity(BUFFER, AsyncInputStream::new(connection.input));
    let (output, pump) = outgoing::outgoing(connection.output);
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(TRAVERSAL_LIMIT_WORDS))
        .nesting_limit(NESTING_LIMIT);
    let network = twoparty::VatNetwork::new(input, output, Side::Client, options);
    let mut system = RpcSystem::new(Box::new(network), own.map(|m| m.client));
    let membrane: membrane::Client = system.bootstrap(Side::Server);
    Ok(Connection {
        membrane,
        driver: Driver {
            system,
            pump: Some(pump),
        },
    })
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
#[derive(Clone)]
pub struct Session {
    /// The epoch the session was issued in. Once the membrane's epoch moves past it, every
    /// call on `host`, `executor` and what they gave fails with
    /// [`capnp::ErrorKind::Disconnected`]: graft again.
    pub epoch: u64,
    /// The node.
    pub host: host::Client,
    /// The executor of the cell that holds the membrane (pid0's for the node's).
    pub executor: executor::Client,
    /// Watches the membrane's epoch; never revoked.
    pub status: status_poller::Client,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Grafts onto `membrane`: a [`Session`] in its current epoch.
pub async fn graft(membrane: &membrane::Client) -> Result<Session, capnp::Error> {
    let reply = membrane.graft_request().send().promise.await?;
    let session = reply.get()?.get_session()?;
    Ok(Session {
        epoch: session.get_epoch()?.get_seq(),
        host: session.get_host()?,
        executor: session.get_executor()?,
        status: session.get_status()?,
    })
}

/// Advances the node's membrane epoch, revoking every capability of every session grafted
/// before (theirs fail with [`capnp::ErrorKind::Disconnected`] from then on), and returns
/// the new epoch. Only pid0 may; the host refuses any other cell.
pub fn advance_epoch() -> Result<u64, String> {
    raw::advance_epoch()
}
