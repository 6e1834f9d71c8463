# The example service of examples/ (guests/counter, guests/counter-client): a counter a cell
# exports through its membrane and peers call over /ww/0.1.0. The host itself does not use
# it; it is here so that its generated Rust is shared by the guests and the tests.
@0xe2a6b5ed9f0b1c47;

interface Counter {
  increment @0 (by :UInt64) -> (value :UInt64);
  # Adds `by` and returns the new value.

  get @1 () -> (value :UInt64);
  # The value now.

  fork @2 () -> (counter :Counter);
  # A new counter starting at this one's value, independent from then on: a capability
  # returned by a method, which a session's client holds through the membrane like the
  # export itself.

  watch @3 (watcher :Watcher) -> ();
  # Calls `watcher.changed(value)` after every later increment, until a call on it fails:
  # a capability passed in by the client.
}

interface Watcher {
  changed @0 (value :UInt64) -> ();
  # The counter's new value.
}
