//! The `rpc-*` modes: Cap'n Proto to the host through [`ww::rpc`].

use std::cell::OnceCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use example_counter::Counter;
use futures::future::{join, join_all};
use ww::rpc::capnp;
use ww::rpc::capnp_rpc;
use ww::rpc::schema::host_capnp::{Stdio, exit_status};
use ww::rpc::{Caller, Export, RpcError, Session, counter, executor, host, membrane};

use crate::{error, micros, parse, percentile, say};

/// The child `rpc-big` echoes through: installed into this image by `cargo xtask images`.
const CHILD_ECHO: &str = "/usr/lib/child-echo.wasm";

/// The size of `rpc-big`'s one write.
const BIG: usize = 1 << 20;

/// What the exported Host answers to `id()`.
const EXPORTED_ID: &str = "exported by testbed";

/// Runs `body` with the node's membrane on `ww::rpc`'s executor; any failure prints
/// `error: …` and exits 1.
fn run<F, Fut, T>(body: F) -> T
where
    F: FnOnce(membrane::Client) -> Fut,
    Fut: Future<Output = Result<T, capnp::Error>>,
{
    match ww::rpc::run(body) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => error(&e),
        Err(e) => error(&e),
    }
}

/// How long `rpc-membrane`'s `expiring` lasts without an argument, in milliseconds.
const DEFAULT_EXPIRES_MS: u64 = 1500;

/// The session's host, or an error saying it has none.
fn host_of(session: &Session) -> Result<host::Client, capnp::Error> {
    session
        .host
        .clone()
        .ok_or_else(|| capnp::Error::failed("the session holds no host".into()))
}

/// The session's executor, or an error saying it has none.
fn executor_of(session: &Session) -> Result<executor::Client, capnp::Error> {
    session
        .executor
        .clone()
        .ok_or_else(|| capnp::Error::failed("the session holds no executor".into()))
}

/// The node's peer id, by one `host.id()` call.
async fn peer_id(host: &host::Client) -> Result<String, capnp::Error> {
    let reply = host.id_request().send().promise.await?;
    Ok(reply.get()?.get_peer_id()?.to_str()?.to_owned())
}

/// `rpc-id`: grafts, prints `id <peerId>` and `epoch <seq>`.
pub fn id() -> ! {
    let (id, epoch) = run(|membrane| async move {
        let session = ww::rpc::graft(&membrane).await?;
        Ok((peer_id(&host_of(&session)?).await?, session.epoch))
    });
    say(&format!("id {id}"));
    say(&format!("epoch {epoch}"));
    ww::exit(0);
}

/// The bytes `rpc-big` sends: a pattern that a shifted, dropped or repeated piece breaks.
fn pattern() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// An exit status as `exited N`, `trapped: …`, `killed` or `limit exceeded: …`.
fn status(status: exit_status::Reader<'_>) -> Result<String, capnp::Error> {
    Ok(match status.which()? {
        exit_status::Exited(code) => format!("exited {code}"),
        exit_status::Trapped(how) => format!("trapped: {}", how?.to_str()?),
        exit_status::Killed(()) => "killed".to_owned(),
        exit_status::LimitExceeded(limit) => format!("limit exceeded: {:?}", limit?),
    })
}

/// `rpc-big`: spawns child-echo through the session's executor, writes 1 MiB in one
/// `ByteStream.write`, reads it back to end of stream and waits for the child.
pub fn big() -> ! {
    let sent = pattern();
    let data = sent.clone();
    let (echoed, exit) = run(|membrane| async move {
        let session = ww::rpc::graft(&membrane).await?;
        let mut spawn = executor_of(&session)?.spawn_request();
        {
            let mut params = spawn.get();
            params.reborrow().init_program().set_path(CHILD_ECHO);
            let mut options = params.init_options();
            options.set_stdin(Stdio::Pipe);
            options.set_stdout(Stdio::Pipe);
            options.set_stderr(Stdio::Null);
        }
        let process = spawn.send().promise.await?.get()?.get_process()?;
        let stdin = process.stdin_request().send().pipeline.get_stream();
        let stdout = process.stdout_request().send().pipeline.get_stream();
        // Read while writing: the child echoes as it reads, and stops reading while its
        // stdout is full.
        let write = async {
            let mut write = stdin.write_request();
            write.get().set_data(&data);
            write.send().promise.await?;
            stdin.close_request().send().promise.await?;
            Ok::<_, capnp::Error>(())
        };
        let read = async {
            let mut echoed = Vec::with_capacity(BIG);
            loop {
                let mut read = stdout.read_request();
                read.get().set_max_bytes(64 * 1024);
                let reply = read.send().promise.await?;
                let data = reply.get()?.get_data()?;
                if data.is_empty() {
                    break Ok::<_, capnp::Error>(echoed);
                }
                echoed.extend_from_slice(data);
            }
        };
        let (written, echoed) = join(write, read).await;
        written?;
        let echoed = echoed?;
        let reply = process.wait_request().send().promise.await?;
        Ok((echoed, status(reply.get()?.get_status()?)?))
    });
    if echoed != sent {
        let at = echoed
            .iter()
            .zip(&sent)
            .position(|(a, b)| a != b)
            .unwrap_or(echoed.len().min(sent.len()));
        error(&format_args!(
            "rpc-big: echoed {} of {} bytes, first difference at {at}",
            echoed.len(),
            sent.len()
        ));
    }
    say(&format!("rpc-big ok {} {exit}", echoed.len()));
    ww::exit(0);
}

