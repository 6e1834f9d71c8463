//! The network: this node's libp2p identity and peers, and Cap'n Proto to a peer's membrane.
//!
//! pid0 holds this capability; a child holds it only when its spawner passes it on with
//! [`Command::network`](crate::process::Command::network). Without it every function fails
//! (a [`NetError`] or [`RpcError::Dial`] saying so).
//!
//! [`connect`] dials a peer and opens a two-party Cap'n Proto connection to it (the
//! protocol `/ww/0.1.0`): the same [`Connection`] as [`crate::rpc::connect`] gives, driven
//! the same way by [`crate::rpc::block_on`], whose membrane is the peer's. Graft it for a
//! session; the capabilities the peer's pid0 exports ([`crate::rpc::export_caps`]) are in
//! its [`exports`](crate::rpc::Session::exports):
//!
//! ```no_run
//! use ww::rpc::{RpcError, capnp, counter};
//!
//! println!("this node is {}", ww::net::id()?);
//! for peer in ww::net::peers()? {
//!     println!("connected to {} at {}", peer.id, peer.addrs.join(", "));
//! }
//! let value = ww::rpc::block_on(async {
//!     let membrane = ww::net::connect("12D3KooW…", &[])?.spawn();
//!     let session = ww::rpc::graft(&membrane).await?;
//!     let counter: counter::Client = session
//!         .export("counter")
//!         .ok_or_else(|| capnp::Error::failed("the peer exports no counter".into()))?;
//!     let mut call = counter.increment_request();
//!     call.get().set_by(1);
//!     Ok::<_, RpcError>(call.send().promise.await?.get()?.get_value())
//! })??;
//! println!("counter = {value}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::bindings::ww::host::net as raw;
use crate::rpc::{Connection, RpcError};

/// This node's peer id (base58), the name of its libp2p key.
pub fn id() -> Result<String, NetError> {
    raw::id().map_err(NetError)
}

/// The multiaddrs the node listens on, each ending in `/p2p/<id>`.
pub fn addrs() -> Result<Vec<String>, NetError> {
    raw::addrs().map_err(NetError)
}

/// The peers the node is connected to now.
pub fn peers() -> Result<Vec<Peer>, NetError> {
    let peers = raw::peers().map_err(NetError)?;
    Ok(peers
        .into_iter()
        .map(|peer| Peer {
            id: peer.id,
            addrs: peer.addrs,
        })
        .collect())
}

/// Dials the peer `peer_id` (a base58 peer id) at `addrs` (multiaddrs; when empty, wherever
/// the node already knows it, e.g. a boot peer it dialed, or where routing finds it) and
/// opens a Cap'n Proto connection to it whose [`membrane`](Connection::membrane) is the
/// peer's.
///
/// Nothing moves on the connection until its driver runs in [`crate::rpc::block_on`] (see
/// [`Connection`]). A failure to reach the peer is [`RpcError::Dial`], naming what failed:
/// a malformed id or address, a peer that cannot be found or reached, a refused stream, or
/// a cell without the network capability.
pub fn connect(peer_id: &str, addrs: &[&str]) -> Result<Connection, RpcError> {
    let addrs: Vec<String> = addrs.iter().map(|&addr| addr.to_owned()).collect();
    let streams = raw::connect(peer_id, &addrs).map_err(RpcError::Dial)?;
    Ok(Connection::over(streams, None))
}

/// A peer the node is connected to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Its peer id (base58).
    pub id: String,
    /// The multiaddrs it is connected at.
    pub addrs: Vec<String>,
}

/// Why the host refused or failed a network call: the cell does not hold the network
/// capability, or the node could not answer. Displayed as the host's message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetError(String);

impl NetError {
    /// The host's message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetError {}
