//! Shared helpers: running `ww`, finding the built images, making small wasm images.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one `ww` run did.
#[derive(Debug)]
pub struct Out {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts that `ww` failed on its own account (status 125) with a diagnostic that has a
    /// help line and no panic.
    #[track_caller]
    pub fn assert_ww_error(&self, needle: &str) {
        assert_eq!(self.status, 125, "{self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        assert!(self.stderr.contains("help:"), "no help line: {self:#?}");
        assert_no_panic(self);
    }
}

#[track_caller]
pub fn assert_no_panic(out: &Out) {
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "ww panicked: {out:#?}"
    );
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// An image built by `cargo xtask images`.
pub fn image(name: &str) -> PathBuf {
    let dir = repo().join("examples/images").join(name);
    assert!(
        dir.join("bin/main.wasm").is_file(),
        "{} is missing: run `cargo xtask images` (or `cargo xtask test`) first",
        dir.join("bin/main.wasm").display()
    );
    dir
}

/// `ww` with a clean logging environment, so the caller's RUST_LOG or WW_ENV cannot leak in,
/// and one compile cache shared by every test, so each guest is compiled once per test run.
///
/// `WW_TEST_BIN` runs another build of `ww` instead (for instance an older one, to show that
/// a test fails there).
pub fn ww() -> Command {
    let bin = std::env::var_os("WW_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ww").into());
    let mut cmd = Command::new(bin);
    cmd.env_remove("RUST_LOG")
        .env_remove("WW_ENV")
        .env("WW_CACHE_DIR", repo().join("target").join("test-cache"));
    cmd
}

/// Runs `ww ARGS` with `stdin`, killing it after a minute.
pub fn run(args: &[&str], stdin: &str) -> Out {
    let mut cmd = ww();
    cmd.args(args);
    output(cmd, stdin)
}

/// Runs a prepared command with `stdin`, killing it after a minute.
pub fn output(mut cmd: Command, stdin: &str) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ww");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ww did not finish within a minute: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Out {
        status: status.code().unwrap_or(-1),
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Writes `files` (path, bytes) under a fresh temporary directory.
pub fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, data) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

/// A preview 1 command that prints its args, environment, preopened directory names and the
/// first read of stdin, each NUL-separated, then exits with `code`.
pub fn p1_dump(code: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "args:")
  (data (i32.const 110) "\nenv:")
  (data (i32.const 120) "\ndirs:")
  (data (i32.const 130) "\nstdin:")
  (data (i32.const 140) "\n")
  (data (i32.const 150) "\00")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (local $fd i32)
    (call $write (i32.const 100) (i32.const 5))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $write (i32.const 4096) (i32.load (i32.const 4)))
    (call $write (i32.const 110) (i32.const 5))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 2048) (i32.const 8192)))
    (call $write (i32.const 8192) (i32.load (i32.const 4)))
    (call $write (i32.const 120) (i32.const 6))
    (local.set $fd (i32.const 3))
    (block $done
      (loop $next
        (br_if $done (call $fd_prestat_get (local.get $fd) (i32.const 0)))
        (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 12288) (i32.load (i32.const 4))))
        (call $write (i32.const 12288) (i32.load (i32.const 4)))
        (call $write (i32.const 150) (i32.const 1))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next)))
    (call $write (i32.const 130) (i32.const 7))
    (i32.store (i32.const 16) (i32.const 16384))
    (i32.store (i32.const 20) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))
    (call $write (i32.const 16384) (i32.load (i32.const 8)))
    (call $write (i32.const 140) (i32.const 1))
    (call $proc_exit (i32.const {code}))))
"#
    ))
    .unwrap()
}

/// A preview 1 command that loops forever.
pub fn p1_spin() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    )
    .unwrap()
}

/// A preview 1 command that grows its memory by 1 MiB at a time, forever.
pub fn p1_hog() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#,
    )
    .unwrap()
}

/// A preview 1 command that sleeps `ms` milliseconds, then exits 0.
pub fn p1_sleep(ms: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {ns}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
        ns = ms * 1_000_000
    ))
    .unwrap()
}

/// A preview 1 command that traps at once.
pub fn p1_trap() -> Vec<u8> {
    wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#)
        .unwrap()
}

