//! `ww`: a capability-secure runtime for WebAssembly cells.
//!
//! The library behind the `ww` binary. Modules follow the life of a cell:
//!
//! - [`image`] turns `IMAGE` and its layers into one root and an entrypoint;
//! - [`wasm`] tells components from preview 1 modules and compiles them;
//! - [`caps`] holds the capabilities a cell can be granted (the `ww:host` WIT interfaces and
//!   the filesystem);
//! - [`fds`] validates and numbers host fd grants (`--fd` and friends) and takes the fds (it
//!   uses nothing else in the crate);
//! - [`executor`] runs cells concurrently: one cell's config and store, limits, the compile
//!   cache, processes, stdio, and the `ww:host/executor` interface for spawning children;
//! - [`boot`] starts an image's services beside pid0;
//! - [`units`] parses sizes and durations;
//! - [`ipfs`] fetches `/ipfs` and `/ipns` images (verified against their CIDs, cached on
//!   disk) and adds content for `ww export` (it uses only `capped`, the size accounting its
//!   cache shares with the compile cache);
//! - [`native`] finds native programs (ELF, `#!`, Go-style `bin/{os}_{arch}/`) and runs them
//!   as jailed subprocesses (it uses only `fds`);
//! - [`net`] is the node's libp2p swarm: its identity, `boot/` peers, and the `/ww/0.1.0`
//!   streams peers reach each other's membranes on (it uses nothing else in the crate);
//! - [`rpc`] serves the node over Cap'n Proto: the schemas, the membrane and its epoch,
//!   Host/Executor/Process/ByteStream, `--rpc-socket` and `/ww/0.1.0` streams.
//!
//! Dependencies: `boot` uses `executor`, `image` and `caps`; `executor` uses `caps`, `wasm`
//! and `capped` (the size accounting shared with `ipfs`'s cache); `rpc` uses `executor`,
//! `caps` and `net`; `caps` uses `fds`, `ipfs` and `net`; `ipfs` uses only `capped`; `image`,
//! `wasm`, `capped` and `units` use nothing else in the crate. See ARCHITECTURE.md.

#![deny(missing_docs)]

mod bindings;
pub mod boot;
mod capped;
pub mod caps;
pub mod executor;
pub mod fds;
pub mod image;
pub mod ipfs;
pub mod native;
pub mod net;
pub mod rpc;
pub mod units;
pub mod wasm;
