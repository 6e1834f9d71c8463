//! The session membrane (`rpc::membrane`, `rpc::node`) attacked from outside, with real
//! `ww` processes and real Cap'n Proto clients: revocation of everything a session reached
//! (results, pipelined capabilities not yet resolved, capabilities obtained through stale
//! ones, what pid0's exported executor gave), floods of grafts and of calls racing SIGHUP,
//! calls the wrapper must refuse or pass untouched (unknown interfaces and methods, cap
//! tables that point nowhere, parameters whose pointers alias so that a copy is far larger
//! than the message), and network peers against `--allow-peer` and `--peer-session info`.
//!
//! Each test asserts that the attack fails cleanly, that ww did not panic, and that the node
//! still serves an honest client. Measurements are printed
//! (`cargo test -p ww --test all -- attack::membrane --nocapture`).

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use capnp::ErrorKind;
use capnp::traits::HasTypeId as _;
use capnp_rpc::rpc_capnp::message;
use ww::rpc::schema::host_capnp::{Stdio as CapStdio, byte_stream, executor, host, process};
use ww::rpc::schema::membrane_capnp::{membrane, status_poller};

use super::frames;
use crate::rpc::{Node, block_on, child_echo, connect, start_exporting};
use crate::support::*;

/// What a test holds of a socket session.
struct Session {
    epoch: u64,
    host: host::Client,
    executor: executor::Client,
    status: status_poller::Client,
}

async fn graft(membrane: &membrane::Client) -> Result<Session, capnp::Error> {
    let response = membrane.graft_request().send().promise.await?;
    let session = response.get()?.get_session()?;
    Ok(Session {
        epoch: session.get_epoch()?.get_seq(),
        host: session.get_host()?,
        executor: session.get_executor()?,
        status: session.get_status()?,
    })
}

async fn host_id(host: &host::Client) -> Result<String, capnp::Error> {
    let response = host.id_request().send().promise.await?;
    Ok(response.get()?.get_peer_id()?.to_string()?)
}

/// A spawn request for child-echo with piped stdin and stdout (it runs until its stdin
/// closes).
fn spawn_request(
    executor: &executor::Client,
    program: &[u8],
) -> capnp::capability::Request<executor::spawn_params::Owned, executor::spawn_results::Owned> {
    let mut request = executor.spawn_request();
    let mut params = request.get();
    params.reborrow().init_program().set_bytes(program);
    let mut options = params.init_options();
    options.set_stdin(CapStdio::Pipe);
    options.set_stdout(CapStdio::Pipe);
    options.set_stderr(CapStdio::Null);
    request
}

async fn spawn_echo(executor: &executor::Client) -> Result<process::Client, capnp::Error> {
    let response = spawn_request(executor, &child_echo())
        .send()
        .promise
        .await?;
    response.get()?.get_process()
}

async fn read(stream: &byte_stream::Client) -> Result<Vec<u8>, capnp::Error> {
    let mut request = stream.read_request();
    request.get().set_max_bytes(4096);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_data()?.to_vec())
}

async fn write(stream: &byte_stream::Client, data: &[u8]) -> Result<(), capnp::Error> {
    let mut request = stream.write_request();
    request.get().set_data(data);
    request.send().promise.await?;
    Ok(())
}

async fn pid(process: &process::Client) -> Result<u32, capnp::Error> {
    let response = process.id_request().send().promise.await?;
    Ok(response.get()?.get_id())
}

/// Asserts the stale-epoch refusal: DISCONNECTED, "stale epoch".
#[track_caller]
fn assert_stale<T>(what: &str, result: Result<T, capnp::Error>) {
    match result {
        Err(e) => assert!(ww::rpc::epoch::is_stale(&e), "{what}: {e}"),
        Ok(_) => panic!("{what}: a stale session's capability still works"),
    }
}

/// Asserts a refusal of `kind`.
#[track_caller]
fn assert_kind<T>(what: &str, kind: ErrorKind, result: Result<T, capnp::Error>) {
    match result {
        Err(e) => assert_eq!(e.kind, kind, "{what}: {e}"),
        Ok(_) => panic!("{what}: succeeded"),
    }
}