/// A component command that ends through `ww:host/cell.exit` with `code`.
pub fn component_exit(code: u8) -> Vec<u8> {
    wat::parse_str(format!(
        r#"
(component
  (import "ww:host/cell@0.1.0" (instance $cell (export "exit" (func (param "code" u8)))))
  (core func $exit (canon lower (func $cell "exit")))
  (core module $m
    (import "cell" "exit" (func $exit (param i32)))
    (func (export "run") (result i32) (call $exit (i32.const {code})) (i32.const 0)))
  (core instance $i (instantiate $m (with "cell" (instance (export "exit" (func $exit))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $r (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $r)))
"#
    ))
    .unwrap()
}

/// A component that imports interfaces no host provides.
pub fn component_with_unknown_imports() -> Vec<u8> {
    wat::parse_str(
        r#"
(component
  (import "acme:rockets/launch@1.0.0" (instance (export "fire" (func))))
  (import "ww:host/cell@0.1.0" (instance (export "image" (func (result string)))))
  (import "acme:rockets/fuel@1.0.0" (instance (export "level" (func (result u32))))))
"#,
    )
    .unwrap()
}

/// Writes `bytes` as `name` in a fresh directory and returns both.
pub fn wasm_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tree(&[(name, bytes)]);
    let path = dir.path().join(name);
    (dir, path)
}

/// The path as a `&str` for argument lists.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Records that the calling test could not run here, and why: the test then returns early,
/// and `cargo xtask test` counts it as skipped, not passed (it reads the file named by
/// `WW_TEST_SKIPS`, one `name<TAB>reason` line a skip). Always prints the reason, so a plain
/// `cargo test` shows it too.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("WW_TEST_SKIPS") {
        let line = format!("{test}\t{}\n", reason.replace(['\n', '\t'], " "));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut file) = file {
            // One write of one line: O_APPEND keeps lines from parallel tests whole.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Writes an executable (mode 0755) `body` at `path`, creating its directory.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The virtualenv's Python (made by `cargo xtask test` before the workspace tests), if it
/// is there.
pub fn venv_python() -> Option<PathBuf> {
    let python = repo().join("target/pyenv/bin/python");
    python.exists().then_some(python)
}

/// A field of /proc/`pid`/status in KiB (`VmRSS:`, `VmHWM:`), if the process still runs.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The resident memory of process `pid` now, in bytes (`VmRSS`), if it still runs.
pub fn rss(pid: u32) -> Option<u64> {
    Some(status_kib(pid, "VmRSS:")? * 1024)
}

/// Samples a process's resident memory every 10 ms on a thread of its own, keeping the
/// highest, until dropped or [`RssWatch::peak`] is read.
pub struct RssWatch {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssWatch {
    /// Starts watching `pid`.
    pub fn start(pid: u32) -> RssWatch {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match rss(pid) {
                    Some(now) => {
                        p.fetch_max(now, Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch { peak, stop }
    }

    /// The highest resident memory seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What [`watch`] saw of one `ww` run.
#[derive(Debug)]
pub struct Watched {
    pub out: Out,
    /// The highest resident memory of the `ww` process, in bytes.
    pub peak_rss: u64,
    /// From start to exit.
    pub elapsed: Duration,
}

/// Runs a prepared command with no stdin while watching its resident memory, killing it
/// after `limit`.
pub fn watch(mut cmd: Command, limit: Duration) -> Watched {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ww");
    let rss = RssWatch::start(child.id());
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    Watched {
        out: Out {
            status: status.code().unwrap_or(-1),
            stdout: reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        },
        peak_rss: rss.peak(),
        elapsed,
    }
}

/// A preview 1 module of `functions` functions, each adding `body_ops` constants: a program
/// that takes the compiler long, encoded directly (the `wat` crate would take longer to
/// parse it than ww to compile it). It has no `_start`: ww refuses it after compiling.
pub fn p1_big(functions: u32, body_ops: u32) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Type 0: () -> i32.
    section(1, &[1, 0x60, 0, 1, 0x7f], &mut module);
    let mut funcs = Vec::new();
    leb(u64::from(functions), &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions as usize));
    section(3, &funcs, &mut module);
    // One body: i32.const 1, then (i32.const 1, i32.add) × body_ops, end.
    let mut body = vec![0u8]; // no locals
    body.extend_from_slice(&[0x41, 1]);
    for _ in 0..body_ops {
        body.extend_from_slice(&[0x41, 1, 0x6a]);
    }
    body.push(0x0b);
    let mut entry = Vec::new();
    leb(body.len() as u64, &mut entry);
    entry.extend_from_slice(&body);
    let mut code = Vec::new();
    leb(u64::from(functions), &mut code);
    for _ in 0..functions {
        code.extend_from_slice(&entry);
    }
    section(10, &code, &mut module);
    module
}

/// Installs each `(fd, target)` in the process `cmd` starts: every source first moves out of
/// the way (a source may sit on another's target, or on its own target, where dup2 would
/// keep close-on-exec), then lands on its target, which dup2 leaves inheritable.
pub fn with_fds<T: std::os::fd::AsRawFd>(cmd: &mut Command, fds: &[(&T, std::os::fd::RawFd)]) {
    use std::os::unix::process::CommandExt as _;
    let map: Vec<(i32, i32)> = fds.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    assert!(map.len() <= 16, "at most 16 fds");
    // SAFETY: only fcntl and dup2, which are async-signal-safe, run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut moved = [0; 16];
            for (i, &(src, _)) in map.iter().enumerate() {
                moved[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &(_, dst)) in map.iter().enumerate() {
                if libc::dup2(moved[i], dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
