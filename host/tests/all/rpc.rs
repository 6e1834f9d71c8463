//! `ww run --rpc-socket`: a Cap'n Proto client (capnp-rpc, as any Rust client would use it)
//! grafts onto the node's membrane, spawns child-echo through the executor, sees the epoch
//! revoke its session after SIGHUP, and is not disturbed by misbehaving peers.

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capnp::ErrorKind;
use capnp_rpc::{RpcSystem, rpc_twoparty_capnp::Side, twoparty};
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};
use ww::rpc::schema::host_capnp::{Stdio as CapStdio, byte_stream, executor, exit_status, process};
use ww::rpc::schema::membrane_capnp::membrane;

use crate::support::*;

/// A `ww run --rpc-socket` whose pid0 (testbed `block`) runs until the test stops or drops
/// it, its stderr collected as it comes (so that logging never blocks it). Shared with the
/// flood attacks.
pub(crate) struct Node {
    child: Child,
    pub(crate) socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ww.sock");
        let mut child = ww()
            .args([
                "run",
                "--rpc-socket",
                s(&socket),
                s(&image("testbed")),
                "block",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ww");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut node = Node {
            child,
            socket,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !node.socket.exists() {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("ww exited before creating its socket: {status}");
            }
            assert!(Instant::now() < deadline, "no socket within a minute");
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What ww wrote to its stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub(crate) fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// ww's exit status once it ends, panicking with `why` after 30 s.
    pub(crate) fn exit_status(&mut self, why: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{why}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes pid0's stdin, so it ends; ww's status and stderr.
    pub(crate) fn stop(mut self) -> (i32, String) {
        drop(self.child.stdin.take());
        let status = self.exit_status("ww did not exit after its pid0's stdin closed");
        (status.code().unwrap_or(-1), self.stderr())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client future on a current-thread runtime inside a LocalSet, as capnp-rpc needs.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let timed = async {
        tokio::time::timeout(Duration::from_secs(60), future)
            .await
            .expect("the client did not finish within a minute")
    };
    local.block_on(&runtime, timed)
}

/// Connects to the socket and returns the bootstrap membrane.
pub(crate) async fn connect(socket: &Path) -> membrane::Client {
    membrane_over(tokio::net::UnixStream::connect(socket).await.unwrap())
}

/// The client side of a Cap'n Proto connection on `stream`, run on the local set: the
/// membrane the other side serves.
pub(crate) fn membrane_over<S>(stream: S) -> membrane::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        Side::Client,
        Default::default(),
    );
    let mut system = RpcSystem::new(Box::new(network), None);
    let membrane: membrane::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(system);
    membrane
}

/// A session's parts.
struct Session {
    epoch: u64,
    host: ww::rpc::schema::host_capnp::host::Client,
    executor: executor::Client,
    status: ww::rpc::schema::membrane_capnp::status_poller::Client,
}

async fn graft(membrane: &membrane::Client) -> Session {
    let response = membrane.graft_request().send().promise.await.unwrap();
    let session = response.get().unwrap().get_session().unwrap();
    Session {
        epoch: session.get_epoch().unwrap().get_seq(),
        host: session.get_host().unwrap(),
        executor: session.get_executor().unwrap(),
        status: session.get_status().unwrap(),
    }
}

async fn host_id(session: &Session) -> Result<String, capnp::Error> {
    let response = session.host.id_request().send().promise.await?;
    Ok(response.get()?.get_peer_id()?.to_string()?)
}

pub(crate) fn child_echo() -> Vec<u8> {
    std::fs::read(image("child-echo").join("bin/main.wasm")).unwrap()
}

/// Spawns child-echo from bytes with piped stdin and stdout.
async fn spawn_echo(executor: &executor::Client) -> Result<process::Client, capnp::Error> {
    let mut request = executor.spawn_request();
    {
        let mut params = request.get();
        params.reborrow().init_program().set_bytes(&child_echo());
        let mut options = params.init_options();
        options.set_stdin(CapStdio::Pipe);
        options.set_stdout(CapStdio::Pipe);
        options.set_stderr(CapStdio::Null);
    }
    request.send().promise.await?.get()?.get_process()
}

async fn stdin_of(process: &process::Client) -> byte_stream::Client {
    let response = process.stdin_request().send().promise.await.unwrap();
    response.get().unwrap().get_stream().unwrap()
}

async fn stdout_of(process: &process::Client) -> byte_stream::Client {
    let response = process.stdout_request().send().promise.await.unwrap();
    response.get().unwrap().get_stream().unwrap()
}

async fn write(stream: &byte_stream::Client, data: &[u8]) -> Result<(), capnp::Error> {
    let mut request = stream.write_request();
    request.get().set_data(data);
    request.send().promise.await?;
    Ok(())
}

async fn close(stream: &byte_stream::Client) {
    stream.close_request().send().promise.await.unwrap();
}

async fn read_to_end(stream: &byte_stream::Client) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let mut request = stream.read_request();
        request.get().set_max_bytes(1 << 20);
        let response = request.send().promise.await.unwrap();
        let data = response.get().unwrap().get_data().unwrap();
        assert!(data.len() <= ww::rpc::MAX_READ, "read past the cap");
        if data.is_empty() {
            return all;
        }
        all.extend_from_slice(data);
    }
}

