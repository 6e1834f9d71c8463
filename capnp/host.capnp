# Network-facing capabilities of a ww node.
#
# Local cells reach the host through the typed WIT worlds in wit/; these schemas are what
# crosses a Cap'n Proto connection (a cell's RPC bridge, --rpc-socket, libp2p /ww/0.1.0),
# and what external clients such as pycapnp load unchanged.
@0xcc15cae2c0666035;

interface Host {
  # The root capability of a ww node.

  id @0 () -> (peerId :Text);
  # The node's libp2p peer id, base58-encoded.

  addrs @1 () -> (addrs :List(Text));
  # The multiaddrs the node listens on, each ending in /p2p/<peer id>.
}

interface ByteStream {
  # One direction of a byte pipe, such as a process's stdin or stdout.

  read @0 (maxBytes :UInt32) -> (data :Data);
  # Up to maxBytes bytes (the host caps it); empty data means end of stream.

  write @1 (data :Data);
  # Writes all of data; fails once the other end is gone.

  close @2 ();
  # Ends the stream: the reader sees end of stream after what was written.
}
