//! Bounds on what a peer ww talks to can make it hold: an IPFS daemon that takes a request
//! and never answers, and a service that writes one endless line.
//!
//! Each run here is watched from outside: the harness kills `ww` at a hard limit (so a hang
//! fails the test instead of stalling the suite) and samples its resident memory from
//! `/proc/<pid>/status` while it runs.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ww::executor::stdio::MAX_LINE;

use crate::support::*;

/// What one watched run of `ww` did.
#[derive(Debug)]
struct Observed {
    /// The exit status, or `None` when the harness killed ww at its limit.
    status: Option<i32>,
    /// From spawn to exit (or to the kill).
    elapsed: Duration,
    /// When ww was seen to exit (or was killed).
    exited: Instant,
    /// The largest VmRSS sampled, in bytes.
    peak_rss: u64,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with an empty stdin, killing it after `limit`; `on_stdout` consumes its
/// stdout as it comes (and returns what the run keeps of it), stderr is kept whole, with
/// the time each of its lines arrived in `stderr_lines`.
fn watch(
    mut cmd: Command,
    limit: Duration,
    on_stdout: impl FnOnce(std::process::ChildStdout) -> String + Send + 'static,
    stderr_lines: Arc<Mutex<Vec<(Instant, String)>>>,
) -> Observed {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ww");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || on_stdout(stdout));
    let err_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let mut partial = Vec::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            partial.extend_from_slice(&buf[..n]);
            while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                stderr_lines.lock().unwrap().push((Instant::now(), line));
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let rss = RssWatch::start(pid);
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
    let exited = Instant::now();
    Observed {
        status,
        elapsed: exited - started,
        exited,
        peak_rss: rss.peak(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Reads a whole stream as text.
fn read_all(mut stream: std::process::ChildStdout) -> String {
    let mut s = String::new();
    let _ = stream.read_to_string(&mut s);
    s
}

/// A daemon that accepts every connection and reads every request to its end, and never
/// answers: the socket stays open until the client gives up. Its multiaddr.
fn silent_daemon() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut sink = [0u8; 16 << 10];
                // Until the client closes: everything it sends is taken, nothing answered.
                while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
            });
        }
    });
    format!("/ip4/127.0.0.1/tcp/{port}/http")
}

/// The answer deadline the silent-daemon tests give ww (WW_IPFS_TIMEOUT).
const IPFS_DEADLINE: Duration = Duration::from_secs(2);
/// Slack over the deadline: starting ww, and a loaded machine.
const IPFS_SLACK: Duration = Duration::from_secs(8);
/// When the harness gives up on ww: a hang fails here.
const IPFS_KILL: Duration = Duration::from_secs(30);

/// `ww` talking to `api` with the test's short deadline.
fn ww_silent(api: &str) -> Command {
    let mut cmd = ww();
    cmd.env("WW_IPFS", api)
        .env("WW_IPFS_TIMEOUT", format!("{}s", IPFS_DEADLINE.as_secs()));
    cmd
}

#[test]
fn export_to_an_ipfs_daemon_that_never_answers_fails_at_its_deadline() {
    let api = silent_daemon();
    let dir = tree(&[("bin/main.wasm", b"\0asm"), ("etc/motd", b"hello\n")]);
    let mut cmd = ww_silent(&api);
    cmd.args(["export", s(dir.path())]);
    let run = watch(cmd, IPFS_KILL, read_all, Arc::default());
    eprintln!(
        "export to a silent daemon: status {:?} after {:?}",
        run.status, run.elapsed
    );
    assert!(
        run.status.is_some(),
        "ww export waited on a silent daemon until killed: {run:#?}"
    );
    assert!(
        run.elapsed < IPFS_DEADLINE + IPFS_SLACK,
        "ww export took too long: {run:#?}"
    );
    let out = Out {
        status: run.status.unwrap_or(-1),
        stdout: run.stdout.clone(),
        stderr: run.stderr.clone(),
    };
    out.assert_ww_error("failed to add");
    // It names the daemon, the deadline that passed, and the knob.
    let port = api.split('/').nth(4).unwrap();
    assert!(out.stderr.contains(port), "{out:#?}");
    assert!(out.stderr.contains("did not answer within 2s"), "{out:#?}");
    assert!(out.stderr.contains("WW_IPFS_TIMEOUT"), "{out:#?}");
}

