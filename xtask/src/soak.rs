//! `cargo xtask soak`: a long run that would show a leak. One release `ww run --rpc-socket`
//! node (pid0 the testbed, blocked on its stdin) is driven by a native Cap'n Proto client
//! through connections that open and close: each connection grafts, spawns children
//! (`testbed ping`, waited for) and makes `host.id()` calls in pipelined batches, then goes
//! away. Meanwhile ww's resident memory is sampled every second. The samples, and whether
//! memory stayed flat after warm-up, go into the "Soak" section of BENCHMARKS.md.
//!
//! Defaults: 100,000 spawns and 1,000,000 calls over 100 connections. Not run in CI.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use capnp_rpc::{RpcSystem, rpc_twoparty_capnp::Side, twoparty};
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

use crate::bench::BenchNode;
use crate::rpc::schema::host_capnp::{Stdio as CapStdio, exit_status};
use crate::rpc::schema::membrane_capnp::membrane;
use crate::{images, util};

/// How much the soak does.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    spawns: u64,
    calls: u64,
    connections: u64,
}

impl Options {
    /// `[--spawns N] [--calls N] [--connections N]`.
    pub fn parse(args: &[&str]) -> Result<Options> {
        let mut options = Options {
            spawns: 100_000,
            calls: 1_000_000,
            connections: 100,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a number"))?;
            let n: u64 = value
                .parse()
                .with_context(|| format!("{flag}: not a number: {value}"))?;
            match *flag {
                "--spawns" => options.spawns = n,
                "--calls" => options.calls = n,
                "--connections" => options.connections = n.max(1),
                other => bail!("soak: unknown flag {other}"),
            }
        }
        Ok(options)
    }
}

/// One sample of the run.
struct Sample {
    at: Duration,
    spawns: u64,
    calls: u64,
    rss_kib: u64,
}

/// Counters the client bumps and the sampler reads.
#[derive(Default)]
struct Progress {
    spawns: AtomicU64,
    calls: AtomicU64,
}

pub fn run(options: &Options) -> Result<()> {
    let root = util::root()?;
    println!("==> building the release ww and the images");
    util::run(Command::new(util::cargo()).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "ww",
    ]))?;
    images::run()?;
    let ww = root.join("target/release/ww");
    let cache = root.join("target/bench-cache");
    let dir = root.join("target/soak");
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("ww.sock");

    // pid0 blocks on its stdin, which the node holds open until it is dropped.
    let node = BenchNode::start(
        &ww,
        &cache,
        &socket,
        &root.join("examples/images/testbed"),
        &["block"],
    )?;

    println!(
        "==> soak: {} spawns and {} calls over {} connections",
        options.spawns, options.calls, options.connections
    );
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (progress, done, pid) = (progress.clone(), done.clone(), node.pid());
        std::thread::spawn(move || sample(pid, &progress, &done))
    };
    let started = Instant::now();
    let driven = drive(&socket, options, &progress);
    done.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    let elapsed = started.elapsed();
    drop(node);
    driven?;

    let section = render(&samples, options, elapsed);
    println!("\n{section}");
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, with_soak(&text, &section))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote the soak section of {}", path.display());
    Ok(())
}

/// Samples `pid`'s resident memory every second until `done`.
fn sample(pid: u32, progress: &Progress, done: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let rss_kib = rss_kib(pid).unwrap_or(0);
        samples.push(Sample {
            at: started.elapsed(),
            spawns: progress.spawns.load(Ordering::Relaxed),
            calls: progress.calls.load(Ordering::Relaxed),
            rss_kib,
        });
        if done.load(Ordering::Relaxed) {
            return samples;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens `options.connections` connections one after another, each doing its share.
fn drive(socket: &Path, options: &Options, progress: &Progress) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let per = |total: u64, i: u64| {
            total / options.connections + u64::from(i < total % options.connections)
        };
        for i in 0..options.connections {
            connection(
                socket,
                per(options.spawns, i),
                per(options.calls, i),
                progress,
            )
            .await
            .with_context(|| format!("connection {i}"))?;
        }
        Ok(())
    })
}

