//! libp2p: `ww run` processes on 127.0.0.1 reach each other's membranes over `/ww/0.1.0`.
//!
//! Three nodes: B serves the counter example; A boots with B in `boot/`; C boots with A in
//! `boot/` and reaches B by its id alone, through Kademlia routing learned from A. Clients
//! here are Rust capnp-rpc clients on each node's `--rpc-socket` (Host.connect) and cells
//! (`ww:host/net`); misbehaving peers are real libp2p nodes (ww's own network module).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capnp::ErrorKind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ww::net::{NetConfig, Network, PeerStream, identity, parse_addr, parse_peer_id};
use ww::rpc::schema::counter_capnp::counter;
use ww::rpc::schema::host_capnp::host;
use ww::rpc::schema::membrane_capnp::membrane;

use crate::rpc::{block_on, connect, membrane_over};
use crate::support::*;

/// A `ww run --rpc-socket` on loopback, its stdout and stderr collected as they come.
/// Shared with the membrane attacks.
pub(crate) struct Node {
    child: Child,
    /// Its peer id.
    pub(crate) id: String,
    /// The TCP address it listens on, without `/p2p/…`.
    pub(crate) addr: String,
    pub(crate) socket: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// Collects what `pipe` gives, line by line, into a shared string.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// Polls `what` every 20 ms until it gives `Some`, for at most `secs` seconds.
fn wait_for<T>(secs: u64, mut what: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = what() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Node {
    /// Boots `image` with `args`, layers and extra flags; returns once it listens and its
    /// socket exists.
    pub(crate) fn start(image: &Path, args: &[&str], layers: &[&Path], flags: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ww.sock");
        let mut cmd = ww();
        cmd.args(["run", "--rpc-socket", s(&socket)]);
        for layer in layers {
            cmd.args(["--layer", s(layer)]);
        }
        cmd.args(flags)
            .arg(image)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ww");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let listening = wait_for(60, || {
            let text = stderr.lock().unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("ww: listening on "))
                .map(str::to_owned)
        });
        let Some(listening) = listening else {
            let _ = child.kill();
            panic!(
                "ww printed no listen address within a minute:\n{}",
                stderr.lock().unwrap()
            );
        };
        let (addr, id) = listening
            .split_once("/p2p/")
            .map(|(a, i)| (a.to_owned(), i.to_owned()))
            .expect("a listen address ends in /p2p/<id>");
        assert!(
            wait_for(60, || socket.exists().then_some(())).is_some(),
            "no RPC socket within a minute"
        );
        Node {
            child,
            id,
            addr,
            socket,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// A layer whose `boot/<id>` names this node at its address.
    fn boot_layer(&self) -> tempfile::TempDir {
        let file = format!("boot/{}", self.id);
        let text = format!("# a ww node\n{}\n", self.addr);
        tree(&[(file.as_str(), text.as_bytes())])
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits until the node is connected to `peer` (by its Host.peers).
    fn wait_connected(&self, peer: &Node) {
        let socket = self.socket.clone();
        let want = peer.id.clone();
        let connected = wait_for(30, || {
            let peers = block_on(async {
                let session = graft(&connect(&socket).await).await.unwrap();
                peer_ids(session.host()).await
            });
            peers.contains(&want).then_some(())
        });
        assert!(
            connected.is_some(),
            "{} never connected to {}:\n{}",
            self.id,
            peer.id,
            self.stderr()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test holds of a session.
struct Session {
    epoch: u64,
    /// None when the node gives none (a node whose pid0 exports gives what pid0 chose).
    host: Option<host::Client>,
    exports: Vec<(String, capnp::capability::Client)>,
}

async fn graft(membrane: &membrane::Client) -> Result<Session, capnp::Error> {
    let response = membrane.graft_request().send().promise.await?;
    let session = response.get()?.get_session()?;
    let mut exports = Vec::new();
    for export in session.get_exports()? {
        exports.push((
            export.get_name()?.to_string()?,
            export.get_cap().get_as_capability()?,
        ));
    }
    Ok(Session {
        epoch: session.get_epoch()?.get_seq(),
        host: session.has_host().then(|| session.get_host()).transpose()?,
        exports,
    })
}

impl Session {
    fn host(&self) -> &host::Client {
        self.host.as_ref().expect("the session holds a host")
    }

    fn counter(&self) -> counter::Client {
        let (_, cap) = self
            .exports
            .iter()
            .find(|(name, _)| name == "counter")
            .expect("the session exports `counter`");
        capnp::capability::FromClientHook::new(cap.hook.add_ref())
    }
}

async fn peer_ids(host: &host::Client) -> Vec<String> {
    let response = host.peers_request().send().promise.await.unwrap();
    let peers = response.get().unwrap().get_peers().unwrap();
    peers
        .iter()
        .map(|p| p.get_id().unwrap().to_string().unwrap())
        .collect()
}

async fn host_id(host: &host::Client) -> Result<String, capnp::Error> {
    let response = host.id_request().send().promise.await?;
    Ok(response.get()?.get_peer_id()?.to_string()?)
}

/// Host.connect: the membrane of `peer`.
async fn dial(host: &host::Client, peer: &str, addrs: &[&str]) -> membrane::Client {
    let mut request = host.connect_request();
    request.get().set_peer_id(peer);
    let mut list = request.get().init_addrs(addrs.len() as u32);
    for (i, addr) in addrs.iter().enumerate() {
        list.set(i as u32, *addr);
    }
    let response = request.send().promise.await.expect("Host.connect");
    response.get().unwrap().get_membrane().unwrap()
}

async fn increment(counter: &counter::Client) -> Result<u64, capnp::Error> {
    let mut request = counter.increment_request();
    request.get().set_by(1);
    Ok(request.send().promise.await?.get()?.get_value())
}

#[test]
fn a_client_image_finds_the_counter_through_boot_and_calls_it() {
    let b = Node::start(&image("counter"), &[], &[], &[]);
    assert!(
        wait_for(30, || b.stdout().contains("counter: serving").then_some(())).is_some(),
        "the counter did not start serving:\n{}",
        b.stderr()
    );
    let layer = b.boot_layer();
    let client = image("counter-client");
    let out = run(&["run", "--layer", s(layer.path()), s(&client), "3"], "");
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "counter = 1\ncounter = 2\ncounter = 3\n");
    // The count is B's: a second client goes on from it.
    let out = run(&["run", "--layer", s(layer.path()), s(&client), "1"], "");
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "counter = 4\n");

    // A boot peer that is not there: the client's dial fails cleanly, the boot goes on.
    let absent = identity::generate().public().to_peer_id();
    let file = format!("boot/{absent}");
    let nowhere = tree(&[(file.as_str(), b"/ip4/127.0.0.1/tcp/1\n" as &[u8])]);
    let out = run(&["run", "--layer", s(nowhere.path()), s(&client), "1"], "");
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&absent.to_string()), "{}", out.stderr);
    assert_no_panic(&out);
}

#[test]
fn three_nodes_route_revoke_and_survive_a_death() {
    let b = Node::start(&image("counter"), &[], &[], &[]);
    let b_layer = b.boot_layer();
    let a = Node::start(&image("testbed"), &["block"], &[b_layer.path()], &[]);
    let a_layer = a.boot_layer();
    let c = Node::start(&image("testbed"), &["block"], &[a_layer.path()], &[]);
    a.wait_connected(&b);
    c.wait_connected(&a);

    block_on(async {
        // C knows only A; it finds B by id through A's routing table and calls B directly.
        let on_c = graft(&connect(&c.socket).await).await.unwrap();
        assert_eq!(host_id(on_c.host()).await.unwrap(), c.id);
        let b_from_c = dial(on_c.host(), &b.id, &[]).await;
        let session = graft(&b_from_c).await.unwrap();
        // B's pid0 exports a counter and nothing else: no Host of B's reaches a peer.
        assert!(session.host.is_none());
        let first = increment(&session.counter()).await.unwrap();
        assert!(peer_ids(on_c.host()).await.contains(&b.id));

        // A reaches B (a boot peer) by id, and calls its exported counter.
        let on_a = graft(&connect(&a.socket).await).await.unwrap();
        let b_from_a = dial(on_a.host(), &b.id, &[]).await;
        let session = graft(&b_from_a).await.unwrap();
        assert_eq!(session.epoch, 0);
        let counter = session.counter();
        assert_eq!(increment(&counter).await.unwrap(), first + 1);
        // A capability returned by the export's method, reached through A's session on B.
        let fork = counter
            .fork_request()
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_counter()
            .unwrap();

        // An epoch advance on B revokes A's session, the export with it; a re-graft works.
        // (Until B has handled the signal, calls still count.)
        b.signal(libc::SIGHUP);
        let mut last = first + 1;
        let err = loop {
            match increment(&counter).await {
                Ok(value) => {
                    last = value;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind, ErrorKind::Disconnected, "{err}");
        assert!(err.extra.contains("stale epoch"), "{err}");
        // What the export's method returned is revoked with it.
        let err = increment(&fork).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Disconnected, "{err}");
        assert!(err.extra.contains("stale epoch"), "{err}");
        let session = graft(&b_from_a).await.unwrap();
        assert_eq!(session.epoch, 1);
        let counter = session.counter();
        // (A call in flight at the advance fails even if it counted: it is revoked.)
        let value = increment(&counter).await.unwrap();
        assert!(value > last && value <= last + 2, "{value} after {last}");

        // Killing B makes A's calls fail, promptly and cleanly.
        b.signal(libc::SIGKILL);
        let failed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match increment(&counter).await {
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => break e,
                }
            }
        })
        .await
        .expect("a call to a dead peer fails within 20 s");
        assert_eq!(failed.kind, ErrorKind::Disconnected, "{failed}");

        // A goes on serving: its own clients, and peers over the network.
        let again = graft(&connect(&a.socket).await).await.unwrap();
        assert_eq!(host_id(again.host()).await.unwrap(), a.id);
        let a_from_c = dial(on_c.host(), &a.id, &[]).await;
        let remote = graft(&a_from_c).await.unwrap();
        assert_eq!(host_id(remote.host()).await.unwrap(), a.id);
    });
    assert!(!a.stderr().contains("panicked"), "{}", a.stderr());
    assert!(!c.stderr().contains("panicked"), "{}", c.stderr());
}