/// Waits until the node's epoch leaves `since`, through a (never revoked) StatusPoller.
async fn wait_advanced(status: &status_poller::Client, since: u64) -> u64 {
    let mut request = status.changed_request();
    request.get().init_since().set_seq(since);
    let response = request.send().promise.await.expect("StatusPoller.changed");
    response.get().unwrap().get_epoch().unwrap().get_seq()
}

/// A fresh connection and graft that reach `Host.id` and spawn child-echo: the node serves.
async fn serves(socket: &std::path::Path) -> Duration {
    let started = Instant::now();
    let session = graft(&connect(socket).await).await.expect("a new graft");
    host_id(&session.host)
        .await
        .expect("Host.id on a new graft");
    let process = spawn_echo(&session.executor)
        .await
        .expect("spawn on a new graft");
    process.kill_request().send().promise.await.expect("kill");
    started.elapsed()
}

/// Stops the node (its pid0's stdin closes) and asserts a clean exit without a panic.
#[track_caller]
fn assert_clean_stop(node: Node) {
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// ww's resident memory now, in KiB.
fn rss_kib(node: &Node) -> u64 {
    status_kib(node.pid(), "VmRSS:").expect("ww's VmRSS")
}

#[test]
fn membrane_sighup_revokes_results_pipelined_and_later_capabilities() {
    let node = Node::start();
    let socket = node.socket.clone();
    block_on(async {
        let membrane = connect(&socket).await;
        let old = graft(&membrane).await.unwrap();
        let program = child_echo();

        // Awaited: a process, its streams, the Host's executor.
        let process = spawn_echo(&old.executor).await.unwrap();
        let stdin = process.stdin_request().send().promise.await.unwrap();
        let stdin = stdin.get().unwrap().get_stream().unwrap();
        let stdout = process.stdout_request().send().promise.await.unwrap();
        let stdout = stdout.get().unwrap().get_stream().unwrap();
        write(&stdin, b"ping\n").await.unwrap();
        assert_eq!(read(&stdout).await.unwrap(), b"ping\n");
        let via_host = old.host.executor_request().send().promise.await.unwrap();
        let via_host = via_host.get().unwrap().get_executor().unwrap();
        let child = pid(&process).await.unwrap();

        // Pipelined, used once (resolved), and pipelined, never awaited (unresolved): a
        // process's stdout through a spawn nobody awaited, and the Host's executor's spawn.
        let used = spawn_request(&old.executor, &program)
            .send()
            .pipeline
            .get_process();
        pid(&used).await.unwrap();
        // Their promises are kept (not awaited): a question the client finished early gets
        // its pipelined calls failed by capnp-rpc with "null capability pointer" instead of
        // the call's own error (`rpc.rs`, `ResultsDone::from_results_inner`), see below.
        let spawned = spawn_request(&old.executor, &program).send();
        let stdout_call = spawned.pipeline.get_process().stdout_request().send();
        let unresolved_out = stdout_call.pipeline.get_stream();
        let executor_call = old.host.executor_request().send();
        let unresolved_spawn = executor_call.pipeline.get_executor();
        let spawned_too = spawn_request(&unresolved_spawn, &program).send();
        let unresolved_process = spawned_too.pipeline.get_process();
        // And one whose promises are dropped at once.
        let dropped = spawn_request(&old.executor, &program)
            .send()
            .pipeline
            .get_process();
        // Calls in flight across the advance: a read nobody will answer, a wait.
        let pending_read = stdout.read_request().send().promise;
        let pending_wait = process.wait_request().send().promise;

        node.signal(libc::SIGHUP);
        assert_eq!(wait_advanced(&old.status, old.epoch).await, old.epoch + 1);

        assert_stale("a pending read", pending_read.await);
        assert_stale("a pending wait", pending_wait.await);
        assert_stale("Host.id", host_id(&old.host).await);
        assert_stale("Session.executor", spawn_echo(&old.executor).await);
        assert_stale("Host.executor's executor", spawn_echo(&via_host).await);
        assert_stale("a process", pid(&process).await);
        assert_stale("its stdin", write(&stdin, b"after\n").await);
        assert_stale("its stdout", read(&stdout).await);
        assert_stale("a resolved pipelined process", pid(&used).await);
        assert_stale(
            "an unresolved pipelined stdout",
            read(&unresolved_out).await,
        );
        assert_stale(
            "an unresolved pipelined process",
            pid(&unresolved_process).await,
        );
        match pid(&dropped).await {
            Ok(_) => panic!("a pipelined process of a stale session works"),
            Err(e) if ww::rpc::epoch::is_stale(&e) => {}
            Err(e) => assert!(e.extra.contains("null capability pointer"), "{e}"),
        }
        drop((spawned, stdout_call, executor_call, spawned_too));
        // Obtained after the advance, by pipelining on stale capabilities.
        let later = spawn_request(&old.executor, &program)
            .send()
            .pipeline
            .get_process();
        assert_stale("a process pipelined after the advance", pid(&later).await);
        let later_out = process.stdout_request().send().pipeline.get_stream();
        assert_stale(
            "a stream pipelined after the advance",
            read(&later_out).await,
        );
        let later_exec = old.host.executor_request().send().pipeline.get_executor();
        assert_stale(
            "an executor pipelined after the advance",
            spawn_echo(&later_exec).await,
        );

        // The revoked child was not left running through a capability the client still
        // holds: the membrane dropped what it held, so nothing keeps it.
        let new = graft(&membrane).await.unwrap();
        assert_eq!(new.epoch, old.epoch + 1);
        host_id(&new.host).await.expect("a new graft works");
        let fresh = spawn_echo(&new.executor).await.expect("and spawns");
        assert_ne!(pid(&fresh).await.unwrap(), child);
        eprintln!("membrane revocation: 17 stale capabilities refused, child {child} revoked");
        serves(&socket).await;
    });
    assert_clean_stop(node);
}

/// Reads RPC messages from `stream` until the Return for `question` (`true`) or the end of
/// the connection (`false`); panics after `secs`.
fn answered_or_ended(stream: &mut UnixStream, question: u32, secs: u64) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    loop {
        let reader = match capnp::serialize::read_message(
            &mut *stream,
            capnp::message::ReaderOptions::new(),
        ) {
            Ok(reader) => reader,
            Err(e) if e.extra.contains("timed out") || e.extra.contains("temporarily") => {
                panic!("neither a Return for question {question} nor the end: {e}")
            }
            // The end of the stream (premature or not), or a reset.
            Err(_) => return false,
        };
        let message: message::Reader<'_> = reader.get_root().unwrap();
        if let Ok(message::Return(Ok(ret))) = message.which()
            && ret.get_answer_id() == question
        {
            return true;
        }
    }
}

