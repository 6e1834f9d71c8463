//! Rust generated from `capnp/*.capnp` by `cargo xtask codegen`. Do not edit by hand.

#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// `capnp/host.capnp`: Host, Executor, Process and ByteStream.
pub mod host_capnp;
/// `capnp/membrane.capnp`: Membrane, Session, Epoch and StatusPoller.
pub mod membrane_capnp;
