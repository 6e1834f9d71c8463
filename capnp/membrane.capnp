# The membrane: how a client gets a session of capabilities, how a node revokes every
# capability of every session at once by advancing its epoch, and how a cell narrows a
# capability before handing it on.
#
# Every capability a session holds, and every capability reachable from it (returned by its
# methods, inside structs and lists, pipelined, or passed in by the client), passes through
# the node's membrane. A call the membrane refuses fails with an exception whose *type* says
# why; match the type (pycapnp: `e.type`; Rust: `ErrorKind`), not the description, which
# starts with the word given here for people:
#
#   DISCONNECTED   "stale epoch: ..."  the session's epoch has passed: graft again;
#                  "revoked: ..."      the capability's revoker was called;
#                  "expired: ..."      the capability's expiry has passed.
#                  Gone for good: obtain the capability again.
#   OVERLOADED     "rate limited: ..." more calls than the capability's rate allows: retry
#                  later (the next call is allowed after 1/perSecond seconds).
#   UNIMPLEMENTED  "not allowed: ..."  the method is outside the capability's allow-list.
@0xbfd5cd43d5a18ad0;

using Host = import "host.capnp".Host;
using Executor = import "host.capnp".Executor;

struct Epoch {
  # A generation of a node's capabilities. Sessions of older epochs are revoked.
  seq @0 :UInt64;
}

interface Membrane {
  graft @0 (caller :Caller) -> (session :Session);
  # A session in the current epoch. A client leaves `caller` unset: the node ignores what a
  # client puts there. When the node grafts onto the membrane pid0 exports, it sets `caller`
  # to who is grafting, as it authenticated them, so that pid0 can give different callers
  # different capabilities.
}

struct Caller {
  # Who grafts: set by the node, never taken from the client.
  union {
    socket @0 :Void;
    # A client of `ww run --rpc-socket` (a mode 0600 socket: the node's own user).
    peer @1 :Text;
    # A network peer over /ww/0.1.0: its libp2p peer id (base58), authenticated by the
    # connection's Noise handshake.
    cell @2 :Void;
    # A cell of this node: pid0 over its bridge (ww:host/rpc), or a native pid0 over fd 3.
  }
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
  attenuator @5 :Attenuator;
  # Narrows a capability before it is handed on. Given to the node's own cells only.
}

interface Attenuator {
  # Makes narrowed copies of capabilities, which the node's membrane enforces: the cell that
  # hands one out cannot be bypassed by whoever receives it.

  attenuate @0 (cap :Capability, policy :Policy) -> (cap :Capability, revoker :Revoker);
  # `cap` behind `policy`. Calls on the result reach `cap` only while the policy allows
  # them; capabilities returned by its methods (and passed into them) are revoked, expire
  # and count against the rate with it. Keep `revoker` to take the capability back.
}

struct Policy {
  # What an attenuated capability allows. Each field's zero value means "no limit".

  allow @0 :List(Method);
  # When set (even empty), only these methods of the capability itself may be called;
  # others fail UNIMPLEMENTED ("not allowed"). Unset: every method.
  perSecond @1 :UInt32;
  # At most this many calls per second (a bucket of `perSecond` calls, refilled
  # continuously); a call past it fails OVERLOADED ("rate limited"). 0: unlimited.
  expiresInMs @2 :UInt64;
  # Milliseconds from the attenuation after which every call fails DISCONNECTED
  # ("expired"). 0: never.
}

struct Method {
  # One method of an interface, as Cap'n Proto numbers it.
  interfaceId @0 :UInt64;
  methodId @1 :UInt16;
}

interface Revoker {
  revoke @0 ();
  # Revokes the capability it was made with, and everything obtained through it: every call
  # fails DISCONNECTED ("revoked") from now on, including calls in flight. Other
  # capabilities, and the session, are unaffected. Revoking twice is harmless.
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