#[test]
fn a_cell_adding_to_an_ipfs_daemon_that_never_answers_gets_an_error() {
    let api = silent_daemon();
    let mut cmd = ww_silent(&api);
    cmd.args(["run", s(&image("testbed")), "ipfs-add", "hello"]);
    let run = watch(cmd, IPFS_KILL, read_all, Arc::default());
    eprintln!(
        "ipfs-add to a silent daemon: status {:?} after {:?}",
        run.status, run.elapsed
    );
    assert!(
        run.status.is_some(),
        "the cell's ipfs add waited on a silent daemon until killed: {run:#?}"
    );
    assert!(
        run.elapsed < IPFS_DEADLINE + IPFS_SLACK,
        "the cell's ipfs add took too long: {run:#?}"
    );
    assert_eq!(run.status, Some(1), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("error: ipfs-add: unavailable:"))
        .unwrap_or_else(|| panic!("no error line: {run:#?}"));
    assert!(line.contains("did not answer within 2s"), "{run:#?}");
    // The host's temporary file is not the cell's business.
    assert!(!line.contains("ww-ipfs-add-"), "{run:#?}");
}

/// What the flooding service writes: one line of 'x', no newline.
const FLOOD_BYTES: u64 = 1 << 30;
/// What must reach ww's stdout while pid0 lives (a debug build moves several hundred MiB
/// in that time; the flood is sized to outlast pid0, so ww exits while it still writes).
const FLOWED: u64 = 64 << 20;
/// How long pid0 lives beside it.
const PID0_MS: u64 = 3000;
/// ww's resident memory must stay under this (a debug build's engine, runtime and
/// compiled cells are well under it; the flood alone would be FLOOD_BYTES).
const RSS_CEILING: u64 = 150 << 20;

/// A preview 1 command that writes `bytes` of 'x' and no newline to stdout, 64 KiB a call,
/// then exits (early if a write fails).
fn p1_flood(bytes: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $left i64) (local $n i32)
    (memory.fill (i32.const 1024) (i32.const 120) (i32.const 65536))
    (local.set $left (i64.const {bytes}))
    (block $done
      (loop $more
        (br_if $done (i64.eqz (local.get $left)))
        (local.set $n
          (if (result i32) (i64.lt_u (local.get $left) (i64.const 65536))
            (then (i32.wrap_i64 (local.get $left)))
            (else (i32.const 65536))))
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (local.get $n))
        (br_if $done (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $left (i64.sub (local.get $left) (i64.extend_i32_u (i32.load (i32.const 8)))))
        (br $more)))))"#
    ))
    .unwrap()
}

/// A preview 1 command that sleeps `ms`, writes `pid0: done` to stderr, and exits 0.
///
/// It sleeps on two clock subscriptions, not one: wasmtime-wasi serves a lone relative
/// clock with `std::thread::sleep` when the cell may block its thread (ww's cells may),
/// which would stop every cell on ww's single executor thread, the flood included.
fn p1_sleep_then_say(ms: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "pid0: done\n")
  (func (export "_start")
    ;; Two 48-byte subscriptions: a relative monotonic clock each.
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {ns}))
    (i32.store8 (i32.const 56) (i32.const 0))
    (i32.store (i32.const 64) (i32.const 1))
    (i64.store (i32.const 72) (i64.const {ns}))
    (drop (call $poll (i32.const 0) (i32.const 128) (i32.const 2) (i32.const 200)))
    (i32.store (i32.const 256) (i32.const 512))
    (i32.store (i32.const 260) (i32.const 11))
    (drop (call $fd_write (i32.const 2) (i32.const 256) (i32.const 1) (i32.const 264)))))"#,
        ns = ms * 1_000_000
    ))
    .unwrap()
}