/// One connection: `spawns` spawn-and-waits and `calls` `host.id()` calls, interleaved.
async fn connection(socket: &Path, spawns: u64, calls: u64, progress: &Progress) -> Result<()> {
    /// Calls in flight at once.
    const BATCH: u64 = 500;
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (reader, writer) = stream.into_split();
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        Side::Client,
        Default::default(),
    );
    let mut system = RpcSystem::new(Box::new(network), None);
    let membrane: membrane::Client = system.bootstrap(Side::Server);
    let disconnector = system.get_disconnector();
    tokio::task::spawn_local(system);

    let session = membrane.graft_request().send().promise.await?;
    let session = session.get()?.get_session()?;
    let host = session.get_host()?;
    let executor = session.get_executor()?;
    let (mut spawned, mut called) = (0u64, 0u64);
    while spawned < spawns || called < calls {
        if spawned < spawns {
            let mut request = executor.spawn_request();
            {
                let mut params = request.get();
                params.reborrow().init_program().set_path("/bin/main.wasm");
                let mut opts = params.init_options();
                opts.reborrow().init_args(1).set(0, "ping");
                opts.set_stdin(CapStdio::Null);
                opts.set_stdout(CapStdio::Null);
                opts.set_stderr(CapStdio::Null);
            }
            let reply = request.send().promise.await?;
            let process = reply.get()?.get_process()?;
            let status = process.wait_request().send().promise.await?;
            match status.get()?.get_status()?.which()? {
                exit_status::Exited(0) => {}
                _ => bail!("a spawned child did not exit 0"),
            }
            spawned += 1;
            progress.spawns.fetch_add(1, Ordering::Relaxed);
        }
        if called < calls {
            // Keep calls proportional to spawns, so both run through the whole soak.
            let want = (calls * spawned)
                .checked_div(spawns)
                .map_or(calls, |share| share.max(called + 1).min(calls));
            while called < want {
                let n = BATCH.min(want - called);
                let replies: Vec<_> = (0..n).map(|_| host.id_request().send().promise).collect();
                for reply in futures::future::try_join_all(replies).await? {
                    reply.get()?.get_peer_id()?;
                }
                called += n;
                progress.calls.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    disconnector.await?;
    Ok(())
}

/// The Markdown of the soak section.
fn render(samples: &[Sample], options: &Options, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "## Soak\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask soak` (xtask/src/soak.rs), {}: one release `ww run --rpc-socket` \
         node driven by a native capnp-rpc client over {} connections opened one after another, \
         each grafting, spawning `testbed ping` children (waited for) and calling `host.id()` \
         in pipelined batches of 500. {} spawns and {} calls in {:.0} s. ww's resident memory, \
         sampled every second:\n",
        crate::bench::today(),
        options.connections,
        options.spawns,
        options.calls,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| t (s) | spawns | calls | RSS (MiB) |\n|---|---|---|---|"
    );
    // At most 30 rows: every k-th sample, and the last.
    let step = samples.len().div_ceil(30).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            let _ = writeln!(
                out,
                "| {:.0} | {} | {} | {:.1} |",
                s.at.as_secs_f64(),
                s.spawns,
                s.calls,
                s.rss_kib as f64 / 1024.0
            );
        }
    }
    // Flat after warm-up: the last quarter's peak against the peak of the second quarter.
    let quarter = samples.len() / 4;
    if quarter > 0 {
        let peak = |range: &[Sample]| range.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let warm = peak(&samples[quarter..2 * quarter]);
        let last = peak(&samples[3 * quarter..]);
        let growth = last as f64 / warm.max(1) as f64;
        let _ = writeln!(
            out,
            "\nPeak RSS in the second quarter of the run: {:.1} MiB; in the last quarter: {:.1} MiB \
             (×{growth:.2}). {}",
            warm as f64 / 1024.0,
            last as f64 / 1024.0,
            if growth <= 1.10 {
                "Flat after warm-up."
            } else {
                "It grew: look for a leak."
            }
        );
    }
    out
}

/// `text` with its `## Soak` section (up to the next `## ` heading) replaced by `section`,
/// or `section` appended.
pub fn with_soak(text: &str, section: &str) -> String {
    let Some(start) = text.find("## Soak") else {
        let mut out = text.trim_end().to_owned();
        out.push_str("\n\n");
        out.push_str(section);
        return out;
    };
    let rest = &text[start + 2..];
    let end = rest.find("\n## ").map_or(text.len(), |i| start + 2 + i + 1);
    format!("{}{}{}", &text[..start], section, &text[end..])
}

/// The section `text` holds, if any, for `cargo xtask bench` to keep when it rewrites the
/// file.
pub fn soak_section(text: &str) -> Option<String> {
    let start = text.find("## Soak")?;
    let rest = &text[start + 2..];
    let end = rest.find("\n## ").map_or(text.len(), |i| start + 2 + i + 1);
    Some(text[start..end].to_owned())
}
