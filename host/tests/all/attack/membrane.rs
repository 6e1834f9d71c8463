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

use crate::rpc::{Node, block_on, connect};
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

fn child_echo() -> Vec<u8> {
    std::fs::read(image("child-echo").join("bin/main.wasm")).unwrap()
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
    let response = spawn_request(executor, &child_echo()).send().promise.await?;
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
    host_id(&session.host).await.expect("Host.id on a new graft");
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
        let used = spawn_request(&old.executor, &program).send().pipeline.get_process();
        pid(&used).await.unwrap();
        let unresolved_out = spawn_request(&old.executor, &program)
            .send()
            .pipeline
            .get_process()
            .stdout_request()
            .send()
            .pipeline
            .get_stream();
        let unresolved_spawn = old.host.executor_request().send().pipeline.get_executor();
        let unresolved_process = spawn_request(&unresolved_spawn, &program)
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
        assert_stale("an unresolved pipelined stdout", read(&unresolved_out).await);
        assert_stale("an unresolved pipelined process", pid(&unresolved_process).await);
        // Obtained after the advance, by pipelining on stale capabilities.
        let later = spawn_request(&old.executor, &program)
            .send()
            .pipeline
            .get_process();
        assert_stale("a process pipelined after the advance", pid(&later).await);
        let later_out = process.stdout_request().send().pipeline.get_stream();
        assert_stale("a stream pipelined after the advance", read(&later_out).await);
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

/// Raw RPC frames, for attacks a capnp-rpc client would never send.
mod frames {
    use capnp_rpc::rpc_capnp::{message, payload};

    /// A one-segment frame of one RPC message, with room for `words` words.
    pub(super) fn rpc(words: u32, build: impl FnOnce(message::Builder<'_>)) -> Vec<u8> {
        let allocator = capnp::message::HeapAllocator::new().first_segment_words(words);
        let mut message = capnp::message::Builder::new(allocator);
        build(message.init_root());
        assert_eq!(message.get_segments_for_output().len(), 1, "one segment");
        capnp::serialize::write_message_to_words(&message)
    }

    pub(super) fn bootstrap(question: u32) -> Vec<u8> {
        rpc(64, |m| m.init_bootstrap().set_question_id(question))
    }

    /// A call of `method` of `interface` on the capability at `path` (pointer fields) in the
    /// answer to `on`, its payload (content and cap table) filled by `payload`.
    pub(super) fn call(
        question: u32,
        on: u32,
        path: &[u16],
        (interface, method): (u64, u16),
        words: u32,
        fill: impl FnOnce(payload::Builder<'_>),
    ) -> Vec<u8> {
        rpc(words, |m| {
            let mut call = m.init_call();
            call.set_question_id(question);
            call.set_interface_id(interface);
            call.set_method_id(method);
            let mut target = call.reborrow().init_target().init_promised_answer();
            target.set_question_id(on);
            let mut transform = target.init_transform(path.len() as u32);
            for (i, field) in path.iter().enumerate() {
                transform
                    .reborrow()
                    .get(i as u32)
                    .set_get_pointer_field(*field);
            }
            fill(call.init_params());
        })
    }

    /// Parameters that are a `List(Data)` of `n` elements all pointing at one blob of
    /// `blob` bytes: about `blob + 8 n` bytes on the wire, `n * blob` bytes to anyone who
    /// copies them (pointers that alias are not valid Cap'n Proto, and no reader detects
    /// them; only the traversal limit bounds what they amount to).
    pub(super) fn aliased(
        question: u32,
        on: u32,
        path: &[u16],
        method: (u64, u16),
        n: u32,
        blob: usize,
    ) -> Vec<u8> {
        const MAGIC: u8 = 0xa5;
        let words = (blob / 8) as u32 + n + 256;
        let mut frame = call(question, on, path, method, words, |payload| {
            let mut list = payload
                .init_content()
                .initn_as::<capnp::data_list::Builder<'_>>(n);
            list.set(0, &vec![MAGIC; blob]);
        });
        // The segment follows the 8-byte segment table; the blob follows the list's `n`
        // pointers, of which only the first is set.
        let word = |frame: &[u8], i: usize| {
            u64::from_le_bytes(frame[8 + 8 * i..16 + 8 * i].try_into().unwrap())
        };
        let at = (0..(frame.len() - 8) / 8)
            .find(|&i| word(&frame, i) == u64::from_le_bytes([MAGIC; 8]))
            .expect("the blob");
        let first = at - n as usize;
        let pointer = word(&frame, first);
        assert_eq!(pointer & 3, 1, "a list pointer");
        assert_eq!((pointer as u32 as i32) >> 2, n as i32 - 1, "to the blob");
        for i in 1..n as usize {
            assert_eq!(word(&frame, first + i), 0, "an unset element");
            let offset = (n as u64 - 1 - i as u64) << 2 | 1;
            let aliased = (pointer & !0xffff_ffff) | offset;
            frame[8 + 8 * (first + i)..16 + 8 * (first + i)]
                .copy_from_slice(&aliased.to_le_bytes());
        }
        frame
    }
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
            Err(e) if e.kind == ErrorKind::Disconnected => return false,
            Err(e) if e.extra.contains("reset") || e.extra.contains("end of file") => {
                return false;
            }
            Err(e) => panic!("neither a Return for question {question} nor the end: {e}"),
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
    assert!(!answered, "ww kept a connection that sent aliasing pointers");
    let stderr = node.stderr();
    assert!(
        stderr.contains("refused a Cap'n Proto frame whose pointers alias"),
        "{stderr}"
    );
    assert_clean_stop(node);
}