/// A libp2p node of the test's own, listening nowhere.
pub(crate) fn peer() -> Network {
    Network::start(NetConfig {
        keypair: identity::generate(),
        listen: Vec::new(),
        known: Vec::new(),
    })
    .unwrap()
}

/// Whether the node ends `stream` (EOF or reset) within `secs` seconds.
async fn ended(stream: &mut PeerStream, secs: u64) -> bool {
    let mut buf = [0u8; 64];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .is_ok()
}

#[test]
fn misbehaving_peers_are_contained() {
    let b = Node::start(&image("testbed"), &["block"], &[], &[]);
    let id = parse_peer_id(&b.id).unwrap();
    let addr = parse_addr(&b.addr).unwrap();
    block_on(async {
        let honest = peer();
        let check = |what: &'static str| {
            let honest = honest.clone();
            let addr = addr.clone();
            let want = b.id.clone();
            async move {
                let stream = honest.open(id, vec![addr]).await.unwrap();
                let session = graft(&membrane_over(stream)).await.unwrap();
                assert_eq!(host_id(session.host()).await.unwrap(), want, "after {what}");
            }
        };
        check("nothing").await;
        let attacker = peer();

        // Garbage: the node ends that stream.
        let mut stream = attacker.open(id, vec![addr.clone()]).await.unwrap();
        stream.write_all(&[0xff; 4096]).await.unwrap();
        stream.flush().await.unwrap();
        assert!(ended(&mut stream, 10).await, "a garbage stream was kept");
        check("garbage").await;

        // A frame announcing an 8 GiB message: ended before anything is allocated.
        let mut stream = attacker.open(id, vec![addr.clone()]).await.unwrap();
        stream
            .write_all(&[0, 0, 0, 0, 0, 0, 0, 0x40])
            .await
            .unwrap();
        stream.write_all(&[0; 1024]).await.unwrap();
        stream.flush().await.unwrap();
        assert!(ended(&mut stream, 10).await, "an oversized frame was kept");
        check("an oversized frame").await;

        // Streams without end: past the per-peer limit each is reset at once.
        let mut flood = Vec::new();
        for _ in 0..(ww::net::MAX_STREAMS_PER_PEER + 8) {
            flood.push(attacker.open(id, vec![addr.clone()]).await.unwrap());
        }
        let ends = futures::future::join_all(flood.iter_mut().map(|s| ended(s, 2))).await;
        let reset = ends.into_iter().filter(|ended| *ended).count();
        // At most the limit stay open (a stream may also be dropped when it arrives faster
        // than the node takes them), and the node does keep some.
        let kept = flood.len() - reset;
        assert!(
            (1..=ww::net::MAX_STREAMS_PER_PEER).contains(&kept),
            "{kept} streams kept of {}; the limit is {}",
            flood.len(),
            ww::net::MAX_STREAMS_PER_PEER
        );
        check("a flood of streams").await;
        drop(flood);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The attacker's streams closed: it may open streams again.
        let stream = attacker.open(id, vec![addr.clone()]).await.unwrap();
        let session = graft(&membrane_over(stream)).await.unwrap();
        assert_eq!(host_id(session.host()).await.unwrap(), b.id);

        // A peer that goes away in the middle of a call.
        let quitter = peer();
        let stream = quitter.open(id, vec![addr.clone()]).await.unwrap();
        let session = graft(&membrane_over(stream)).await.unwrap();
        let pending = session.host().id_request().send().promise;
        drop(quitter);
        drop(pending);
        check("a peer leaving mid-call").await;
    });
    assert!(!b.stderr().contains("panicked"), "{}", b.stderr());
}