/// How the process ended: `Ok(code)` when it exited.
async fn wait(process: &process::Client) -> Result<Result<u8, String>, capnp::Error> {
    let response = process.wait_request().send().promise.await?;
    let status = response.get()?.get_status()?;
    Ok(match status.which()? {
        exit_status::Which::Exited(code) => Ok(code),
        exit_status::Which::Trapped(why) => Err(format!("trapped: {}", why?.to_string()?)),
        exit_status::Which::Killed(()) => Err("killed".into()),
        exit_status::Which::LimitExceeded(limit) => Err(format!("limit: {:?}", limit?)),
    })
}

/// Spawns child-echo, sends `text` through it, and checks what comes back and the exit.
async fn echo_round_trip(executor: &executor::Client, text: &str) {
    let process = spawn_echo(executor).await.expect("spawn child-echo");
    let stdin = stdin_of(&process).await;
    let stdout = stdout_of(&process).await;
    // Concurrently: the child writes while it reads, and its pipes hold 64 KiB.
    let send = async {
        write(&stdin, text.as_bytes()).await.unwrap();
        close(&stdin).await;
    };
    let ((), echoed) = futures::join!(send, read_to_end(&stdout));
    assert_eq!(String::from_utf8(echoed).unwrap(), text);
    assert_eq!(wait(&process).await.unwrap(), Ok(0));
}

#[track_caller]
fn assert_stale(result: Result<impl std::fmt::Debug, capnp::Error>) {
    match result {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Disconnected, "{e}");
            assert!(ww::rpc::epoch::is_stale(&e), "{e}");
            assert!(e.to_string().contains("graft again"), "{e}");
        }
        Ok(v) => panic!("a stale session's call succeeded: {v:?}"),
    }
}

/// The session's membrane copies every call once, from the peer's message, so a program
/// near the largest message ww takes still reaches the executor whole (a second traversal
/// of the peer's message would have failed its reader's traversal limit).
#[test]
fn rpc_a_program_near_the_size_limit_crosses_the_session_membrane() {
    let node = Node::start();
    block_on(async {
        let session = graft(&connect(&node.socket).await).await;
        let mut request = session.executor.spawn_request();
        let program = vec![0u8; 60 << 20];
        request.get().init_program().set_bytes(&program);
        let e = match request.send().promise.await {
            Ok(_) => panic!("60 MiB of zeros spawned"),
            Err(e) => e,
        };
        assert!(!e.extra.contains("limit"), "{e}");
        assert!(e.extra.contains("WebAssembly"), "{e}");
        // The node still serves.
        host_id(&session).await.expect("the session works");
    });
}

