//! Host capabilities: the `ww:host` WIT interfaces a cell imports, and the filesystem it
//! holds.
//!
//! Each capability is one module: `cell` (what a cell knows of itself and its exact exit),
//! `log` (guest logging into the host's tracing), `fs` (preopened directories), `fd` (host
//! file descriptors granted by name), `rpc` (the Cap'n Proto bridge to the node), `ipfs`
//! (cat, ls and add through the node's IPFS daemon), `net` (the node's libp2p identity and
//! peers, and connections to peers' membranes). A new capability is a new module plus
//! one line in [`add_to_linker`] (or, for one served from a view of the store, in the
//! executor's cell linker).
//!
//! Architecture invariant: capabilities depend on nothing else in the host but the fd model
//! (`fds`), the IPFS client (`ipfs`) and the network (`net`); cells depend on capabilities, never the reverse.

mod cell;
pub mod fd;
pub mod fs;
pub mod ipfs;
mod log;
pub mod net;
pub mod rpc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::ww::host::{cell as cell_wit, log as log_wit};

pub use self::fs::{
    DirGrant, DirGrantError, FileIdentity, Filesystem, Preopen, ProgramFile, ReadError,
    refuse_state,
};

/// What the host knows about one cell, and serves it through the `ww:host` interfaces.
#[derive(Debug, Clone)]
pub struct CellInfo {
    image: String,
    filesystem: Filesystem,
}

impl CellInfo {
    /// Describes a cell booted from the image named `image`, holding `filesystem`.
    pub fn new(image: impl Into<String>, filesystem: Filesystem) -> CellInfo {
        CellInfo {
            image: image.into(),
            filesystem,
        }
    }

    /// The image name, which also names the cell in logs and diagnostics.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The directories the cell holds.
    pub fn filesystem(&self) -> &Filesystem {
        &self.filesystem
    }
}

/// Adds every `ww:host` interface to `linker`, served from the [`CellInfo`] that `get` finds
/// in the store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut CellInfo,
) -> wasmtime::Result<()> {
    cell_wit::add_to_linker::<T, HasSelf<CellInfo>>(linker, get)?;
    log_wit::add_to_linker::<T, HasSelf<CellInfo>>(linker, get)
}
