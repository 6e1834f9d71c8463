//! `ww:host/rpc`: the Cap'n Proto bridge, a cell's two-party connection to the node's RPC
//! system over a pair of WASI streams.
//!
//! The capability is an [`RpcHost`] the cell was given (pid0 gets the node's); a cell without
//! one cannot connect. The node side lives in `crate::rpc`, which implements [`RpcHost`], so
//! this module knows nothing of Cap'n Proto.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use crate::bindings::ww::host::rpc as wit;

/// Bytes buffered in each direction of a bridge connection.
const BRIDGE_CAPACITY: usize = 256 * 1024;

/// The node's RPC system, as a cell holding the bridge reaches it.
pub trait RpcHost: Send + Sync {
    /// Serves the node's membrane on `stream`; with `export`, also takes the cell's own
    /// bootstrap capability as the membrane the node serves.
    fn serve(&self, stream: DuplexStream, export: bool) -> Result<(), String>;

    /// Advances the membrane's epoch; the new epoch.
    fn advance_epoch(&self) -> Result<u64, String>;
}

/// What the rpc interface sees of a cell's store.
pub struct RpcView<'a> {
    /// The cell's resource table.
    pub table: &'a mut ResourceTable,
    /// The bridge, when the cell holds one.
    pub host: Option<&'a Arc<dyn RpcHost>>,
}

struct RpcData;

impl HasData for RpcData {
    type Data<'a> = RpcView<'a>;
}

/// Adds `ww:host/rpc` to `linker`, served from the view `get` makes of the store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> RpcView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, RpcData>(linker, get)
}

impl RpcView<'_> {
    fn host(&self) -> Result<Arc<dyn RpcHost>, String> {
        self.host
            .cloned()
            .ok_or_else(|| "this cell holds no connection to the host's RPC system".to_owned())
    }
}

/// The cell's ends of a connection over `stream`, as WASI streams in its table.
pub(crate) fn connection<S>(table: &mut ResourceTable, stream: S) -> Result<wit::Connection, String>
where
    S: AsyncRead + AsyncWrite + Send + Sync + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let input: DynInputStream = Box::new(AsyncReadStream::new(reader));
    let output: DynOutputStream = Box::new(AsyncWriteStream::new(BRIDGE_CAPACITY, writer));
    let input = table.push(input).map_err(|e| e.to_string())?;
    let output = table.push(output).map_err(|e| e.to_string())?;
    Ok(wit::Connection { input, output })
}

impl wit::Host for RpcView<'_> {
    fn connect(&mut self, export: bool) -> Result<wit::Connection, String> {
        let host = self.host()?;
        let (cell, node) = tokio::io::duplex(BRIDGE_CAPACITY);
        host.serve(node, export)?;
        connection(self.table, cell)
    }

    fn advance_epoch(&mut self) -> Result<u64, String> {
        self.host()?.advance_epoch()
    }
}