/// Reads RPC messages from `stream` until the Return for `question`.
#[track_caller]
fn await_return(stream: &mut UnixStream, question: u32, secs: u64) {
    assert!(
        answered_or_ended(stream, question, secs),
        "ww ended the connection before answering question {question}"
    );
}

/// The method numbers used by raw frames.
const GRAFT: (u64, u16) = (membrane::Client::TYPE_ID, 0);
const SPAWN: (u64, u16) = (executor::Client::TYPE_ID, 0);
const PROCESS_WAIT: (u64, u16) = (process::Client::TYPE_ID, 3);
const PROCESS_ID: (u64, u16) = (process::Client::TYPE_ID, 5);

/// Bootstrap (question 0), graft (1), spawn child-echo with piped stdin so that it runs (2),
/// and the process's id (3): a process at `[2, 0]` that waits on its stdin.
fn raw_session_with_a_process(socket: &std::path::Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    let program = child_echo();
    let mut setup = frames::bootstrap(0);
    setup.extend(frames::call(1, 0, &[], GRAFT, 64, |_| {}));
    let words = (program.len() / 8) as u32 + 256;
    setup.extend(frames::call(2, 1, &[0, 2], SPAWN, words, |payload| {
        let mut params = payload
            .init_content()
            .init_as::<executor::spawn_params::Builder<'_>>();
        params.reborrow().init_program().set_bytes(&program);
        let mut options = params.init_options();
        options.set_stdin(CapStdio::Pipe);
        options.set_stdout(CapStdio::Pipe);
        options.set_stderr(CapStdio::Null);
    }));
    setup.extend(frames::call(3, 2, &[0], PROCESS_ID, 64, |_| {}));
    stream.write_all(&setup).unwrap();
    await_return(&mut stream, 3, 30);
    stream
}

