# Network-facing capabilities of a ww node.
#
# Local cells reach the host through the typed WIT worlds in wit/; these schemas are what
# crosses a Cap'n Proto connection (a cell's RPC bridge, --rpc-socket, libp2p /ww/0.1.0),
# and what external clients such as pycapnp load unchanged. Names follow the WIT: Executor,
# Process, ExitStatus, Limit and Stdio mean what they mean in wit/executor.wit.
@0xcc15cae2c0666035;

interface Host {
  # The root capability of a ww node, reached through a Session (membrane.capnp).

  id @0 () -> (peerId :Text);
  # The node's libp2p peer id (base58), the name of its --identity key.

  addrs @1 () -> (addrs :List(Text));
  # The multiaddrs the node listens on, each ending in /p2p/<peer id>; empty when it
  # listens on none.

  peers @2 () -> (peers :List(Peer));
  # The peers the node is connected to.

  connect @3 (peerId :Text, addrs :List(Text)) -> (membrane :import "membrane.capnp".Membrane);
  # Dials the peer (at addrs, multiaddrs; when empty, where the node knows it or Kademlia
  # routing finds it), opens a /ww/0.1.0 stream and returns the membrane the peer serves on
  # it. Fails, with the reason, on a malformed id or address, a peer not found or not
  # reachable, or a refused stream.

  executor @4 () -> (executor :Executor);
  # The executor of the session's cell: children it spawns are that cell's children.
}

struct Peer {
  # A connected peer.
  id @0 :Text;
  addrs @1 :List(Text);
}

interface Executor {
  # The power to start cells; mirrors ww:host/executor in wit/executor.wit.

  spawn @0 (program :Program, options :SpawnOptions) -> (process :Process);
  # Starts a cell. Fails (with the reason) when the executor refuses, as the WIT spawn-error
  # says: a program not found or not runnable, looser limits, too many children.
}

struct Program {
  # What to run.
  union {
    bytes @0 :Data;
    # A component or preview 1 module.
    path @1 :Text;
    # A path in the filesystem of the cell that holds the executor.
  }
}

enum Stdio {
  # Where one of a child's standard streams goes. Over Cap'n Proto, `inherit` is the
  # holder's own stream and `pipe` a ByteStream from Process.
  null @0;
  pipe @1;
  inherit @2;
}

struct EnvVar {
  key @0 :Text;
  value @1 :Text;
}

struct Limits {
  # Each 0 means "inherit the spawner's"; a set value may only tighten it.
  maxMemory @0 :UInt64;
  timeoutMs @1 :UInt64;
  fuel @2 :UInt64;
  maxChildren @3 :UInt32;
}

struct SpawnOptions {
  name @0 :Text;
  # argv[0]; the program's file name when empty.
  args @1 :List(Text);
  # Arguments after argv[0].
  env @2 :List(EnvVar);
  # The whole environment.
  stdin @3 :Stdio;
  stdout @4 :Stdio;
  stderr @5 :Stdio;
  limits @6 :Limits;
}

enum Limit {
  memory @0;
  time @1;
  fuel @2;
}

struct ExitStatus {
  # How a cell ended.
  union {
    exited @0 :UInt8;
    # It returned or exited with this code.
    trapped @1 :Text;
    # It trapped; how.
    killed @2 :Void;
    # It was killed.
    limitExceeded @3 :Limit;
    # A limit ended it.
  }
}

interface Process {
  # A running or finished cell.

  stdin @0 () -> (stream :ByteStream);
  # The write end of its stdin, when spawned with `pipe` (once; then fails).
  stdout @1 () -> (stream :ByteStream);
  # The read end of its stdout, when spawned with `pipe` (once).
  stderr @2 () -> (stream :ByteStream);
  # The read end of its stderr, when spawned with `pipe` (once).

  wait @3 () -> (status :ExitStatus);
  # Resolves when the cell ends.

  kill @4 ();
  # Ends the cell now; nothing if it already ended.

  id @5 () -> (id :UInt32);
  # A number naming the cell within its node.
}

interface ByteStream {
  # One direction of a byte pipe, such as a process's stdin or stdout.

  read @0 (maxBytes :UInt32) -> (data :Data);
  # Up to maxBytes bytes (the host caps it at 64 KiB; 0 means the cap), waiting for at
  # least one; empty data means end of stream.

  write @1 (data :Data);
  # Writes all of data; fails once the reader is gone.

  close @2 ();
  # Ends the stream: the reader sees end of stream after what was written.
}
