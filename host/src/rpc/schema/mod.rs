//! Rust generated from `capnp/*.capnp` by `cargo xtask codegen`. Do not edit by hand.

#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// `capnp/counter.capnp`: the example service's Counter and Watcher (used by guests and
/// tests only).
pub mod counter_capnp;
/// `capnp/host.capnp`: Host, Executor, Process and ByteStream.
pub mod host_capnp;
/// `capnp/membrane.capnp`: Membrane, Caller, Session, Export, Epoch, StatusPoller, and
/// Attenuator, Policy, Method and Revoker.
pub mod membrane_capnp;
/// Every method of every interface in `capnp/*.capnp`, by name and ordinal.
pub mod methods;
