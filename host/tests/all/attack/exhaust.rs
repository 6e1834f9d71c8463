//! Attacks on the node's bounds: cells that try to make the host hold more than the node's
//! budget (`--node-memory`), more cells than `--max-cells`, or that block the node with a
//! FIFO or a program that takes long to compile. Each asserts the resident memory of `ww`
//! (read from /proc while the attack runs) and that the node still answers: its deadline
//! and its signals take effect on time.

use std::path::Path;
use std::time::Duration;

use crate::support::{self, image, p1_big, s, watch, ww};

/// What ww itself holds before any attack: runtime, engine, compiled testbed, libp2p. The
/// ceiling of each test is its budget plus this.
const BASE: u64 = 160 << 20;

const MIB: u64 = 1 << 20;

/// A copy of the testbed image in a temporary directory, to which a test adds files.
fn testbed_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::copy(
        image("testbed").join("bin/main.wasm"),
        dir.path().join("bin/main.wasm"),
    )
    .unwrap();
    dir
}

#[test]
fn a_spawn_tree_stays_within_the_node_budget() {
    // Every cell touches 4 MiB and spawns 16 more like itself, with an executor: without a
    // node-wide bound this took the host past 8 GB in 7 s.
    let mut cmd = ww();
    cmd.args([
        "run",
        "--max-memory",
        "16MiB",
        "--max-children",
        "16",
        "--node-memory",
        "256MiB",
        "--timeout",
        "4s",
    ])
    .arg(image("testbed"))
    .args(["tree", "16", "4"]);
    let run = watch(cmd, Duration::from_secs(30));
    assert_eq!(run.out.status, 124, "{run:#?}");
    assert!(run.out.stdout.contains("tree: spawned 16"), "{run:#?}");
    assert!(
        run.peak_rss < 256 * MIB + BASE,
        "ww held {} MiB: {run:#?}",
        run.peak_rss / MIB
    );
    // The node stayed responsive: its deadline ended it on time.
    assert!(run.elapsed < Duration::from_secs(7), "{run:#?}");
}

#[test]
fn a_spawn_past_the_cells_bound_is_a_typed_refusal() {
    // Children that spawn nothing themselves (`args` children block on their stdin), so the
    // count is pid0's alone: pid0 and four children fill five cells.
    let mut cmd = ww();
    cmd.args(["run", "--max-cells", "5", "--timeout", "20s"])
        .arg(image("testbed"))
        .args(["args", "8", "0"]);
    let run = watch(cmd, Duration::from_secs(30));
    assert_eq!(run.out.status, 0, "{run:#?}");
    assert!(
        run.out
            .stdout
            .contains("args: spawned 4; refused: node exhausted: its maximum of cells is reached"),
        "{run:#?}"
    );
    support::assert_no_panic(&run.out);
}

#[test]
fn a_spawn_too_deep_is_a_typed_refusal() {
    // pid0 is depth 0: with --max-depth 0 it may not spawn at all.
    let out = support::run(
        &[
            "run",
            "--max-depth",
            "0",
            "--timeout",
            "2s",
            s(&image("testbed")),
            "tree",
            "2",
            "1",
        ],
        "",
    );
    assert_eq!(out.status, 124, "{out:#?}");
    assert!(
        out.stdout.contains(
            "tree: spawned 0; refused: node exhausted: its maximum spawn depth is reached"
        ),
        "{out:#?}"
    );
}

#[test]
fn arguments_count_against_the_node_budget() {
    // 20 children each given 50 MiB of arguments took the host to 1.25 GB.
    let mut cmd = ww();
    cmd.args(["run", "--node-memory", "256MiB", "--timeout", "20s"])
        .arg(image("testbed"))
        .args(["args", "20", "50"]);
    let run = watch(cmd, Duration::from_secs(40));
    assert_eq!(run.out.status, 0, "{run:#?}");
    assert!(
        run.out
            .stdout
            .contains("refused: node exhausted: its memory budget is reached"),
        "{run:#?}"
    );
    assert!(
        run.peak_rss < 256 * MIB + BASE,
        "ww held {} MiB: {run:#?}",
        run.peak_rss / MIB
    );
}

#[test]
fn tables_count_against_the_cells_memory() {
    // 100 tables of 2^20 function references under --max-memory 16MiB held 857 MB.
    let tables = "(table 1048576 funcref)".repeat(100);
    let wasm = wat::parse_str(format!("(module {tables} (func (export \"_start\")))")).unwrap();
    let (_dir, file) = support::wasm_file("tables.wasm", &wasm);
    let mut cmd = ww();
    cmd.args(["run", "--max-memory", "16MiB"]).arg(&file);
    let run = watch(cmd, Duration::from_secs(30));
    assert_eq!(run.out.status, 135, "{run:#?}");
    assert!(run.out.stderr.contains("memory limit"), "{run:#?}");
    assert!(
        run.peak_rss < 16 * MIB + BASE,
        "ww held {} MiB: {run:#?}",
        run.peak_rss / MIB
    );
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn a_fifo_in_the_image_does_not_block_the_node() {
    // Opening a FIFO nobody writes blocks: with --timeout 2s ww was still running at 20 s.
    let dir = testbed_copy();
    mkfifo(&dir.path().join("etc/fifo"));
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "2s"])
        .arg(dir.path())
        .args(["fs", "read", "/etc/fifo"]);
    let run = watch(cmd, Duration::from_secs(20));
    assert_eq!(run.out.status, 124, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(4), "{run:#?}");
}

#[test]
fn a_fifo_as_a_program_is_refused_at_once() {
    let dir = testbed_copy();
    mkfifo(&dir.path().join("etc/fifo"));
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "10s"]).arg(dir.path()).args([
        "spawn",
        "--path",
        "/etc/fifo",
        "--",
    ]);
    let run = watch(cmd, Duration::from_secs(20));
    assert_eq!(run.out.status, 0, "{run:#?}");
    assert!(run.out.stdout.contains("not a regular file"), "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(5), "{run:#?}");
}

#[test]
fn sigterm_ends_a_node_whose_cell_is_blocked_and_removes_its_socket() {
    // With --rpc-socket, SIGTERM was ignored while a cell was blocked on a FIFO.
    let dir = testbed_copy();
    mkfifo(&dir.path().join("etc/fifo"));
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("ww.sock");
    let mut child = ww()
        .arg("run")
        .arg("--rpc-socket")
        .arg(&socket)
        .arg(dir.path())
        .args(["fs", "read", "/etc/fifo"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(socket.exists(), "ww never made its socket");
    // Give the cell time to block in its open.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let waited = signalled.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(143), "after {waited:?}");
    assert!(waited < Duration::from_secs(2), "took {waited:?}");
    assert!(!socket.exists(), "the socket was left behind");
}

#[test]
fn compiling_a_large_program_does_not_block_the_node() {
    // Compiling a 60 MB module blocked the node for 30 s: its --timeout waited for it.
    let dir = testbed_copy();
    std::fs::write(dir.path().join("big.wasm"), p1_big(20_000, 300)).unwrap();
    let mut cmd = ww();
    cmd.args(["run", "--no-cache", "--timeout", "1s"])
        .arg(dir.path())
        .args(["spawn", "--path", "/big.wasm", "--"]);
    let run = watch(cmd, Duration::from_secs(120));
    assert_eq!(run.out.status, 124, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(3), "{run:#?}");
}