#[test]
fn bad_network_flags_and_identities_are_clear_errors() {
    let out = run(
        &["run", "--listen", "/ip4/1.2.3/tcp/0", s(&image("hello"))],
        "",
    );
    out.assert_ww_error("bad --listen address `/ip4/1.2.3/tcp/0`");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    std::fs::write(&key, b"not a key").unwrap();
    let out = run(&["run", "--identity", s(&key), s(&image("hello"))], "");
    out.assert_ww_error("not a libp2p private key");

    // keygen makes a key whose id is the node's; it never overwrites.
    let key = dir.path().join("fresh.key");
    let out = run(&["keygen", s(&key)], "");
    assert_eq!(out.status, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_owned();
    assert!(id.starts_with("12D3KooW"), "{id}");
    let out = run(&["keygen", s(&key)], "");
    out.assert_ww_error("already exists");
    let node = Node::start(&image("testbed"), &["block"], &[], &["--identity", s(&key)]);
    assert_eq!(node.id, id);

    // An address that is not this machine's: ww's error, even with pid0 running.
    let out = run(
        &[
            "run",
            "--timeout",
            "30s",
            "--listen",
            "/ip4/8.8.8.8/tcp/0",
            s(&image("testbed")),
            "spin",
        ],
        "",
    );
    out.assert_ww_error("cannot listen on /ip4/8.8.8.8/tcp/0");

    // boot/ entries that do not parse are warnings; the boot goes on.
    let layer = tree(&[
        ("boot/not-a-peer", b"/ip4/127.0.0.1/tcp/1\n" as &[u8]),
        (
            &format!("boot/{id}") as &str,
            b"/ip4/127.0.0.1/tcp/1\nnonsense\n" as &[u8],
        ),
    ]);
    let out = run(&["run", "--layer", s(layer.path()), s(&image("hello"))], "");
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("boot/not-a-peer: the file name is not a base58 peer id"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("boot/{id}:2: `nonsense` is not a multiaddr")),
        "{}",
        out.stderr
    );
}

