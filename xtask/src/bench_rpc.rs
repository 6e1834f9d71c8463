//! The Cap'n Proto side of `cargo xtask bench`: the native references that ww's RPC is
//! measured against, run in the same process as the benchmark.
//!
//! - [`native_pair`]: plain capnp-rpc between two native threads over a socketpair, a
//!   `Membrane` whose sessions hold a `Host` answering `id`; the same calls a guest makes
//!   through ww's bridge.
//! - [`NativeServer`]: the same server on a Unix socket, for pycapnp to call, against
//!   `ww run --rpc-socket`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use capnp::capability::Rc;
use capnp_rpc::{RpcSystem, rpc_twoparty_capnp::Side, twoparty};
use futures::future::try_join_all;
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

use crate::rpc::schema::host_capnp::host;
use crate::rpc::schema::membrane_capnp::membrane;

/// Round trips and pipelined throughput of one run.
pub struct RpcStats {
    /// Sequential round trips, sorted.
    pub rtts: Vec<Duration>,
    /// Calls per second with all calls in flight at once.
    pub pipelined_per_sec: f64,
}

impl RpcStats {
    /// The `p`th percentile round trip, in microseconds.
    pub fn percentile_us(&self, p: usize) -> f64 {
        let i = (self.rtts.len() * p / 100).min(self.rtts.len().saturating_sub(1));
        self.rtts
            .get(i)
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(0.0)
    }
}

struct NativeHost;

impl host::Server for NativeHost {
    async fn id(
        self: Rc<Self>,
        _: host::IdParams,
        mut results: host::IdResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_peer_id("native");
        Ok(())
    }
}

struct NativeMembrane;

impl membrane::Server for NativeMembrane {
    async fn graft(
        self: Rc<Self>,
        _: membrane::GraftParams,
        mut results: membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let mut session = results.get().init_session();
        session.reborrow().init_epoch().set_seq(0);
        session.set_host(capnp_rpc::new_client(NativeHost));
        Ok(())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

fn network(
    stream: tokio::net::UnixStream,
    side: Side,
) -> twoparty::VatNetwork<impl futures::AsyncRead + Unpin> {
    let (reader, writer) = stream.into_split();
    twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        side,
        Default::default(),
    )
}

async fn serve(stream: tokio::net::UnixStream) {
    let membrane: membrane::Client = capnp_rpc::new_client(NativeMembrane);
    let system = RpcSystem::new(
        Box::new(network(stream, Side::Server)),
        Some(membrane.client),
    );
    let _ = system.await;
}

async fn measure(stream: tokio::net::UnixStream, calls: usize) -> Result<RpcStats> {
    let mut system = RpcSystem::new(Box::new(network(stream, Side::Client)), None);
    let membrane: membrane::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(system);
    let session = membrane.graft_request().send().promise.await?;
    let host = session.get()?.get_session()?.get_host()?;
    for _ in 0..100 {
        host.id_request().send().promise.await?;
    }
    let mut rtts = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        host.id_request().send().promise.await?;
        rtts.push(started.elapsed());
    }
    rtts.sort();
    let started = Instant::now();
    try_join_all((0..calls).map(|_| host.id_request().send().promise)).await?;
    let pipelined_per_sec = calls as f64 / started.elapsed().as_secs_f64();
    Ok(RpcStats {
        rtts,
        pipelined_per_sec,
    })
}

/// `calls` round trips and `calls` pipelined calls between two native threads.
pub fn native_pair(calls: usize) -> Result<RpcStats> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    let server = std::thread::spawn(move || -> Result<()> {
        let rt = runtime()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let stream = tokio::net::UnixStream::from_std(theirs)?;
            serve(stream).await;
            Ok(())
        })
    });
    let rt = runtime()?;
    let local = tokio::task::LocalSet::new();
    let stats = local.block_on(&rt, async move {
        let stream = tokio::net::UnixStream::from_std(ours)?;
        measure(stream, calls).await
    });
    drop(local);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the native server thread panicked"))??;
    stats
}

/// The native server, listening on a Unix socket on a thread of its own until dropped.
pub struct NativeServer {
    path: PathBuf,
}

impl NativeServer {
    /// Starts serving at `path` (removed first if it exists).
    pub fn start(path: &Path) -> Result<NativeServer> {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("cannot bind {}", path.display()))?;
        listener.set_nonblocking(true)?;
        std::thread::spawn(move || -> Result<()> {
            let rt = runtime()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let listener = tokio::net::UnixListener::from_std(listener)?;
                loop {
                    let (stream, _) = listener.accept().await?;
                    tokio::task::spawn_local(serve(stream));
                }
            })
        });
        Ok(NativeServer {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