/// Parameters whose pointers alias would cost the node what they amount to once copied, not
/// what was sent: the membrane deep-copies every call's parameters (into a staging message
/// and into the request), so `Process.wait` calls of 48 KiB each, whose parameters
/// (`List(Data)`: 2,048 pointers at one 16 KiB blob) the callee never reads, each held
/// 32 MiB in ww for as long as the child ran (6 calls: ww from 34 MiB to 259 MiB; the 1,024
/// calls a connection may have in flight would be 32 GiB). Such a frame is not valid Cap'n
/// Proto: ww ends the connection that sends it, before capnp-rpc reads it.
#[test]
fn membrane_aliased_parameters_are_not_amplified() {
    const CALLS: u32 = 6;
    const N: u32 = 2048;
    const BLOB: usize = 16 << 10;
    let node = Node::start();
    let mut stream = raw_session_with_a_process(&node.socket);
    let before = rss_kib(&node);
    let sampler = RssWatch::start(node.pid());
    let mut sent = 0;
    for i in 0..CALLS {
        let frame = frames::aliased(10 + i, 2, &[0], PROCESS_WAIT, N, BLOB);
        // ww may have ended the connection already.
        if stream.write_all(&frame).is_ok() {
            sent += frame.len();
        }
    }
    // Once this is answered, every call before it was taken (calls are delivered in order).
    let _ = stream.write_all(&frames::call(100, 2, &[0], PROCESS_ID, 64, |_| {}));
    let answered = answered_or_ended(&mut stream, 100, 30);
    let after = rss_kib(&node);
    let peak = sampler.peak() / 1024;
    let honest = block_on(serves(&node.socket));
    eprintln!(
        "membrane aliasing: {} KiB of calls sent, aliasing to {} MiB; ww's RSS {} MiB before, \
         {} MiB after (peak {} MiB); connection {}; an honest client served in {} ms",
        sent >> 10,
        (u64::from(CALLS) * u64::from(N) * BLOB as u64) >> 20,
        before >> 10,
        after >> 10,
        peak >> 10,
        if answered { "kept" } else { "ended by ww" },
        honest.as_millis()
    );
    drop(stream);
    assert!(
        after < before + 32 * 1024 && peak < before + 64 * 1024,
        "{} KiB of calls grew ww from {before} KiB to {after} KiB (peak {peak} KiB)",
        sent >> 10
    );
    assert!(
        !answered,
        "ww kept a connection that sent aliasing pointers"
    );
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("refused a Cap'n Proto frame whose pointers alias"),
        "{stderr}"
    );
}

/// What pid0's exported membrane gave (testbed `rpc-export`: a Host of its own, pid0's
/// executor) is behind the client's session membrane: an advance of the epoch revokes the
/// processes, streams and executors reached through it, awaited or pipelined. The advance is
/// a reload (SIGUSR1), which restarts pid0 and keeps ww up (on SIGHUP, `rpc-export` ends,
/// and ww with it, racing the calls); the new pid0 exports again and serves a new graft.
#[test]
fn membrane_an_advance_revokes_what_the_exported_executor_gave() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ww.sock");
    let mut child = start_exporting(&socket);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().map(|l| l.unwrap()).as_deref(),
        Some("exported")
    );
    block_on(async {
        let session = graft(&connect(&socket).await).await.unwrap();
        assert_eq!(host_id(&session.host).await.unwrap(), "exported by testbed");
        let process = spawn_echo(&session.executor).await.unwrap();
        let stdout = process.stdout_request().send().promise.await.unwrap();
        let stdout = stdout.get().unwrap().get_stream().unwrap();
        let via_host = session
            .host
            .executor_request()
            .send()
            .promise
            .await
            .unwrap();
        let via_host = via_host.get().unwrap().get_executor().unwrap();
        let piped = spawn_echo(&via_host)
            .await
            .expect("the exported Host's executor");
        let unresolved = spawn_request(&session.executor, &child_echo())
            .send()
            .pipeline
            .get_process()
            .stdin_request()
            .send()
            .pipeline
            .get_stream();
        let pending = stdout.read_request().send().promise;

        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
        assert_eq!(
            wait_advanced(&session.status, session.epoch).await,
            session.epoch + 1
        );

        // All at once, so that they reach ww before pid0 ends it.
        let names = [
            "a pending read",
            "the exported Host",
            "the exported executor",
            "the Host's executor",
            "a process",
            "a process of the Host's executor",
            "its stdout",
            "an unresolved pipelined stdin",
        ];
        let calls: Vec<futures::future::LocalBoxFuture<'_, Result<(), capnp::Error>>> = vec![
            Box::pin(async { pending.await.map(|_| ()) }),
            Box::pin(async { host_id(&session.host).await.map(|_| ()) }),
            Box::pin(async { spawn_echo(&session.executor).await.map(|_| ()) }),
            Box::pin(async { spawn_echo(&via_host).await.map(|_| ()) }),
            Box::pin(async { pid(&process).await.map(|_| ()) }),
            Box::pin(async { pid(&piped).await.map(|_| ()) }),
            Box::pin(async { read(&stdout).await.map(|_| ()) }),
            Box::pin(async { write(&unresolved, b"x").await }),
        ];
        let results = names
            .into_iter()
            .zip(futures::future::join_all(calls).await);
        for (what, result) in results {
            assert_stale(what, result);
        }
        // The restarted pid0 exports again; a new graft is its.
        let again = loop {
            match lines.next().map(|l| l.unwrap()) {
                Some(line) if line == "exported" => break true,
                Some(_) => {}
                None => break false,
            }
        };
        assert!(again, "the reloaded pid0 did not export");
        let new = graft(&connect(&socket).await).await.unwrap();
        assert_eq!(new.epoch, session.epoch + 1);
        assert_eq!(host_id(&new.host).await.unwrap(), "exported by testbed");
        let fresh = spawn_echo(&new.executor)
            .await
            .expect("the new export spawns");
        fresh.kill_request().send().promise.await.unwrap();
    });
    eprintln!("membrane export: 8 capabilities of the exported session refused stale");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l == "epoch advanced to 2"), "{rest:?}");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A client grafting without end: one connection holds at most