/// `rpc-many N`: N `host.id()` calls, all sent before any is awaited.
pub fn many(n: &str) -> ! {
    let n: usize = parse("count", n);
    let answered = run(|membrane| async move {
        let host = host_of(&ww::rpc::graft(&membrane).await?)?;
        let calls: Vec<_> = (0..n).map(|_| host.id_request().send().promise).collect();
        let mut ids = Vec::with_capacity(n);
        for reply in join_all(calls).await {
            ids.push(reply?.get()?.get_peer_id()?.to_str()?.to_owned());
        }
        if let Some(first) = ids.first()
            && let Some(other) = ids.iter().find(|id| *id != first)
        {
            return Err(capnp::Error::failed(format!(
                "host.id() answered both {first} and {other}"
            )));
        }
        Ok(ids.len())
    });
    say(&format!("rpc-many ok {answered}"));
    ww::exit(0);
}

/// `rpc-exit-mid-call CODE`: exits with CODE while a `status.changed` call is in flight.
pub fn exit_mid_call(code: &str) -> ! {
    let code: u8 = parse("exit status", code);
    run(|membrane| async move {
        let session = ww::rpc::graft(&membrane).await?;
        let mut changed = session.status.changed_request();
        changed.get().init_since().set_seq(session.epoch);
        let mut call = changed.send().promise;
        if futures::poll!(&mut call).is_ready() {
            return Err(capnp::Error::failed(
                "status.changed resolved at once".into(),
            ));
        }
        // Give the connection the time to carry the call to the host, then leave.
        ww::rpc::sleep(Duration::from_millis(50)).await;
        if futures::poll!(&mut call).is_ready() {
            return Err(capnp::Error::failed("status.changed resolved".into()));
        }
        ww::exit(code)
    })
}

/// `rpc-advance`: advances the membrane's epoch, prints `advanced to N`.
pub fn advance() -> ! {
    match ww::rpc::advance_epoch() {
        Ok(epoch) => say(&format!("advanced to {epoch}")),
        Err(e) => error(&e),
    }
    ww::exit(0);
}

/// `rpc-bench N`: N sequential `host.id()` calls, timed one by one, then N at once.
pub fn bench(n: &str) -> ! {
    let n = bench_count(n);
    let timings = run(|membrane| async move {
        let host = host_of(&ww::rpc::graft(&membrane).await?)?;
        time_host_id(&host, n).await
    });
    report("rpc-bench", timings);
    ww::exit(0);
}

/// `rpc-attenuated-bench N`: what `rpc-bench` does, on the session's host and on that host
/// attenuated to `id` alone, interleaved so that both see the same machine: the sequential
/// calls alternate one by one, and the N-at-once rounds alternate (best of three each). The
/// difference is the cost of one membrane of the node's.
pub fn attenuated_bench(n: &str) -> ! {
    let n = bench_count(n);
    let (plain, attenuated) = run(|membrane| async move {
        let session = ww::rpc::graft(&membrane).await?;
        let host = host_of(&session)?;
        let narrowed = session
            .attenuate(host.clone())
            .allow(["id"])
            .build()
            .await?;
        for _ in 0..n.min(100) {
            host.id_request().send().promise.await?;
            narrowed.id_request().send().promise.await?;
        }
        let (mut plain, mut attenuated) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            plain.push(time_one(&host).await?);
            attenuated.push(time_one(&narrowed).await?);
        }
        let (mut plain_rate, mut attenuated_rate) = (0f64, 0f64);
        for _ in 0..3 {
            plain_rate = plain_rate.max(all_at_once(&host, n).await?);
            attenuated_rate = attenuated_rate.max(all_at_once(&narrowed, n).await?);
        }
        Ok(((plain, plain_rate), (attenuated, attenuated_rate)))
    });
    report("rpc-bench", plain);
    report("rpc-bench-attenuated", attenuated);
    ww::exit(0);
}

