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

/// Children spawned so far, and the first refusal, if any.
struct Spawned {
    children: Vec<Child>,
    first_refusal: Option<SpawnError>,
}

impl Spawned {
    /// `n` children of `command` (with no stdout or stderr), going on past refusals.
    fn all(n: u64, command: &mut Command) -> Spawned {
        let executor = executor();
        command.stdout(Stdio::Null).stderr(Stdio::Null);
        let mut spawned = Spawned {
            children: Vec::new(),
            first_refusal: None,
        };
        for _ in 0..n {
            match command.spawn(&executor) {
                Ok(child) => spawned.children.push(child),
                Err(e) => {
                    spawned.first_refusal.get_or_insert(e);
                }
            }
        }
        spawned
    }

    /// `spawned N; refused: WHY` (`none` when nothing was refused).
    fn summary(&self) -> String {
        let refused = self
            .first_refusal
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        format!("spawned {}; refused: {refused}", self.children.len())
    }
}

/// Sleeps forever, keeping `held` alive.
fn hold<T>(held: T) -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&held);
    }
}

pub fn tree(width: &str, mib: &str) -> ! {
    let held = touch(number(mib));
    let spawned = Spawned::all(
        number(width),
        Command::path(SELF)
            .args(["tree", width, mib])
            .dir_read_only("/")
            .executor(true)
            .stdin(Stdio::Null),
    );
    say(&format!("tree: {}", spawned.summary()));
    hold((held, spawned.children))
}

pub fn args(n: &str, mib: &str) -> ! {
    let big = "a".repeat((number(mib) as usize) << 20);
    let spawned = Spawned::all(
        number(n),
        Command::path(SELF)
            .args(["block", big.as_str()])
            .stdin(Stdio::Pipe),
    );
    say(&format!("args: {}", spawned.summary()));
    ww::exit(0);
}

pub fn handles(n: &str, width: &str) -> ! {
    let spawned = Spawned::all(
        number(width),
        Command::path(SELF)
            .args(["handles", n, width])
            .dir_read_only("/")
            .executor(true)
            .stdin(Stdio::Null),
    );
    let mut held = Vec::new();
    for _ in 0..number(n) {
        held.push(wasip2::clocks::monotonic_clock::subscribe_duration(u64::MAX));
    }
    say(&format!("handles: held {}; {}", held.len(), spawned.summary()));
    hold((held, spawned.children))
}

pub fn programs(n: &str, kib: &str) -> ! {
    let (n, bytes) = (number(n), (number(kib) as u32) << 10);
    let executor = executor();
    let mut spawned = 0;
    let mut first = None;
    for seed in 0..n {
        let child = Command::bytes(super::churn::module(seed, bytes))
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
    let refused = first.map_or_else(|| "none".to_owned(), |e| e.to_string());
    say(&format!("programs: spawned {spawned}; refused: {refused}"));
    ww::exit(0);
}

pub fn fifos(n: &str, fifo: &str, file: &str) -> ! {
    let spawned = Spawned::all(
        number(n),
        Command::path(SELF)
            .args(["fs", "read", fifo])
            .dir_read_only("/")
            .stdin(Stdio::Null),
    );
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let read = std::fs::read(file);
    say(&format!(
        "fifos: {}; read {file} in {} ms ({})",
        spawned.summary(),
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