/// `MAX_SESSIONS_PER_CONNECTION` sessions (the next graft fails OVERLOADED until it releases
/// one; before the bound, 20,000 held sessions grew ww by ~90 MiB and nothing stopped a peer
/// at a million); four connections full of sessions cost ww a bounded few MiB each, an
/// honest client is served meanwhile, and SIGHUP revokes them all at once without stalling
/// the node.
#[test]
fn membrane_sessions_per_connection_are_bounded_and_revoked_at_once() {
    const CONNECTIONS: usize = 4;
    let max = ww::rpc::MAX_SESSIONS_PER_CONNECTION;
    let node = Node::start();
    let socket = node.socket.clone();
    let before = rss_kib(&node);
    block_on(async {
        let started = Instant::now();
        let mut held = Vec::with_capacity(CONNECTIONS * max);
        let mut membranes = Vec::new();
        for _ in 0..CONNECTIONS {
            let membrane = connect(&socket).await;
            let batch = (0..max).map(|_| graft(&membrane));
            for session in futures::future::join_all(batch).await {
                held.push(session.expect("a graft within the bound"));
            }
            // One more on this connection is refused, and says why.
            let e = match graft(&membrane).await {
                Ok(_) => panic!("graft {} on one connection succeeded", max + 1),
                Err(e) => e,
            };
            assert_eq!(e.kind, ErrorKind::Overloaded, "{e}");
            membranes.push(membrane);
        }
        let grafting = started.elapsed();
        let grown = rss_kib(&node).saturating_sub(before);
        let honest = serves(&socket).await;
        // Releasing sessions makes room again.
        held.truncate(held.len() - 10);
        let last = membranes.last().expect("a connection");
        let mut again = None;
        for _ in 0..100 {
            match graft(last).await {
                Ok(session) => {
                    again = Some(session);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        held.push(again.expect("a graft once sessions were released"));

        // Revoke all of them; time another client's first call, and the first refusal.
        let since = held[0].epoch;
        let status = held[0].status.clone();
        node.signal(libc::SIGHUP);
        wait_advanced(&status, since).await;
        let advanced = Instant::now();
        let after = serves(&socket).await;
        assert_stale("a held session", host_id(&held[held.len() - 2].host).await);
        let refused = advanced.elapsed();
        let sessions = held.len();
        eprintln!(
            "membrane flood: {sessions} sessions on {CONNECTIONS} connections in {} ms; ww grew \
             {} MiB ({} bytes a session); an honest client served in {} ms; after SIGHUP, \
             another client served in {} ms, a held session refused within {} ms",
            grafting.as_millis(),
            grown >> 10,
            grown * 1024 / sessions as u64,
            honest.as_millis(),
            after.as_millis(),
            refused.as_millis(),
        );
        assert!(honest < Duration::from_secs(2), "honest client: {honest:?}");
        assert!(after < Duration::from_secs(2), "after SIGHUP: {after:?}");
        // A session costs a few KiB: a membrane, its task, two wrappers, three servers.
        assert!(
            grown < 64 * 1024,
            "{sessions} sessions grew ww by {grown} KiB"
        );
        drop(held);
    });
    block_on(serves(&socket));
    assert_clean_stop(node);
}

/// 1,000 calls in flight on one session when SIGHUP arrives: each succeeds or fails stale,
/// nothing else; no panic; a new graft works.
#[test]
fn membrane_1000_calls_in_flight_race_sighup() {
    let node = Node::start();
    let socket = node.socket.clone();
    let (ok, stale) = block_on(async {
        let membrane = connect(&socket).await;
        let session = graft(&membrane).await.unwrap();
        let process = spawn_echo(&session.executor).await.unwrap();
        let stdout = process.stdout_request().send().promise.await.unwrap();
        let stdout = stdout.get().unwrap().get_stream().unwrap();
        let mut calls: Vec<futures::future::LocalBoxFuture<'_, Result<(), capnp::Error>>> =
            Vec::new();
        for i in 0..1000 {
            calls.push(match i % 4 {
                0 => Box::pin(async { host_id(&session.host).await.map(|_| ()) }),
                1 => Box::pin(async { pid(&process).await.map(|_| ()) }),
                // Never answered before the advance.
                2 => Box::pin(async { read(&stdout).await.map(|_| ()) }),
                _ => Box::pin(async {
                    let p = spawn_request(&session.executor, b"\0asm\x01\0\0\0")
                        .send()
                        .pipeline
                        .get_process();
                    pid(&p).await.map(|_| ())
                }),
            });
        }
        let all = futures::future::join_all(calls);
        let signal = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            node.signal(libc::SIGHUP);
        };
        let (results, ()) = futures::join!(all, signal);
        let (mut ok, mut stale) = (0, 0);
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => ok += 1,
                Err(e) if ww::rpc::epoch::is_stale(&e) => stale += 1,
                // A spawn of an empty module fails on its own, before the advance.
                Err(e) if i % 4 == 3 && e.kind == ErrorKind::Failed => ok += 1,
                Err(e) => panic!("call {i}: neither done nor stale: {e}"),
            }
        }
        let new = graft(&membrane).await.unwrap();
        assert_eq!(new.epoch, session.epoch + 1);
        serves(&socket).await;
        (ok, stale)
    });
    eprintln!("membrane race: of 1000 calls in flight, {ok} finished, {stale} refused stale");
    assert!(
        stale >= 250,
        "the 250 reads could not finish: {stale} stale"
    );
    assert_clean_stop(node);
}

