//! Floods of the node's Cap'n Proto side (`ww run --rpc-socket`): frame headers announcing
//! the largest message, bodies dribbled in, pipelined calls whose replies are never read,
//! more connections than the socket serves, and headers past the limits.
//!
//! Each test attacks a real `ww`, samples its resident memory (`VmRSS` in
//! `/proc/PID/status`) all along and asserts the peak stayed under [`CEILING_KB`], checks
//! that an honest client still grafts and has `Host.id` answered within [`HONEST_WITHIN`],
//! and that `ww` then ends on SIGTERM (status 143) and removes its socket. Each prints what it
//! measured (`cargo test -p ww --test all -- attack::flood --nocapture`); `WW_TEST_BIN` runs
//! them against another build of `ww`, such as one before flow control.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use capnp::traits::HasTypeId as _;
use ww::rpc::schema::host_capnp::{Stdio as CapStdio, byte_stream, executor, process};
use ww::rpc::schema::membrane_capnp::membrane;

use super::frames;
use crate::rpc::{Node, block_on, connect};
use crate::support::*;

/// The most resident memory `ww` may reach during an attack: its own ~40 MB, the node-wide
/// buffer budget (`ww::rpc::flow::BUFFER_BUDGET`, ~130 MiB) and room to spare, far below
/// what any of these attacks cost before flow control.
const CEILING_KB: u64 = 300 * 1024;

/// How soon an honest client must have grafted and had `Host.id` answered.
const HONEST_WITHIN: Duration = Duration::from_secs(2);

/// The largest message the node accepts, in words: what every flooding header announces.
const MAX_WORDS: u32 = ww::rpc::server::MAX_MESSAGE_WORDS as u32;

/// How many clients flood at once in the header attacks.
const CLIENTS: usize = 50;

/// A [`Node`] whose first client proves it serves (and warms it up) before anything is
/// measured.
fn serving_node() -> Node {
    let node = Node::start();
    if let Err(why) = honest_client(&node.socket) {
        panic!("the node does not serve before the attack: {why}");
    }
    node
}

