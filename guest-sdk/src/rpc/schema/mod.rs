//! The Rust the host generated from `capnp/*.capnp`, shared rather than generated again.
//!
//! These are the host's committed files (`host/src/rpc/schema/`, written by
//! `cargo xtask codegen`), included by path: they name each other as
//! `crate::rpc::schema::<file>_capnp`, which is where this module puts them, so one copy
//! serves both sides and the guest's types can never drift from the host's.

#![allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]

/// `capnp/counter.capnp`: the example service's Counter and Watcher (`guests/counter`).
#[path = "../../../../host/src/rpc/schema/counter_capnp.rs"]
pub mod counter_capnp;
/// `capnp/host.capnp`: Host, Executor, Process and ByteStream.
#[path = "../../../../host/src/rpc/schema/host_capnp.rs"]
pub mod host_capnp;
/// `capnp/membrane.capnp`: Membrane, Caller, Session, Export, Epoch, StatusPoller, and
/// Attenuator, Policy, Method and Revoker.
#[path = "../../../../host/src/rpc/schema/membrane_capnp.rs"]
pub mod membrane_capnp;
/// Every method of every interface in `capnp/*.capnp`, by name and ordinal (what
/// [`Attenuate::allow`](super::Attenuate::allow) resolves names through).
#[path = "../../../../host/src/rpc/schema/methods.rs"]
pub mod methods;