#[test]
fn rpc_graft_host_id_and_spawn_child_echo() {
    let node = Node::start();
    block_on(async {
        let membrane = connect(&node.socket).await;
        let session = graft(&membrane).await;
        assert_eq!(session.epoch, 0);
        let id = host_id(&session).await.unwrap();
        // A libp2p peer id (ed25519, new every run without --identity).
        assert!(id.starts_with("12D3KooW") && id.len() == 52, "{id}");
        // The same node, the same id, in every session.
        assert_eq!(host_id(&graft(&membrane).await).await.unwrap(), id);

        // By default it listens on loopback, and is connected to nobody.
        let addrs = session.host.addrs_request().send().promise.await.unwrap();
        let addrs = addrs.get().unwrap().get_addrs().unwrap();
        assert_eq!(addrs.len(), 1);
        let addr = addrs.get(0).unwrap().to_string().unwrap();
        assert!(
            addr.starts_with("/ip4/127.0.0.1/tcp/") && addr.ends_with(&format!("/p2p/{id}")),
            "{addr}"
        );
        let peers = session.host.peers_request().send().promise.await.unwrap();
        assert_eq!(peers.get().unwrap().get_peers().unwrap().len(), 0);
        let err = match session.host.connect_request().send().promise.await {
            Err(e) => e,
            Ok(_) => panic!("connect worked without a peer id"),
        };
        assert_eq!(err.kind, ErrorKind::Failed, "{err}");
        assert!(err.extra.contains("is not a peer id"), "{err}");

        // Host.executor is the session's executor too.
        let response = session
            .host
            .executor_request()
            .send()
            .promise
            .await
            .unwrap();
        let executor = response.get().unwrap().get_executor().unwrap();
        echo_round_trip(&executor, "hello from capnp\n").await;
        echo_round_trip(&session.executor, &"x".repeat(200_000)).await;

        // A refused spawn says why; a process's id and kill work.
        let mut request = session.executor.spawn_request();
        request.get().init_program().set_path("/no/such.wasm");
        let err = match request.send().promise.await {
            Err(e) => e,
            Ok(_) => panic!("spawned a missing path"),
        };
        assert!(
            err.to_string().contains("spawn refused: not found"),
            "{err}"
        );
        let process = spawn_echo(&session.executor).await.unwrap();
        let id = process.id_request().send().promise.await.unwrap();
        assert!(id.get().unwrap().get_id() > 0);
        process.kill_request().send().promise.await.unwrap();
        assert_eq!(wait(&process).await.unwrap(), Err("killed".into()));
        // stdout is handed out once.
        let _ = stdout_of(&process).await;
        assert!(process.stdout_request().send().promise.await.is_err());
    });
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn rpc_sighup_revokes_every_capability_of_earlier_sessions() {
    let node = Node::start();
    let socket = node.socket.clone();
    block_on(async {
        let membrane = connect(&socket).await;
        let old = graft(&membrane).await;
        assert!(host_id(&old).await.is_ok());
        let process = spawn_echo(&old.executor).await.unwrap();
        let stdin = stdin_of(&process).await;
        write(&stdin, b"before\n").await.unwrap();
        // A call in flight when the epoch advances fails too.
        let pending = process.wait_request().send().promise;

        node.signal(libc::SIGHUP);
        let mut request = old.status.changed_request();
        request.get().init_since().set_seq(old.epoch);
        let changed = request.send().promise.await.unwrap();
        assert_eq!(changed.get().unwrap().get_epoch().unwrap().get_seq(), 1);

        assert_stale(host_id(&old).await);
        assert_stale(spawn_echo(&old.executor).await.map(|_| ()));
        assert_stale(write(&stdin, b"after\n").await);
        assert_stale(process.kill_request().send().promise.await.map(|_| ()));
        assert_stale(pending.await.map(|_| ()));
        // The poller is not revoked.
        let current = old.status.current_request().send().promise.await.unwrap();
        assert_eq!(current.get().unwrap().get_epoch().unwrap().get_seq(), 1);

        // A new graft works, on the same connection and on a new one.
        let new = graft(&membrane).await;
        assert_eq!(new.epoch, 1);
        assert!(host_id(&new).await.is_ok());
        echo_round_trip(&new.executor, "after the advance\n").await;
        let again = graft(&connect(&socket).await).await;
        assert_eq!(again.epoch, 1);
        echo_round_trip(&again.executor, "and again\n").await;
    });
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn rpc_misbehaving_peers_do_not_disturb_others() {
    let node = Node::start();
    let socket = node.socket.clone();
    // Garbage: not a Cap'n Proto message at all.
    let mut garbage = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    garbage.write_all(&[0xff; 4096]).unwrap();
    // A message that claims more than the size limit (2^28 words in one segment).
    let mut huge = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    huge.write_all(&[0, 0, 0, 0, 0, 0, 0, 0x10]).unwrap();
    // Stalled: half a segment table, then nothing.
    let mut stalled = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stalled.write_all(&[0, 0, 0]).unwrap();
    // A connection that never says anything.
    let _silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();

    block_on(async {
        // A client that goes away in the middle of calls: a pending read on a child's
        // stdout, and a pending wait.
        {
            let membrane = connect(&socket).await;
            let session = graft(&membrane).await;
            let process = spawn_echo(&session.executor).await.unwrap();
            let stdout = stdout_of(&process).await;
            let read = stdout.read_request().send().promise;
            let waiting = process.wait_request().send().promise;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop((read, waiting, stdout, process, session, membrane));
        }
        // The good client is served meanwhile, repeatedly.
        let membrane = connect(&socket).await;
        for i in 0..3 {
            let session = graft(&membrane).await;
            assert!(host_id(&session).await.is_ok());
            echo_round_trip(&session.executor, &format!("good client, round {i}\n")).await;
        }
    });
    // ww hung up on the garbage and on the oversized message (after an Abort, perhaps).
    for (what, stream) in [("garbage", &mut garbage), ("oversized", &mut huge)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let ended = std::io::Read::read_to_end(stream, &mut rest);
        assert!(
            ended.is_ok()
                || ended
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "ww kept the {what} connection open: {ended:?}"
        );
    }
    drop((garbage, huge, stalled));
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn rpc_socket_is_private_and_removed_on_exit() {
    let node = Node::start();
    let socket = node.socket.clone();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // No staging directory is left beside it.
    let entries: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("ww.sock")]);
    let (status, stderr) = node.stop();
    assert_eq!(status, 0, "{stderr}");
    assert!(!socket.exists(), "the socket outlived ww");
}

#[test]
fn rpc_socket_refuses_an_existing_path() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"mine").unwrap();
    let out = run(
        &[
            "run",
            "--rpc-socket",
            s(&taken),
            s(&image("testbed")),
            "ping",
        ],
        "",
    );
    out.assert_ww_error("already exists");
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine");
}

