//! `ww:host/net`: the node's libp2p identity and peers, and a cell's Cap'n Proto connection
//! to a peer's membrane over `/ww/0.1.0`.
//!
//! The capability is the node's [`Network`] (pid0 gets it; a child gets its spawner's only
//! when asked for); a cell without one gets an error from every function. What the cell
//! speaks on the connection is its own business: the host only carries the bytes, within
//! the stream's flow control.

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::bindings::ww::host::net as wit;
use crate::net::{self, Network, Starting};

/// What the net interface sees of a cell's store.
pub struct NetView<'a> {
    /// The cell's resource table.
    pub table: &'a mut ResourceTable,
    /// The node's network, when the cell holds it.
    pub network: Option<&'a Starting>,
}

struct NetData;

impl HasData for NetData {
    type Data<'a> = NetView<'a>;
}

/// Adds `ww:host/net` to `linker`, served from the view `get` makes of the store.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> NetView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, NetData>(linker, get)
}

impl NetView<'_> {
    /// The network, once started. (What is awaited is owned: the view holds the cell's
    /// table, which must not be held across an await.)
    fn network(&self) -> impl Future<Output = Result<Network, String>> + Send + 'static {
        let starting = self.network.cloned();
        async move {
            match starting {
                Some(starting) => starting.network().await.map_err(|e| e.to_string()),
                None => Err("this cell holds no network capability".to_owned()),
            }
        }
    }
}

impl wit::Host for NetView<'_> {
    async fn id(&mut self) -> Result<String, String> {
        Ok(self.network().await?.id().to_owned())
    }

    async fn addrs(&mut self) -> Result<Vec<String>, String> {
        Ok(self
            .network()
            .await?
            .addrs()
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    async fn peers(&mut self) -> Result<Vec<wit::Peer>, String> {
        Ok(self
            .network()
            .await?
            .peers()
            .into_iter()
            .map(|peer| wit::Peer {
                id: peer.id.to_string(),
                addrs: peer.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect())
    }

    async fn connect(
        &mut self,
        peer_id: String,
        addrs: Vec<String>,
    ) -> Result<wit::Connection, String> {
        let network = self.network().await?;
        let peer = net::parse_peer_id(&peer_id).map_err(|e| e.to_string())?;
        let addrs = addrs
            .iter()
            .map(|a| net::parse_addr(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let stream = network.open(peer, addrs).await.map_err(|e| e.to_string())?;
        super::rpc::connection(self.table, stream)
    }
}
