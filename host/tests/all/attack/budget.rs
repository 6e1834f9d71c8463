//! Attacks on what the node's budget does not see: host state a cell makes ww hold outside
//! its linear memory (resource handles, compiled programs), and host calls that stop the
//! node's one thread (writes to a stdout nobody reads). Each test records the numbers it
//! was written against; a finding not fixed yet is `#[ignore]`d with them.

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{self, image, watch, ww};

/// What ww itself holds before any attack (as in `exhaust.rs`).
const BASE: u64 = 160 << 20;

const MIB: u64 = 1 << 20;

/// A preview 1 command writing 64 KiB to its stdout, forever.
fn p1_flood() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
      (br $l))))"#,
    )
    .unwrap()
}

/// How `ww` ended when run with a stdout nobody reads: its status (`None`: killed at
/// `limit`), how long it ran, and its stderr.
fn run_unread(mut cmd: std::process::Command, limit: Duration) -> (Option<i32>, Duration, String) {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held, never read: once the pipe is full, every write to it blocks.
    let _stdout = child.stdout.take();
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    (status, elapsed, errors.join().unwrap())
}

#[test]
fn a_cell_writing_to_an_unread_stdout_does_not_block_the_node() {
    // ww's stdout is a pipe nobody reads; the cell's writes went to it on the executor's
    // thread, so once the pipe was full the node stopped: --timeout 2s, still running when
    // killed at 15 s.
    let (_dir, file) = support::wasm_file("flood.wasm", &p1_flood());
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "2s"]).arg(&file);
    let (status, elapsed, stderr) = run_unread(cmd, Duration::from_secs(15));
    assert_eq!(status, Some(124), "after {elapsed:?}: {stderr}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

#[test]
fn resource_handles_are_capped_and_charged() {
    // Every cell of a tree holds 99,000 pollables: host memory outside its linear memory,
    // charged to nothing. Under --node-memory 256MiB ww held 1.31 GB (wasmtime's own caps:
    // a million table entries, 100,000 guest handles per store).
    let mut cmd = ww();
    cmd.args([
        "run",
        "--max-memory",
        "16MiB",
        "--node-memory",
        "256MiB",
        "--timeout",
        "10s",
    ])
    .arg(image("testbed"))
    .args(["handles", "99000", "16"]);
    let run = watch(cmd, Duration::from_secs(40));
    assert_eq!(run.out.status, 135, "{run:#?}");
    assert!(
        run.out
            .stderr
            .contains("held more than 4096 resources (streams, pollables, descriptors) at once"),
        "{run:#?}"
    );
    assert!(
        run.peak_rss < 256 * MIB + BASE,
        "ww held {} MiB: {run:#?}",
        run.peak_rss / MIB
    );
    support::assert_no_panic(&run.out);
}

#[test]
fn a_cell_within_the_handle_cap_runs_on() {
    // 2,000 pollables (two table entries each) fit the cap of 4,096: the cell keeps them
    // until its deadline.
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "2s"])
        .arg(image("testbed"))
        .args(["handles", "2000", "0"]);
    let run = watch(cmd, Duration::from_secs(30));
    assert_eq!(run.out.status, 124, "{run:#?}");
    assert!(
        run.out
            .stdout
            .contains("handles: held 2000; spawned 0; refused: none"),
        "{run:#?}"
    );
}

/// A preview 1 command that opens its first preopened directory (fd 3) as `.`, over and
/// over, keeping every descriptor; exits with the errno of the first open that fails.
fn p1_open_forever() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) ".")
  (func (export "_start") (local $errno i32)
    (loop $l
      (local.set $errno
        (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0)
          (i32.const 64)))
      (br_if $l (i32.eqz (local.get $errno))))
    (call $exit (local.get $errno))))"#,
    )
    .unwrap()
}