/// Calls the wrapper passes on unchecked: unknown interfaces, methods past the last, another
/// interface's methods on a capability, a call carrying 100,000 capabilities. Each fails
/// cleanly (or is served), and the session and the node go on.
#[test]
fn membrane_unknown_methods_and_many_capabilities_fail_cleanly() {
    let node = Node::start();
    let socket = node.socket.clone();
    block_on(async {
        let session = graft(&connect(&socket).await).await.unwrap();
        type Any = capnp::any_pointer::Owned;
        let probes: [(&str, &capnp::capability::Client, u64, u16); 5] = [
            (
                "an unknown interface",
                &session.host.client,
                0x0123_4567_89ab_cdef,
                0,
            ),
            (
                "Host method 99",
                &session.host.client,
                host::Client::TYPE_ID,
                99,
            ),
            (
                "Host method 65535",
                &session.host.client,
                host::Client::TYPE_ID,
                u16::MAX,
            ),
            (
                "Membrane.graft on a Host",
                &session.host.client,
                membrane::Client::TYPE_ID,
                0,
            ),
            (
                "Host.id on an Executor",
                &session.executor.client,
                host::Client::TYPE_ID,
                0,
            ),
        ];
        for (what, cap, interface, method) in probes {
            let request = cap.new_call::<Any, Any>(interface, method, None);
            let result = request.send().promise.await.map(|_| ());
            assert_kind(what, ErrorKind::Unimplemented, result);
            host_id(&session.host).await.expect("the session goes on");
        }

        // A call whose parameters carry the session's own Host 100,000 times: each crosses
        // inward (unwrapped to the node's own Host); Host.id ignores them.
        let mut request = session
            .host
            .client
            .new_call::<Any, Any>(host::Client::TYPE_ID, 0, None);
        {
            let mut list = request
                .get()
                .initn_as::<capnp::capability_list::Builder<'_, host::Client>>(100_000);
            for i in 0..100_000 {
                list.set(i, session.host.client.hook.add_ref());
            }
        }
        let started = Instant::now();
        request
            .send()
            .promise
            .await
            .expect("Host.id with 100,000 capabilities");
        eprintln!(
            "membrane: a call carrying 100,000 capabilities answered in {} ms",
            started.elapsed().as_millis()
        );
        host_id(&session.host).await.expect("the session goes on");
        serves(&socket).await;
    });
    assert_clean_stop(node);
}

