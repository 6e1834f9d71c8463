//! Host-side Rust generated from `wit/` (world `ww:host/guest`). Capabilities implement the
//! traits; nothing else lives here.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "guest",
    path: "../wit",
    imports: {
        "ww:host/executor.[method]process.wait": async | trappable,
        // Loading a program may compile it: that runs on the blocking pool, awaited.
        "ww:host/executor.[method]executor.spawn": async | trappable,
        "ww:host/executor": trappable,
        "ww:host/cell.exit": trappable,
        // The IPFS client blocks: its calls run on the blocking pool, awaited.
        "ww:host/ipfs": async,
        // Dialing a peer waits on the network.
        "ww:host/net": async,
    },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "ww:host/executor.executor": crate::executor::host::ExecutorHandle,
        "ww:host/executor.process": crate::executor::host::ProcessHandle,
        "ww:host/fd.grant": crate::caps::fd::FdHandle,
    },
});