#[test]
fn cells_use_the_network_through_wit_and_children_get_it_only_when_asked() {
    let b = Node::start(&image("counter"), &[], &[], &[]);
    assert!(
        wait_for(30, || b.stdout().contains("counter: serving").then_some(())).is_some(),
        "the counter did not start serving:\n{}",
        b.stderr()
    );
    let testbed = image("testbed");
    let out = run(&["run", s(&testbed), "net-call", &b.id, &b.addr], "");
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "counter = 1\n");

    // A key file gives the node a lasting id; the cell sees it, and where the node listens
    // (here on QUIC too).
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let out = run(&["keygen", s(&key)], "");
    let id = out.stdout.trim().to_owned();
    let out = run(&["run", "--identity", s(&key), s(&testbed), "net-id"], "");
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), id);
    let out = run(
        &[
            "run",
            "--identity",
            s(&key),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            s(&testbed),
            "net-addrs",
        ],
        "",
    );
    assert_eq!(out.status, 0, "{out:?}");
    let addrs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(addrs.len(), 2, "{out:?}");
    assert!(addrs.iter().all(|a| a.ends_with(&format!("/p2p/{id}"))));
    assert!(addrs.iter().any(|a| a.contains("/quic-v1/")), "{addrs:?}");
    for addr in &addrs {
        assert!(
            out.stderr.contains(&format!("ww: listening on {addr}")),
            "{out:?}"
        );
    }

    // Over QUIC, a cell reaches the counter too.
    let quic = Node::start(
        &image("counter"),
        &[],
        &[],
        &["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"],
    );
    assert!(quic.addr.contains("/quic-v1"), "{}", quic.addr);
    assert!(
        wait_for(30, || quic
            .stdout()
            .contains("counter: serving")
            .then_some(()))
        .is_some(),
        "{}",
        quic.stderr()
    );
    let out = run(&["run", s(&testbed), "net-call", &quic.id, &quic.addr], "");
    assert_eq!(out.stdout, "counter = 1\n", "{out:?}");

    // A child holds the network only when its spawner passes it on.
    let out = run(&["run", s(&testbed), "spawn", "--", "net-denied"], "");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("denied: this cell holds no network capability"),
        "{out:?}"
    );
    let out = run(
        &["run", s(&testbed), "spawn", "--network", "--", "net-denied"],
        "",
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.starts_with("allowed\n"), "{out:?}");

    // Bad input from a cell is an error the cell sees, not a crash.
    let out = run(
        &[
            "run",
            s(&testbed),
            "net-call",
            "nobody",
            "/ip4/127.0.0.1/tcp/1",
        ],
        "",
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.contains("`nobody` is not a peer id"), "{out:?}");
    let out = run(&["run", s(&testbed), "net-call", &b.id, "not/an/addr"], "");
    assert!(out.stdout.contains("is not a multiaddr"), "{out:?}");
    assert_no_panic(&out);
}
