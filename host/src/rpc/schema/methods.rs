//! Every method of every interface in `capnp/*.capnp`, by name and ordinal: generated
//! by `cargo xtask codegen` from the schema compiler's `CodeGeneratorRequest`. Do not edit
//! by hand.
//!
//! A policy names methods by number (`Method` in `capnp/membrane.capnp`); this table lets
//! code name them as the schema does (`allow(["get"])`).

/// One method of an interface, as Cap'n Proto numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The interface's type id (`HasTypeId::TYPE_ID` of its generated client).
    pub interface_id: u64,
    /// The interface's name in its schema file (`Outer.Inner` when nested).
    pub interface: &'static str,
    /// The method's name in the schema.
    pub name: &'static str,
    /// The method's ordinal (`@N` in the schema).
    pub id: u16,
}

/// Every method of every interface, interfaces sorted by name, methods by ordinal.
pub const METHODS: &[Method] = &[
    Method {
        interface_id: 0xc5e7b7bea4b5971d,
        interface: "Attenuator",
        name: "attenuate",
        id: 0,
    },
    Method {
        interface_id: 0x869dc9562179a009,
        interface: "ByteStream",
        name: "read",
        id: 0,
    },
    Method {
        interface_id: 0x869dc9562179a009,
        interface: "ByteStream",
        name: "write",
        id: 1,
    },
    Method {
        interface_id: 0x869dc9562179a009,
        interface: "ByteStream",
        name: "close",
        id: 2,
    },
    Method {
        interface_id: 0xeac35c2bbe4e4103,
        interface: "Counter",
        name: "increment",
        id: 0,
    },
    Method {
        interface_id: 0xeac35c2bbe4e4103,
        interface: "Counter",
        name: "get",
        id: 1,
    },
    Method {
        interface_id: 0xeac35c2bbe4e4103,
        interface: "Counter",
        name: "fork",
        id: 2,
    },
    Method {
        interface_id: 0xeac35c2bbe4e4103,
        interface: "Counter",
        name: "watch",
        id: 3,
    },
    Method {
        interface_id: 0xb4a8655acda198e6,
        interface: "Executor",
        name: "spawn",
        id: 0,
    },
    Method {
        interface_id: 0x879f24091a661629,
        interface: "Host",
        name: "id",
        id: 0,
    },
    Method {
        interface_id: 0x879f24091a661629,
        interface: "Host",
        name: "addrs",
        id: 1,
    },
    Method {
        interface_id: 0x879f24091a661629,
        interface: "Host",
        name: "peers",
        id: 2,
    },
    Method {
        interface_id: 0x879f24091a661629,
        interface: "Host",
        name: "connect",
        id: 3,
    },
    Method {
        interface_id: 0x879f24091a661629,
        interface: "Host",
        name: "executor",
        id: 4,
    },
    Method {
        interface_id: 0xd6dac2f2d09076c1,
        interface: "Membrane",
        name: "graft",
        id: 0,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "stdin",
        id: 0,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "stdout",
        id: 1,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "stderr",
        id: 2,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "wait",
        id: 3,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "kill",
        id: 4,
    },
    Method {
        interface_id: 0xcd08d119cd4f78c5,
        interface: "Process",
        name: "id",
        id: 5,
    },
    Method {
        interface_id: 0x829fb847ebefb95b,
        interface: "Revoker",
        name: "revoke",
        id: 0,
    },
    Method {
        interface_id: 0xa9fa2a3e5ccb00b3,
        interface: "StatusPoller",
        name: "current",
        id: 0,
    },
    Method {
        interface_id: 0xa9fa2a3e5ccb00b3,
        interface: "StatusPoller",
        name: "changed",
        id: 1,
    },
    Method {
        interface_id: 0x9f542b633d75807b,
        interface: "Watcher",
        name: "changed",
        id: 0,
    },
];

/// The ordinal of the method `name` of the interface `interface_id`, or `None` when the
/// table has no such method.
pub fn method_id(interface_id: u64, name: &str) -> Option<u16> {
    METHODS
        .iter()
        .find(|m| m.interface_id == interface_id && m.name == name)
        .map(|m| m.id)
}

/// The name of the interface `interface_id`, or `None` when the table has no method of it.
pub fn interface_name(interface_id: u64) -> Option<&'static str> {
    METHODS
        .iter()
        .find(|m| m.interface_id == interface_id)
        .map(|m| m.interface)
}