/// The N of a bench mode: at least 1.
fn bench_count(n: &str) -> usize {
    let n: usize = parse("count", n);
    if n == 0 {
        error(&"rpc-bench: N must be at least 1");
    }
    n
}

/// What a bench measured: each sequential call's round trip in microseconds, and calls a
/// second with all of them in flight at once.
type Timings = (Vec<f64>, f64);

/// Times `n` sequential `host.id()` calls one by one, then `n` sent at once.
async fn time_host_id(host: &host::Client, n: usize) -> Result<Timings, capnp::Error> {
    // Warm up: the first calls allocate what later ones reuse.
    for _ in 0..n.min(100) {
        host.id_request().send().promise.await?;
    }
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        rtt.push(time_one(host).await?);
    }
    Ok((rtt, all_at_once(host, n).await?))
}

/// One `host.id()` round trip, in microseconds.
async fn time_one(host: &host::Client) -> Result<f64, capnp::Error> {
    let start = Instant::now();
    host.id_request().send().promise.await?;
    Ok(micros(start.elapsed()))
}

/// `n` `host.id()` calls sent at once: calls a second.
async fn all_at_once(host: &host::Client, n: usize) -> Result<f64, capnp::Error> {
    let start = Instant::now();
    let calls: Vec<_> = (0..n).map(|_| host.id_request().send().promise).collect();
    for reply in join_all(calls).await {
        reply?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Prints `LABEL rtt_p50_us=… rtt_p99_us=… pipelined_per_sec=…`.
fn report(label: &str, (mut rtt, per_sec): Timings) {
    say(&format!(
        "{label} rtt_p50_us={:.1} rtt_p99_us={:.1} pipelined_per_sec={per_sec:.0}",
        percentile(&mut rtt, 50),
        percentile(&mut rtt, 99),
    ));
}

/// The membrane `rpc-export` exports: each graft is a session of the node's own (grafted
/// anew) whose Host is [`ExportedHost`].
struct ExportedMembrane {
    /// The node's membrane, set once the connection that exports this one is open.
    node: Rc<OnceCell<membrane::Client>>,
}

impl membrane::Server for ExportedMembrane {
    async fn graft(
        self: Rc<Self>,
        _: membrane::GraftParams,
        mut results: membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let node = self
            .node
            .get()
            .ok_or_else(|| capnp::Error::failed("testbed: not connected yet".into()))?;
        let session = ww::rpc::graft(node).await?;
        let mut out = results.get().init_session();
        out.reborrow().init_epoch().set_seq(session.epoch);
        out.set_host(capnp_rpc::new_client(ExportedHost {
            executor: session.executor.clone(),
        }));
        if let Some(executor) = session.executor {
            out.set_executor(executor);
        }
        out.set_status(session.status);
        Ok(())
    }
}

/// The Host of an exported session: its own id, the node's executor (when the node gave
/// one), nothing else.
struct ExportedHost {
    executor: Option<executor::Client>,
}

/// What the exported Host answers to what it does not do.
fn not_implemented() -> capnp::Error {
    capnp::Error::unimplemented("not implemented by testbed".into())
}

impl host::Server for ExportedHost {
    async fn id(
        self: Rc<Self>,
        _: host::IdParams,
        mut results: host::IdResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_peer_id(EXPORTED_ID);
        Ok(())
    }

    async fn addrs(
        self: Rc<Self>,
        _: host::AddrsParams,
        _: host::AddrsResults,
    ) -> Result<(), capnp::Error> {
        Err(not_implemented())
    }

    async fn peers(
        self: Rc<Self>,
        _: host::PeersParams,
        _: host::PeersResults,
    ) -> Result<(), capnp::Error> {
        Err(not_implemented())
    }

    async fn connect(
        self: Rc<Self>,
        _: host::ConnectParams,
        _: host::ConnectResults,
    ) -> Result<(), capnp::Error> {
        Err(not_implemented())
    }

    async fn executor(
        self: Rc<Self>,
        _: host::ExecutorParams,
        mut results: host::ExecutorResults,
    ) -> Result<(), capnp::Error> {
        let executor = self
            .executor
            .clone()
            .ok_or_else(|| capnp::Error::unimplemented("testbed holds no executor".into()))?;
        results.get().set_executor(executor);
        Ok(())
    }
}

/// `rpc-export`: exports [`ExportedMembrane`], prints `exported`, then waits for the
/// node's epoch to change, serving the exported membrane meanwhile; prints
/// `epoch advanced to N`.
pub fn export() -> ! {
    let advanced = ww::rpc::block_on(async {
        let node = Rc::new(OnceCell::new());
        let own: membrane::Client = capnp_rpc::new_client(ExportedMembrane { node: node.clone() });
        let membrane = ww::rpc::export(own)?.spawn();
        let _ = node.set(membrane.clone());
        // One round trip on the exporting connection: once the host answers on it, it serves
        // the exported membrane.
        let session = ww::rpc::graft(&membrane).await?;
        say("exported");
        let reply = session.status.current_request().send().promise.await?;
        let current = reply.get()?.get_epoch()?.get_seq();
        let mut changed = session.status.changed_request();
        changed.get().init_since().set_seq(current);
        let reply = changed.send().promise.await?;
        Ok::<_, RpcError>(reply.get()?.get_epoch()?.get_seq())
    });
    match advanced {
        Ok(Ok(epoch)) => say(&format!("epoch advanced to {epoch}")),
        Ok(Err(e)) | Err(e) => error(&e),
    }
    ww::exit(0);
}

/// The capabilities `rpc-membrane` makes once its own session is there, shared by every
/// graft after.
struct Narrowed {
    /// `reader`, `limited`, `expiring`, `revocable` and `revoker`.
    exports: Vec<Export>,
    /// pid0's own executor, for socket callers only; `None` when pid0 holds none.
    admin: Option<executor::Client>,
}

/// `rpc-membrane [EXPIRES_MS]`: exports a Counter with narrowed copies of it, printing
/// `graft: <caller>` for each graft and `membrane: serving` once everything is exported.
///
/// Every graft gets `counter` (the Counter, one value for all); once made, also `reader`
/// (`get` only), `limited` (5 calls a second), `expiring` (for EXPIRES_MS, default 1500,
/// from the start), `revocable` and `revoker` (which revokes `revocable` for everyone);
/// socket callers also get `admin`, pid0's own executor. A graft before they are made (the
/// node may graft for pid0's own session) gets `counter` alone rather than wait for them.
pub fn membrane(expires_ms: Option<&str>) -> ! {
    let expires = Duration::from_millis(
        expires_ms.map_or(DEFAULT_EXPIRES_MS, |ms| parse("milliseconds", ms)),
    );
    let served = ww::rpc::block_on(async move {
        let counter: counter::Client = capnp_rpc::new_client(Counter::new(0));
        let narrowed: Rc<OnceCell<Narrowed>> = Rc::new(OnceCell::new());
        let choose = {
            let (counter, narrowed) = (counter.clone(), narrowed.clone());
            move |caller: &Caller| {
                say(&format!("graft: {caller}"));
                let mut exports = vec![Export::new("counter", counter.clone())];
                if let Some(narrowed) = narrowed.get() {
                    exports.extend(narrowed.exports.iter().cloned());
                    if let (Caller::Socket, Some(admin)) = (caller, &narrowed.admin) {
                        exports.push(Export::new("admin", admin.clone()));
                    }
                }
                exports
            }
        };
        let (node, driver) = ww::rpc::export_for(choose)?.into_parts();
        ww::rpc::spawn(async move {
            // Once the host answers on the exporting connection, it serves the export.
            match narrow(&node, counter, expires).await {
                Ok(made) => {
                    let _ = narrowed.set(made);
                    say("membrane: serving");
                }
                Err(e) => error(&format_args!("rpc-membrane: {e}")),
            }
        });
        driver.await?;
        Ok::<_, RpcError>(())
    });
    match served {
        Ok(Ok(())) => error(&"rpc-membrane: the node ended the connection"),
        Ok(Err(e)) => error(&e),
        Err(e) => error(&e),
    }
}

/// Grafts onto the node's `membrane` for pid0's own session and makes `rpc-membrane`'s
/// narrowed copies of `counter` with its attenuator.
async fn narrow(
    membrane: &membrane::Client,
    counter: counter::Client,
    expires: Duration,
) -> Result<Narrowed, capnp::Error> {
    let session = ww::rpc::graft(membrane).await?;
    let reader = session
        .attenuate(counter.clone())
        .allow(["get"])
        .build()
        .await?;
    let limited = session
        .attenuate(counter.clone())
        .per_second(5)
        .build()
        .await?;
    let expiring = session
        .attenuate(counter.clone())
        .expires_in(expires)
        .build()
        .await?;
    let (revocable, revoker) = session.attenuate(counter).revocable().await?;
    Ok(Narrowed {
        exports: vec![
            Export::new("reader", reader),
            Export::new("limited", limited),
            Export::new("expiring", expiring),
            Export::new("revocable", revocable),
            Export::new("revoker", revoker.client()),
        ],
        admin: session.executor,
    })
}