/// What the test saw of ww's stdout, counted as it streamed by (never held whole).
#[derive(Debug, Default)]
struct Lines {
    /// Complete lines.
    lines: u64,
    /// The longest line, with its prefix and newline.
    longest: usize,
    /// Bytes of 'x' delivered.
    xs: u64,
    /// Lines that did not start with the service's prefix.
    unprefixed: u64,
    /// Bytes after the last newline.
    trailing: usize,
}

fn count_lines(mut stream: std::process::ChildStdout, prefix: &'static [u8]) -> Lines {
    let mut seen = Lines::default();
    let mut buf = vec![0u8; 1 << 20];
    // The current line: its length so far and its first bytes.
    let (mut len, mut head) = (0usize, Vec::new());
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            len += 1;
            if head.len() < prefix.len() {
                head.push(b);
            }
            if b == b'x' {
                seen.xs += 1;
            }
            if b == b'\n' {
                seen.lines += 1;
                seen.longest = seen.longest.max(len);
                if head != prefix {
                    seen.unprefixed += 1;
                }
                len = 0;
                head.clear();
            }
        }
    }
    seen.trailing = len;
    seen.longest = seen.longest.max(len);
    seen
}

#[test]
fn a_service_writing_one_endless_line_is_cut_into_bounded_lines() {
    let img = tree(&[
        ("bin/main.wasm", &p1_sleep_then_say(PID0_MS)),
        ("svc/flood/bin/main.wasm", &p1_flood(FLOOD_BYTES)),
    ]);
    let mut cmd = ww();
    cmd.args(["run", s(img.path())]);
    let seen = Arc::new(Mutex::new(None));
    let keep = seen.clone();
    let stderr_lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let run = watch(
        cmd,
        Duration::from_secs(60),
        move |stdout| {
            *keep.lock().unwrap() = Some(count_lines(stdout, b"[flood] "));
            String::new()
        },
        stderr_lines.clone(),
    );
    let seen = seen.lock().unwrap().take().unwrap();
    let done = stderr_lines
        .lock()
        .unwrap()
        .iter()
        .find(|(_, l)| l == "pid0: done")
        .map(|(at, _)| *at);
    let exit_after_pid0 = done.map(|at| run.exited.saturating_duration_since(at));
    eprintln!(
        "flood of {FLOOD_BYTES} bytes: status {:?} after {:?}, peak VmRSS {} MiB, exit {:?} \
         after pid0's end; {seen:?}; stderr {:?}",
        run.status,
        run.elapsed,
        run.peak_rss >> 20,
        exit_after_pid0,
        run.stderr
    );
    assert_eq!(run.status, Some(0), "{run:#?}");
    assert!(
        run.peak_rss < RSS_CEILING,
        "ww held {} MiB (ceiling {} MiB): {seen:?}",
        run.peak_rss >> 20,
        RSS_CEILING >> 20
    );
    let bound = b"[flood] ".len() + MAX_LINE + 1;
    assert!(
        seen.longest <= bound,
        "a line of {} bytes (bound {bound}): {seen:?}",
        seen.longest
    );
    assert_eq!(seen.unprefixed, 0, "{seen:?}");
    assert_eq!(seen.trailing, 0, "{seen:?}");
    // Output flowed while the flood ran, rather than piling up until the service ended.
    assert!(seen.xs >= FLOWED, "{seen:?}");
    let exit_after_pid0 = exit_after_pid0.unwrap_or_else(|| panic!("pid0 never ended: {run:#?}"));
    assert!(
        exit_after_pid0 < Duration::from_secs(3),
        "ww took {exit_after_pid0:?} to exit after pid0 ended"
    );
    // Nor was pid0 itself held up: the service's output shares ww's one executor thread.
    assert!(
        run.elapsed < Duration::from_millis(PID0_MS) + Duration::from_secs(4),
        "ww ran {:?} for a pid0 of {PID0_MS} ms",
        run.elapsed
    );
}