/// SIGTERM, then asserts that `ww` ended with status 143 and removed its socket.
fn terminate(mut node: Node) {
    node.signal(libc::SIGTERM);
    let status = node.exit_status("ww ignored SIGTERM");
    let stderr = node.stderr();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(!node.socket.exists(), "the socket outlived ww");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Connects, grafts and has `Host.id` answered: how long it took, or why it failed (which
/// includes taking longer than [`HONEST_WITHIN`]).
fn honest_client(socket: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let id = block_on(async {
        tokio::time::timeout(HONEST_WITHIN, async {
            let membrane = connect(socket).await;
            let response = membrane.graft_request().send().promise.await?;
            let host = response.get()?.get_session()?.get_host()?;
            let id = host.id_request().send().promise.await?;
            Ok::<_, capnp::Error>(id.get()?.get_peer_id()?.to_string()?)
        })
        .await
    });
    match id {
        Err(_) => Err(format!("not served within {HONEST_WITHIN:?}")),
        Ok(Err(e)) => Err(format!("its calls failed: {e}")),
        Ok(Ok(id)) if !id.starts_with("12D3KooW") => Err(format!("a strange id: {id}")),
        Ok(Ok(_)) => Ok(started.elapsed()),
    }
}

/// Prints what was measured, then asserts the peak under the ceiling and the honest client
/// served.
#[track_caller]
fn assert_bounded(case: &str, node: &Node, peak_kb: u64, honest: &Result<Duration, String>) {
    let hwm = crate::support::status_kib(node.pid(), "VmHWM:").unwrap_or(0);
    let served = match honest {
        Ok(took) => format!("served in {} ms", took.as_millis()),
        Err(why) => format!("FAILED: {why}"),
    };
    eprintln!(
        "flood {case}: peak VmRSS {} MB (VmHWM {} MB, ceiling {} MB); honest client {served}",
        peak_kb / 1024,
        hwm / 1024,
        CEILING_KB / 1024,
    );
    assert!(
        peak_kb < CEILING_KB,
        "{case}: ww reached {peak_kb} KiB of resident memory (ceiling {CEILING_KB} KiB)"
    );
    if let Err(why) = honest {
        panic!("{case}: the honest client was not served: {why}");
    }
}

/// A one-segment frame header announcing `words` words.
fn header(words: u32) -> [u8; 8] {
    let mut header = [0; 8];
    header[4..].copy_from_slice(&words.to_le_bytes());
    header
}

/// Writes `bytes` on a socket with a write timeout, retrying until they are all written, the
/// socket fails, or `stop` is set. Whether all went.
fn write_until(stream: &mut UnixStream, mut bytes: &[u8], stop: &AtomicBool) -> bool {
    while !bytes.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match stream.write(bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Whether ww ended the connection (end of stream or reset) within a couple of seconds.
fn ended_by_ww(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rest = [0; 4096];
    loop {
        match stream.read(&mut rest) {
            Ok(0) => return true,
            // An Abort message, perhaps: read on to the end.
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn flood_a_headers_announcing_65_mb_hold_no_memory() {
    let node = serving_node();
    let sampler = crate::support::RssWatch::start(node.pid());
    let attackers: Vec<UnixStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = UnixStream::connect(&node.socket).unwrap();
            stream.write_all(&header(MAX_WORDS)).unwrap();
            stream
        })
        .collect();
    // Time for ww to read every header (and, before flow control, allocate for each).
    std::thread::sleep(Duration::from_secs(2));
    let honest = honest_client(&node.socket);
    // The peak, should the attack have slowed the client.
    std::thread::sleep(Duration::from_secs(2));
    let peak = sampler.peak() / 1024;
    assert_bounded("(a) 50 headers of 65 MB", &node, peak, &honest);
    // SIGTERM while the attackers still hold their connections.
    terminate(node);
    drop(attackers);
}

#[test]
fn flood_b_dribbled_bodies_are_held_within_the_budget() {
    const CHUNK: usize = 256 * 1024;
    let node = serving_node();
    let sampler = crate::support::RssWatch::start(node.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<JoinHandle<usize>> = (0..CLIENTS)
        .map(|_| {
            let socket = node.socket.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = UnixStream::connect(&socket).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                if !write_until(&mut stream, &header(MAX_WORDS), &stop) {
                    return 0;
                }
                // The body in 256 KiB pieces every 10 ms, one word short of whole: the frame
                // never completes.
                let chunk = vec![0x5a; CHUNK];
                let mut left = MAX_WORDS as usize * 8 - 8;
                let mut sent = 0;
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    let n = left.min(CHUNK);
                    if !write_until(&mut stream, &chunk[..n], &stop) {
                        break;
                    }
                    left -= n;
                    sent += n;
                    std::thread::sleep(Duration::from_millis(10));
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(stream);
                sent
            })
        })
        .collect();
    // Long enough for a connection given room to send a whole body but the last word.
    std::thread::sleep(Duration::from_secs(5));
    let honest = honest_client(&node.socket);
    std::thread::sleep(Duration::from_millis(500));
    let peak = sampler.peak() / 1024;
    stop.store(true, Ordering::Relaxed);
    let sent: usize = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "flood (b): the attackers got {} MB of bodies into sockets",
        sent >> 20
    );
    assert_bounded("(b) 50 dribbled bodies", &node, peak, &honest);
    terminate(node);
}

#[test]
fn flood_c_pipelined_calls_whose_replies_are_never_read_are_bounded() {
    const PAIRS: u32 = 10_000;
    const DATA: usize = 64 * 1024;
    let node = serving_node();
    let sampler = crate::support::RssWatch::start(node.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let socket = node.socket.clone();
    let stopping = stop.clone();
    // A client that pipelines, on promises alone: bootstrap, graft, spawn child-echo with
    // piped stdio, its stdin and stdout; then 10,000 writes of 64 KiB to the stdin and
    // 10,000 reads of 64 KiB from the stdout (20,000 calls whose replies would be 640 MB),
    // and never reads its socket.
    let attacker = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let program = std::fs::read(image("child-echo").join("bin/main.wasm")).unwrap();
        let mut setup = frames::bootstrap(0);
        setup.extend(frames::call(
            1,
            0,
            &[],
            (membrane::Client::TYPE_ID, 0),
            64,
            |_| {},
        ));
        setup.extend(frames::call(
            2,
            1,
            &[0, 2],
            (executor::Client::TYPE_ID, 0),
            (program.len() / 8) as u32 + 256,
            |payload| {
                let mut params = payload
                    .init_content()
                    .init_as::<executor::spawn_params::Builder<'_>>();
                params.reborrow().init_program().set_bytes(&program);
                let mut options = params.init_options();
                options.set_stdin(CapStdio::Pipe);
                options.set_stdout(CapStdio::Pipe);
                options.set_stderr(CapStdio::Null);
            },
        ));
        setup.extend(frames::call(
            3,
            2,
            &[0],
            (process::Client::TYPE_ID, 0),
            64,
            |_| {},
        ));
        setup.extend(frames::call(
            4,
            2,
            &[0],
            (process::Client::TYPE_ID, 1),
            64,
            |_| {},
        ));
        if !write_until(&mut stream, &setup, &stopping) {
            return (0, stream);
        }
        let data = vec![0x61; DATA];
        let mut calls = 0;
        for i in 0..PAIRS {
            let write = (byte_stream::Client::TYPE_ID, 1);
            let words = (DATA / 8) as u32 + 64;
            let write = frames::call(5 + 2 * i, 3, &[0], write, words, |p| {
                p.init_content()
                    .init_as::<byte_stream::write_params::Builder<'_>>()
                    .set_data(&data);
            });
            let read = (byte_stream::Client::TYPE_ID, 0);
            let read = frames::call(6 + 2 * i, 4, &[0], read, 64, |p| {
                p.init_content()
                    .init_as::<byte_stream::read_params::Builder<'_>>()
                    .set_max_bytes(DATA as u32);
            });
            if !write_until(&mut stream, &write, &stopping)
                || !write_until(&mut stream, &read, &stopping)
            {
                break;
            }
            calls += 2;
        }
        (calls, stream)
    });
    std::thread::sleep(Duration::from_secs(8));
    let honest = honest_client(&node.socket);
    let peak = sampler.peak() / 1024;
    stop.store(true, Ordering::Relaxed);
    let (calls, stream) = attacker.join().unwrap();
    eprintln!("flood (c): the attacker got {calls} calls into its socket");
    assert_bounded(
        "(c) 20,000 pipelined calls, replies never read",
        &node,
        peak,
        &honest,
    );
    // The replies were real (an attack whose calls failed would cost ww nothing and be read
    // to its end): ww stopped reading the client.
    assert!(
        calls < 2 * PAIRS,
        "ww read all {calls} calls of a client that reads no reply"
    );
    terminate(node);
    drop(stream);
}

#[test]
fn flood_d_200_connections_at_once_meet_the_connection_limit() {
    const OPENED: usize = 200;
    let limit = ww::rpc::socket::MAX_CONNECTIONS;
    let node = serving_node();
    let sampler = crate::support::RssWatch::start(node.pid());
    let mut conns: Vec<UnixStream> = (0..OPENED)
        .map(|_| UnixStream::connect(&node.socket).unwrap())
        .collect();
    // Each asks for the bootstrap capability; a served one gets its Return.
    for conn in &mut conns {
        let _ = conn.write_all(&frames::bootstrap(0));
    }
    let (mut served, mut refused, mut silent) = (0, 0, 0);
    for conn in &mut conns {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0];
        match conn.read(&mut byte) {
            Ok(1) => served += 1,
            Ok(_) => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            Err(_) => silent += 1,
        }
    }
    eprintln!(
        "flood (d): of {OPENED} connections at once, {served} served, {refused} closed at once, \
         {silent} neither (limit {limit})"
    );
    // While the slots are taken, a further client is turned away at once.
    let mut late = UnixStream::connect(&node.socket).unwrap();
    let late_refused = ended_by_ww(&mut late);
    drop(conns);
    // Slots free as their connections end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let honest = loop {
        let started = Instant::now();
        let mut probe = UnixStream::connect(&node.socket).unwrap();
        let _ = probe.write_all(&frames::bootstrap(0));
        probe
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        if probe.read(&mut [0]).is_ok_and(|n| n == 1) {
            drop(probe);
            break honest_client(&node.socket).map(|took| took + started.elapsed());
        }
        if Instant::now() > deadline {
            break Err("the slots never freed".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak = sampler.peak() / 1024;
    assert_bounded("(d) 200 connections at once", &node, peak, &honest);
    assert_eq!(silent, 0, "connections neither served nor refused");
    assert!(
        served <= limit,
        "{served} connections served at once, more than the limit of {limit}"
    );
    assert_eq!(served + refused, OPENED);
    assert!(served >= 1);
    assert!(late_refused, "a connection past the limit was kept");
    terminate(node);
}

#[test]
fn flood_e_an_oversize_header_ends_only_its_connection() {
    let node = serving_node();
    let sampler = crate::support::RssWatch::start(node.pid());
    // One segment one word past the limit, with a body coming after it.
    let mut over = UnixStream::connect(&node.socket).unwrap();
    over.write_all(&header(MAX_WORDS + 1)).unwrap();
    over.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = over.write_all(&vec![0; 1 << 20]);
    // A segment count no message has (4096).
    let mut segments = UnixStream::connect(&node.socket).unwrap();
    segments.write_all(&[0xff, 0x0f, 0, 0, 0, 0, 0, 0]).unwrap();
    // Three segments, each under the limit, their sum over it.
    let mut sum = UnixStream::connect(&node.socket).unwrap();
    let third = MAX_WORDS / 2;
    let mut table = vec![2, 0, 0, 0];
    for size in [third, third, third] {
        table.extend_from_slice(&size.to_le_bytes());
    }
    sum.write_all(&table).unwrap();
    // An honest client meanwhile, on its own connection, held open throughout.
    let honest = honest_client(&node.socket);
    let ended: Vec<(&str, bool)> = [
        ("oversize", &mut over),
        ("too many segments", &mut segments),
        ("oversize sum", &mut sum),
    ]
    .into_iter()
    .map(|(what, stream)| (what, ended_by_ww(stream)))
    .collect();
    let again = honest_client(&node.socket);
    let peak = sampler.peak() / 1024;
    let stderr = node.stderr();
    eprintln!("flood (e): connections ended by ww: {ended:?}; ww's stderr:\n{stderr}");
    let honest = honest.and_then(|first| again.map(|second| first.max(second)));
    assert_bounded("(e) oversize headers", &node, peak, &honest);
    for (what, ended) in ended {
        assert!(ended, "ww kept the {what} connection open");
    }
    // Each refusal is logged with its reason, at the default level.
    let refusals = stderr
        .lines()
        .filter(|l| l.contains("refused a Cap'n Proto frame from its header"))
        .count();
    assert_eq!(refusals, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("more than the {MAX_WORDS} allowed")),
        "{stderr}"
    );
    assert!(stderr.contains("4096 segments"), "{stderr}");
    terminate(node);
}
