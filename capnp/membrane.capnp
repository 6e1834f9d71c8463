# The membrane: how a client gets a session of capabilities, and how a node revokes every
# capability of every session at once by advancing its epoch.
#
# After an advance, every call on a capability of an earlier session fails with an exception
# of type DISCONNECTED (pycapnp: `e.type == "DISCONNECTED"`; Rust: ErrorKind::Disconnected),
# the Cap'n Proto signal that a capability is gone for good and must be obtained again:
# graft anew. Its description starts with "stale epoch" for people; clients need not parse it.
@0xbfd5cd43d5a18ad0;

using Host = import "host.capnp".Host;
using Executor = import "host.capnp".Executor;

struct Epoch {
  # A generation of a node's capabilities. Sessions of older epochs are revoked.
  seq @0 :UInt64;
}

interface Membrane {
  graft @0 () -> (session :Session);
  # A session in the current epoch.
}

struct Session {
  # The capabilities of one graft, and the epoch they belong to.
  epoch @0 :Epoch;
  host @1 :Host;
  executor @2 :Executor;
  status @3 :StatusPoller;
  exports @4 :List(Export);
  # The capabilities the node's cell (pid0) exports, by name: what a peer grafts for. Each
  # is revoked with the session.
}

struct Export {
  # A capability a cell exports through its membrane, with the name clients find it by.
  name @0 :Text;
  cap @1 :Capability;
  # Cast it to the interface its name promises (pycapnp: `cap.as_interface(Counter)`).
}

interface StatusPoller {
  # Watches the membrane's epoch. Never revoked itself: a client learns through it that its
  # session went stale.

  current @0 () -> (epoch :Epoch);
  # The membrane's epoch now.

  changed @1 (since :Epoch) -> (epoch :Epoch);
  # Resolves once the epoch differs from `since`, with the new epoch.
}
