//! The adversarial suite: each test attacks ww the way an untrusted cell, native program or
//! client would, and asserts that the attack fails, the host is unchanged, and ww still
//! serves. One file per attack surface:
//!
//! - `swap`: symlink and rename swaps of a grant, its ancestors and the merged image;
//! - `wasi`: mutating WASI calls through read-only grants and the image root, symlinks,
//!   hard links, `..`, and a child asking for more than its parent;
//! - `jail`: a native program against host files, processes, devices, sockets, mounts,
//!   ptrace, and ww's own lifetime.
//!
//! A test that needs a kernel feature this machine lacks calls `support::skip` with the
//! reason and returns: it is counted as skipped, never as passed.

mod jail;
mod swap;
mod wasi;
