//! `ww`: a capability-secure runtime for WebAssembly cells.
//!
//! The library behind the `ww` binary. Modules follow the life of a cell:
//!
//! - [`image`] turns `IMAGE` and its layers into one root and an entrypoint;
//! - [`wasm`] tells components from preview 1 modules and compiles them;
//! - [`caps`] holds the capabilities a cell can be granted (the `ww:host` WIT interfaces and
//!   the filesystem);
//! - [`cell`] runs one program with exactly the capabilities in its config;
//! - [`rpc`] holds the Cap'n Proto schemas for what crosses the network.
//!
//! Dependencies point down this list's reverse: `cell` uses `caps` and `wasm`; `image`,
//! `wasm`, `caps` and `rpc` use nothing else in the crate. See ARCHITECTURE.md.

#![deny(missing_docs)]

pub mod caps;
pub mod cell;
pub mod image;
pub mod rpc;
pub mod wasm;
