//! Modes that try to exhaust the node, for the tests of its budget (`--node-memory`,
//! `--max-cells`, `--max-depth`):
//!
//! - `tree WIDTH MIB`: touches MIB MiB of memory, then spawns up to WIDTH children running
//!   `tree WIDTH MIB` themselves (with an executor, the image read-only, no stdio), and
//!   sleeps forever. pid0
//!   (the root, the only one whose stdout is kept) prints `tree: spawned N; refused: WHY`
//!   after its own spawns, where WHY is the first refusal (`none` if there was none);
//! - `args N MIB`: spawns N children that `block`, each given one argument of MIB MiB, and
//!   prints `args: spawned K; refused: WHY`, then exits (its children with it);
//! - `handles N WIDTH`: spawns up to WIDTH children running `handles N WIDTH` themselves
//!   (with an executor, the image read-only, no stdio), then subscribes N monotonic-clock
//!   pollables and keeps them all (host state the cell's memory does not hold), prints
//!   `handles: held N; spawned K; refused: WHY` and sleeps forever;
//! - `fifos N FIFO FILE`: spawns N children reading FIFO (`fs read FIFO`, the image
//!   read-only, no stdio), each blocking the host thread that opens it; after a second,
//!   reads FILE itself and prints `fifos: spawned K; refused: WHY; read FILE in MS ms`;
//! - `pipe-share`: spawns `pipe-share-b` with its stdout piped to this cell, which never
//!   reads it, waits for it and prints `child: <status>`. `pipe-share-b` spawns `flood`
//!   with the same stdout (inherited), waits a second (the pipe is full, `flood` waits for
//!   room), then writes to it itself; `flood` writes to its stdout forever;
//! - `programs N KIB`: spawns, from bytes, N different preview 1 modules that return at
//!   once, each with a KIB KiB data segment, waiting for each, and prints `programs:
//!   spawned K; refused: WHY` (the compiled programs are what the host might keep).

use std::time::Duration;

use ww::process::{Child, Command, SpawnError, Stdio};

use super::{SELF, executor, fail, say};

fn number(text: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| fail(&format!("not a number: {text}")))
}

/// Memory that is really resident: every page written.
fn touch(mib: u64) -> Vec<u8> {
    vec![1u8; (mib as usize) << 20]
}

fn refused(first: &Option<SpawnError>) -> String {
    first
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

pub fn tree(width: &str, mib: &str) -> ! {
    let (width_n, mib_n) = (number(width), number(mib));
    let held = touch(mib_n);
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..width_n {
        let spawned = Command::path(SELF)
            .args(["tree", width, mib])
            .dir_read_only("/")
            .executor(true)
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    say(&format!(
        "tree: spawned {}; refused: {}",
        children.len(),
        refused(&first)
    ));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&held);
    }
}

pub fn args(n: &str, mib: &str) -> ! {
    let (n, mib) = (number(n), number(mib));
    let big = "a".repeat((mib as usize) << 20);
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..n {
        let spawned = Command::path(SELF)
            .args(["block", big.as_str()])
            .stdin(Stdio::Pipe)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    say(&format!(
        "args: spawned {}; refused: {}",
        children.len(),
        refused(&first)
    ));
    ww::exit(0);
}

pub fn handles(n: &str, width: &str) -> ! {
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..number(width) {
        let spawned = Command::path(SELF)
            .args(["handles", n, width])
            .dir_read_only("/")
            .executor(true)
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    let mut held = Vec::new();
    for _ in 0..number(n) {
        held.push(wasip2::clocks::monotonic_clock::subscribe_duration(u64::MAX));
    }
    say(&format!(
        "handles: held {}; spawned {}; refused: {}",
        held.len(),
        children.len(),
        refused(&first)
    ));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&held);
    }
}

/// `value` as unsigned LEB128, appended to `out`.
fn leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A preview 1 module whose `_start` returns, with an active data segment of `len` bytes
/// derived from `seed` (so that no two seeds give the same program).
fn program(seed: u64, len: usize) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut section = |id: u8, body: &[u8]| {
        wasm.push(id);
        leb(&mut wasm, body.len() as u64);
        wasm.extend_from_slice(body);
    };
    section(1, &[1, 0x60, 0, 0]);
    section(3, &[1, 0]);
    let mut memory = vec![1, 0];
    leb(&mut memory, (len as u64).div_ceil(65536).max(1));
    section(5, &memory);
    section(7, b"\x01\x06_start\x00\x00");
    section(10, &[1, 2, 0, 0x0b]);
    let mut data = vec![1, 0, 0x41, 0, 0x0b];
    leb(&mut data, len as u64);
    let pattern = seed.to_le_bytes();
    data.extend((0..len).map(|i| pattern[i % 8] ^ (i as u8) | 1));
    section(11, &data);
    wasm
}

pub fn programs(n: &str, kib: &str) -> ! {
    let (n, kib) = (number(n), number(kib));
    let executor = executor();
    let mut spawned = 0;
    let mut first = None;
    for seed in 0..n {
        let bytes = program(seed, (kib as usize) << 10);
        let child = Command::bytes(bytes)
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match child {
            Ok(mut child) => {
                child.wait();
                spawned += 1;
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    say(&format!(
        "programs: spawned {spawned}; refused: {}",
        refused(&first)
    ));
    ww::exit(0);
}

pub fn fifos(n: &str, fifo: &str, file: &str) -> ! {
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..number(n) {
        let spawned = Command::path(SELF)
            .args(["fs", "read", fifo])
            .dir_read_only("/")
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let read = std::fs::read(file);
    say(&format!(
        "fifos: spawned {}; refused: {}; read {file} in {} ms ({})",
        children.len(),
        refused(&first),
        started.elapsed().as_millis(),
        if read.is_ok() { "ok" } else { "failed" }
    ));
    ww::exit(0);
}

pub fn pipe_share() -> ! {
    let executor = executor();
    let mut child = Command::path(SELF)
        .arg("pipe-share-b")
        .dir_read_only("/")
        .executor(true)
        .stdin(Stdio::Null)
        .stdout(Stdio::Pipe)
        .stderr(Stdio::Null)
        .spawn(&executor)
        .unwrap_or_else(|e| fail(&format!("spawn: {e}")));
    // Held, never read.
    let _unread = child.take_stdout();
    say(&format!("child: {}", child.wait()));
    ww::exit(0);
}

pub fn pipe_share_b() -> ! {
    use std::io::Write as _;
    let executor = executor();
    let _flood = Command::path(SELF)
        .arg("flood")
        .stdin(Stdio::Null)
        .stderr(Stdio::Null)
        .spawn(&executor)
        .unwrap_or_else(|e| fail(&format!("spawn: {e}")));
    std::thread::sleep(Duration::from_secs(1));
    let chunk = [b'b'; 4096];
    loop {
        if std::io::stdout().write_all(&chunk).is_err() {
            ww::exit(1);
        }
    }
}

pub fn flood() -> ! {
    use std::io::Write as _;
    let chunk = [b'f'; 4096];
    loop {
        if std::io::stdout().write_all(&chunk).is_err() {
            ww::exit(1);
        }
    }
}