#[test]
fn rpc_sigterm_ends_ww_and_removes_the_socket() {
    let mut node = Node::start();
    let socket = node.socket.clone();
    // A graft proves the node (and its signal handlers) are up.
    block_on(async {
        let membrane = connect(&socket).await;
        assert!(host_id(&graft(&membrane).await).await.is_ok());
    });
    node.signal(libc::SIGTERM);
    let status = node.exit_status("ww ignored SIGTERM");
    assert_eq!(status.code(), Some(143));
    assert!(!socket.exists(), "the socket outlived ww");
}

// The bridge: pid0's own Cap'n Proto connection to the node over WASI streams.

fn testbed_run(args: &[&str]) -> Out {
    let tb = image("testbed");
    let mut all = vec!["run", s(&tb)];
    all.extend_from_slice(args);
    run(&all, "")
}

#[test]
fn bridge_pid0_grafts_and_calls_the_host() {
    let out = testbed_run(&["rpc-id"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("id 12D3KooW")),
        "{out:#?}"
    );
    assert!(out.stdout.lines().any(|l| l == "epoch 0"), "{out:#?}");
}

#[test]
fn bridge_carries_a_1_mib_message() {
    let out = testbed_run(&["rpc-big"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout.contains("rpc-big ok 1048576 exited 0"),
        "{out:#?}"
    );
}

#[test]
fn bridge_carries_1000_concurrent_calls() {
    let out = testbed_run(&["rpc-many", "1000"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("rpc-many ok 1000"), "{out:#?}");
}

#[test]
fn bridge_a_cell_may_exit_in_the_middle_of_a_call() {
    let out = testbed_run(&["rpc-exit-mid-call", "3"]);
    assert_eq!(out.status, 3, "{out:#?}");
    assert_no_panic(&out);
}

#[test]
fn bridge_pid0_advances_the_epoch() {
    let out = testbed_run(&["rpc-advance"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("advanced to 1"), "{out:#?}");
}

#[test]
fn bridge_children_hold_no_bridge() {
    let out = testbed_run(&["spawn", "--", "rpc-id"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("child: exited 1"), "{out:#?}");
    assert!(
        out.stdout.contains("error:") || out.stderr.contains("no connection"),
        "{out:#?}"
    );
}

/// `ww run --rpc-socket SOCKET testbed rpc-export`: pid0 exports a membrane of its own,
/// printing `exported` on the piped stdout once it does (stderr piped too).
pub(crate) fn start_exporting(socket: &Path) -> Child {
    ww().args([
        "run",
        "--rpc-socket",
        s(socket),
        s(&image("testbed")),
        "rpc-export",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

#[test]
fn bridge_pid0_exports_its_membrane_and_serves_it_while_waiting() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ww.sock");
    let mut child = start_exporting(&socket);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().map(|l| l.unwrap());
    assert_eq!(first.as_deref(), Some("exported"), "pid0 did not export");
    // pid0 is now blocked in its own call (status.changed); it must still serve this one.
    let id = block_on(async {
        let membrane = connect(&socket).await;
        let session = graft(&membrane).await;
        host_id(&session).await
    });
    assert_eq!(id.unwrap(), "exported by testbed");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l == "epoch advanced to 1"), "{rest:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn reloading_the_image_restarts_pid0_and_revokes_earlier_sessions() {
    // The image is a private copy, so the test can break and mend it.
    let img = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(image("testbed").join("bin/main.wasm")).unwrap();
    std::fs::create_dir_all(img.path().join("bin")).unwrap();
    std::fs::write(img.path().join("bin/main.wasm"), &wasm).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ww.sock");
    let mut child = ww()
        .args([
            "-v",
            "run",
            "--rpc-socket",
            s(&socket),
            s(img.path()),
            "block",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let usr1 = |child: &Child| {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
    };
    block_on(async {
        let membrane = connect(&socket).await;
        let old = graft(&membrane).await;
        host_id(&old).await.unwrap();

        // A reload that cannot load keeps the running image, and every session.
        std::fs::remove_file(img.path().join("bin/main.wasm")).unwrap();
        usr1(&child);
        tokio::time::sleep(Duration::from_millis(500)).await;
        host_id(&old)
            .await
            .expect("a failed reload must not revoke anything");

        // A reload that loads restarts pid0 and advances the epoch.
        std::fs::write(img.path().join("bin/main.wasm"), &wasm).unwrap();
        usr1(&child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match host_id(&old).await {
                Err(_) => break,
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "the reload never revoked the session"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert_stale(host_id(&old).await);
        let new = graft(&membrane).await;
        host_id(&new).await.unwrap();
    });
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no bin/main.wasm"),
        "the failed reload is reported: {stderr}"
    );
    assert!(stderr.contains("image reloaded"), "{stderr}");
}