/// Raw calls whose capability pointers point past the cap table, at a table entry that is
/// `none`, or at an export the client never had: each fails (or the connection ends), and
/// the node serves others.
#[test]
fn membrane_capability_pointers_out_of_range_fail_cleanly() {
    const HOST_ID: (u64, u16) = (host::Client::TYPE_ID, 0);
    let node = Node::start();
    let mut stream = UnixStream::connect(&node.socket).unwrap();
    let mut frames = frames::bootstrap(0);
    frames.extend(frames::call(1, 0, &[], GRAFT, 64, |_| {}));
    // Content: a capability pointer, index 5, with an empty table.
    frames.extend(with_cap_pointer(
        frames::call(2, 1, &[0, 1], HOST_ID, 64, |p| {
            p.init_content()
                .set_as::<capnp::data::Owned>(&b"capcapca"[..])
                .unwrap();
        }),
        5,
    ));
    // Index 0 of a table whose one entry is `none`.
    frames.extend(with_cap_pointer(
        frames::call(3, 1, &[0, 1], HOST_ID, 64, |mut p| {
            p.reborrow()
                .init_content()
                .set_as::<capnp::data::Owned>(&b"capcapca"[..])
                .unwrap();
            p.init_cap_table(1).get(0).set_none(());
        }),
        0,
    ));
    // Index u32::MAX.
    frames.extend(with_cap_pointer(
        frames::call(4, 1, &[0, 1], HOST_ID, 64, |p| {
            p.init_content()
                .set_as::<capnp::data::Owned>(&b"capcapca"[..])
                .unwrap();
        }),
        u32::MAX,
    ));
    // A table entry naming an export the client never had.
    frames.extend(frames::call(5, 1, &[0, 1], HOST_ID, 64, |p| {
        p.init_cap_table(1).get(0).set_receiver_hosted(999_999);
    }));
    stream.write_all(&frames).unwrap();
    let answered: Vec<bool> = (2..=5)
        .map(|q| answered_or_ended(&mut stream, q, 10))
        .collect();
    eprintln!("membrane: raw calls with bad capability pointers answered: {answered:?}");
    drop(stream);
    block_on(serves(&node.socket));
    assert_clean_stop(node);
}

/// `frame` (one call whose content is the text `capcapca`) with its content pointer made a
/// capability pointer of `index`.
fn with_cap_pointer(mut frame: Vec<u8>, index: u32) -> Vec<u8> {
    let word = |frame: &[u8], i: usize| {
        u64::from_le_bytes(frame[8 + 8 * i..16 + 8 * i].try_into().unwrap())
    };
    let words = (frame.len() - 8) / 8;
    let text = (0..words)
        .find(|&i| &frame[8 + 8 * i..16 + 8 * i] == b"capcapca")
        .expect("the content");
    // The content pointer is the list pointer whose target is the text.
    let at = (0..text)
        .rev()
        .find(|&i| {
            let p = word(&frame, i);
            p & 3 == 1 && i as i64 + 1 + i64::from((p as u32 as i32) >> 2) == text as i64
        })
        .expect("the content pointer");
    let cap = 3u64 | (u64::from(index) << 32);
    frame[8 + 8 * at..16 + 8 * at].copy_from_slice(&cap.to_le_bytes());
    frame
}