#[test]
fn a_preview1_cell_holds_at_most_the_handle_cap_of_descriptors() {
    // Every open is a host descriptor and an fd of ww's own: ww's whole fd table (and its
    // RLIMIT_NOFILE, shared by every cell and connection) was the only bound.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/main.wasm"), p1_open_forever()).unwrap();
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "20s"]).arg(dir.path());
    let run = watch(cmd, Duration::from_secs(40));
    assert_eq!(run.out.status, 135, "{run:#?}");
    assert!(run.out.stderr.contains("held more than 4096"), "{run:#?}");
}

#[test]
fn compiled_programs_spawned_from_bytes_are_bounded() {
    // 300 different programs of 4 MiB each, spawned from bytes one after the other: each
    // compiled program (and its link) was kept for the node's life, outside the budget:
    // 616 MB under --node-memory 256MiB, growing with every spawn.
    let mut cmd = ww();
    cmd.args([
        "run",
        "--no-cache",
        "--max-memory",
        "16MiB",
        "--node-memory",
        "256MiB",
        "--timeout",
        "100s",
    ])
    .arg(image("testbed"))
    .args(["programs", "300", "4096"]);
    let run = watch(cmd, Duration::from_secs(120));
    assert_eq!(run.out.status, 0, "{run:#?}");
    assert!(
        run.out
            .stdout
            .contains("programs: spawned 300; refused: none"),
        "{run:#?}"
    );
    // The memory cache keeps at most its cap of compiled images.
    let cap = ww::executor::cache::CacheLimits::DEFAULT_MEMORY;
    assert!(
        run.peak_rss < cap + 32 * MIB + BASE,
        "ww held {} MiB: {run:#?}",
        run.peak_rss / MIB
    );
}

#[test]
#[ignore = "finding: 600 cells each opening a FIFO nobody writes hold all 512 threads of \
            tokio's blocking pool; every filesystem call of every cell (and spawns by path, \
            stdin) then waits for them: pid0's read of a regular file did not finish in 7 s \
            (ww ended by --timeout 8s, status 124, 110 MB RSS). The node's deadline and \
            signals still work. Needs a bound on blocking work per cell, or non-blocking \
            opens inside wasi:filesystem"]
fn cells_blocked_on_fifos_do_not_stall_other_cells_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["bin", "etc"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::copy(
        image("testbed").join("bin/main.wasm"),
        dir.path().join("bin/main.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("etc/hello"), "hello\n").unwrap();
    let fifo = std::ffi::CString::new(
        dir.path()
            .join("etc/fifo")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a valid C string; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let mut cmd = ww();
    cmd.args(["run", "--max-children", "1000", "--timeout", "8s"])
        .arg(dir.path())
        .args(["fifos", "600", "/etc/fifo", "/etc/hello"]);
    let run = watch(cmd, Duration::from_secs(30));
    assert_eq!(run.out.status, 0, "{run:#?}");
    assert!(run.out.stdout.contains("fifos: spawned 600"), "{run:#?}");
    assert!(run.out.stdout.contains("(ok)"), "{run:#?}");
}

#[test]
fn a_cell_sharing_a_full_pipe_waits_instead_of_failing() {
    // Cells sharing a piped stdout (a child inheriting its parent's pipe) shared one
    // wasmtime-wasi stream, locked while a writer waited for room and with one check-write
    // budget for all: once the pipe was full and `flood` waited, its parent's own write
    // trapped it (`child: trapped`, 1.7 s after start, its first write after a 1 s sleep)
    // instead of waiting. A service's children writing to its prefixed stream likewise.
    let mut cmd = ww();
    cmd.args(["run", "--timeout", "4s"])
        .arg(image("testbed"))
        .arg("pipe-share");
    let run = watch(cmd, Duration::from_secs(30));
    // pid0 never reads its child's pipe: the child and its own child wait for room until
    // the deadline.
    assert_eq!(run.out.status, 124, "{run:#?}");
    assert!(!run.out.stdout.contains("child:"), "{run:#?}");
}
