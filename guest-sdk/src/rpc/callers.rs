//! Who grafts onto a membrane the cell exports: [`Caller`], as the node authenticated them.

use std::fmt;

use super::caller;
use super::membrane;

/// Who grafts onto the membrane pid0 exports (`Caller` in `capnp/membrane.capnp`): set by
/// the node, never taken from the client, so a membrane may give different callers
/// different capabilities ([`export_for`](super::export_for)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A client of `ww run --rpc-socket`: a mode 0600 socket, so the node's own user.
    Socket,
    /// A network peer over `/ww/0.1.0`: its libp2p peer id (base58), authenticated by the
    /// connection's Noise handshake.
    Peer(String),
    /// A cell of this node (pid0 over its bridge, or a native pid0).
    Cell,
    /// The graft did not say: a node from before callers were told, or a caller of a kind
    /// this SDK does not know yet. Treat it as the least trusted.
    Unknown,
}

impl Caller {
    /// The caller of a graft, from its parameters.
    ///
    /// A caller that is unset, or of a kind newer than this SDK, is [`Caller::Unknown`];
    /// only a malformed message (e.g. a peer id that is not text) is an error.
    pub fn of_graft(params: &membrane::GraftParams) -> Result<Caller, capnp::Error> {
        let params = params.get()?;
        if !params.has_caller() {
            return Ok(Caller::Unknown);
        }
        Ok(match params.get_caller()?.which() {
            Ok(caller::Socket(())) => Caller::Socket,
            Ok(caller::Peer(id)) => Caller::Peer(id?.to_string()?),
            Ok(caller::Cell(())) => Caller::Cell,
            // A union member this SDK's schema does not have.
            Err(capnp::NotInSchema(_)) => Caller::Unknown,
        })
    }
}

impl fmt::Display for Caller {
    /// `socket`, `peer <PEER ID>`, `cell` or `unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Socket => f.write_str("socket"),
            Caller::Peer(id) => write!(f, "peer {id}"),
            Caller::Cell => f.write_str("cell"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_one_word_and_the_peer_id() {
        assert_eq!(Caller::Socket.to_string(), "socket");
        assert_eq!(
            Caller::Peer("12D3KooWx".into()).to_string(),
            "peer 12D3KooWx"
        );
        assert_eq!(Caller::Cell.to_string(), "cell");
        assert_eq!(Caller::Unknown.to_string(), "unknown");
    }
}
