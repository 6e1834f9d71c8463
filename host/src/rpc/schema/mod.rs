//! Rust generated from `capnp/*.capnp` by `cargo xtask codegen`. Do not edit by hand.

#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// `capnp/counter.capnp`: the example service's Counter (used by guests and tests only).
pub mod counter_capnp;
/// `capnp/host.capnp`: Host, Executor, Process and ByteStream.
pub mod host_capnp;
/// `capnp/membrane.capnp`: Membrane, Session, Export, Epoch and StatusPoller.
pub mod membrane_capnp;