/// A network peer of a node with the default `--peer-session info`: its Host answers `id`,
/// `addrs` and `peers`, and `connect`, `executor` and a spawn pipelined on `executor` fail
/// UNIMPLEMENTED; its session has no executor. A peer the node's `--allow-peer` does not name
/// floods it with /ww/0.1.0 streams, each ended unread, while the allowed peer is served.
#[test]
fn membrane_peers_get_info_only_and_refused_peers_are_dropped() {
    use ww::net::{NetConfig, Network, identity};
    use ww::net::{parse_addr, parse_peer_id};
    let key = identity::generate();
    let allowed_id = key.public().to_peer_id().to_string();
    let node = crate::net::Node::start(
        &image("testbed"),
        &["block"],
        &[],
        &["--allow-peer", &allowed_id],
    );
    let id = parse_peer_id(&node.id).unwrap();
    let addr = parse_addr(&node.addr).unwrap();
    block_on(async {
        let allowed = Network::start(NetConfig {
            keypair: key,
            listen: Vec::new(),
            known: Vec::new(),
        })
        .unwrap();
        let refused = crate::net::peer();
        // The refused peer's streams: each ended without an answer.
        let mut flood = Vec::new();
        for _ in 0..16 {
            let mut stream = refused.open(id, vec![addr.clone()]).await.unwrap();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &frames::bootstrap(0)).await;
            flood.push(stream);
        }
        let stream = allowed.open(id, vec![addr.clone()]).await.unwrap();
        let membrane = crate::rpc::membrane_over(stream);
        let response = membrane.graft_request().send().promise.await.unwrap();
        let session = response.get().unwrap().get_session().unwrap();
        assert!(
            !session.has_executor(),
            "a peer's info session holds an executor"
        );
        let host = session.get_host().unwrap();
        assert_eq!(host_id(&host).await.unwrap(), node.id);
        host.addrs_request().send().promise.await.expect("addrs");
        host.peers_request().send().promise.await.expect("peers");
        let mut connect = host.connect_request();
        connect.get().set_peer_id(&node.id);
        assert_kind(
            "Host.connect",
            ErrorKind::Unimplemented,
            connect.send().promise.await,
        );
        assert_kind(
            "Host.executor",
            ErrorKind::Unimplemented,
            host.executor_request().send().promise.await,
        );
        let executor = host.executor_request().send().pipeline.get_executor();
        assert_kind(
            "a spawn pipelined on Host.executor",
            ErrorKind::Unimplemented,
            spawn_echo(&executor).await,
        );
        let mut ended = 0;
        for mut stream in flood {
            let mut buf = [0u8; 64];
            let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buf);
            match tokio::time::timeout(Duration::from_secs(5), read).await {
                Ok(Ok(0) | Err(_)) => ended += 1,
                Ok(Ok(n)) => panic!("a refused peer's stream was answered ({n} bytes)"),
                Err(_) => panic!("a refused peer's stream was kept open"),
            }
        }
        assert_eq!(ended, 16);
        // The allowed peer is still served.
        assert_eq!(host_id(&host).await.unwrap(), node.id);
    });
    let stderr = node.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An image whose `etc/allow-peers` has a line that is not a peer id: ww refuses to start,
/// naming the file and line, before pid0 runs.
#[test]
fn membrane_garbage_in_etc_allow_peers_stops_the_node() {
    let layer = tree(&[(
        "etc/allow-peers",
        b"# ok\n12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo\n\n\xff\xfe garbage\n",
    )]);
    let out = run(
        &[
            "run",
            "--layer",
            s(layer.path()),
            s(&image("testbed")),
            "ping",
        ],
        "",
    );
    eprintln!(
        "membrane: garbage etc/allow-peers: status {}, {}",
        out.status,
        out.stderr.trim()
    );
    assert_ne!(out.status, 0, "{out:#?}");
    assert!(!out.stdout.contains("pong"), "pid0 ran: {out:#?}");
    assert!(out.stderr.contains("allow-peers"), "{out:#?}");
    assert_no_panic(&out);
    let layer = tree(&[(
        "etc/allow-peers",
        b"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo\nnot-a-peer\n",
    )]);
    let out = run(
        &[
            "run",
            "--layer",
            s(layer.path()),
            s(&image("testbed")),
            "ping",
        ],
        "",
    );
    assert!(
        out.stderr
            .contains("allow-peers:2: `not-a-peer` is not a peer id"),
        "{out:#?}"
    );
    assert_eq!(out.status, 125, "{out:#?}");
}
