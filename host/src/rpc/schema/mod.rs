//! Rust generated from `capnp/*.capnp` by `cargo xtask codegen`. Do not edit by hand.

#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// `capnp/host.capnp`: the Host capability and byte streams.
pub mod host_capnp;
