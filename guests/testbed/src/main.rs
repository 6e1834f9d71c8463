//! `testbed`: a cell that misbehaves on purpose, so that tests can watch `ww` contain it.
//!
//! `argv[1]` picks the behaviour:
//!
//! - `spin`: loops forever (for `--timeout`);
//! - `hog`: allocates and touches 1 MiB chunks forever, keeping them (for `--max-memory`);
//! - `trap`: executes `unreachable`;
//! - `exit N`: exits with status N through [`ww::exit`];
//! - `storm`: spawns `/bin/main.wasm spin` children with no stdio until a spawn is refused,
//!   then prints `spawned N; refused: <why>`, kills them and exits 0;
//! - `kill`: spawns `/bin/main.wasm spin`, kills it, waits for it through its pollable,
//!   prints `child: <status>`;
//! - `spawn [OPTIONS] -- CHILD_ARGS...`: spawns `/bin/main.wasm CHILD_ARGS...` (or `--path
//!   P`) with inherited stdio and the options given (`--ipfs` and `--network` pass those
//!   capabilities on), waits, and prints `child: <status>`, or `refused: <why>` when the
//!   host refuses (exit 0 either way). `--bytes` reads the program through this cell's own
//!   filesystem and sends its bytes (so the host does not open it by path; `error: …` when
//!   the cell cannot read it); `--bg` does
//!   not wait: the child runs on, and is waited for (`child: <status>`) when the mode or
//!   `seq` ends; `--while-bg` spawns and waits for the child over and over while a `--bg`
//!   child still runs (at most 10,000 times), then prints `repeated N`;
//! - `fs OP ARGS...`: one filesystem operation (see `fsops.rs`), printing `ok OP ARGS` (and
//!   ` = RESULT`) or `error: KIND (OP ARGS)`, exit 0 either way. The operations: `mkdir P`,
//!   `rename A B`, `symlink TARGET LINK`, `link A B` (a hard link), `unlink P`, `rmdir P`,
//!   `create P` (create-new), `open-create P`, `open-trunc P`, `open-write P`, `truncate P
//!   N` (set-size through a descriptor opened for writing), `set-size-ro P N` (through one
//!   opened for reading), `write P TEXT`, `append P TEXT`, `read P`, `readlink P`,
//!   `set-times P` (by path, following symlinks) and `set-times-fd P` (through a descriptor
//!   opened for reading; both set both times to 2001-09-09), `stat P`, `lstat P`, `ls P`,
//!   `find DIR INNER` (the first entry E of DIR, by name, with DIR/E/INNER; later
//!   arguments' `$FOUND` stand for DIR/E) and `flip LINK TARGET MS` (for MS milliseconds,
//!   moves the directory LINK aside, puts a symlink to TARGET in its place and moves it
//!   back, over and over); `echo TEXT...` only prints `ok echo TEXT...` (a marker);
//! - `seq STEP ;; STEP ;; ...`: runs each STEP in order, an operation as `fs` would or a
//!   `spawn` (which returns to the sequence; its CHILD_ARGS end at the next `;;`, so a child
//!   running a `seq` of its own is spawned by the `spawn` mode, not from a `seq`); any other
//!   mode ends the sequence as that mode does. Then waits for `spawn --bg` children and
//!   exits 0;
//! - `ls PATH`: lists a directory, one name a line, directories ending in `/`;
//! - `write PATH TEXT`: writes TEXT to PATH, printing `wrote` or `error: <why>`;
//! - `dirs`: prints the directories the cell holds, one a line: `PATH ro|rw`;
//! - `fd-names`: prints the fd grants the cell holds, one a line: `NAME MODE KIND TARGET`;
//! - `fd-read NAME`: copies the grant to stdout, to its end;
//! - `fd-write NAME TEXT`: writes TEXT to the grant, printing `wrote`;
//! - `fd-read-at NAME OFFSET LEN`, `fd-write-at NAME OFFSET TEXT`, `fd-size NAME`: a file
//!   grant at offsets, printing the bytes read, `wrote N` or the size;
//! - `tree WIDTH MIB`, `args N MIB`, `handles N WIDTH`, `programs N KIB`,
//!   `fifos N FIFO FILE`, `pipe-share`
//!   (with `pipe-share-b` and `flood`): try to exhaust the
//!   node (see `exhaust.rs`);
//! - `ping`: writes `!` to stdout and returns from `main`;
//! - `block`: reads stdin to its end and returns from `main`;
//! - `bench-spawn N [path|bytes]`: times N spawns of `ping` and N spawn-and-waits, printing
//!   one line `bench-spawn main_p50_us=… main_p99_us=… exit_p50_us=… exit_p99_us=…
//!   spawns_per_sec=…` (for `cargo xtask bench`);
//! - `churn N [PAD]`: spawns N distinct tiny preview 1 modules from bytes, one at a time,
//!   waiting for each, and prints `churned N` (see `churn.rs`; for the cache-bound tests);
//! - `idle N`: spawns N children that `block` on their piped stdin, prints `ready N`, and
//!   exits when its own stdin ends (for `cargo xtask bench`);
//! - `rpc-id`: grafts onto the node's membrane over Cap'n Proto ([`ww::rpc`]), prints
//!   `id <peerId>` and `epoch <seq>`;
//! - `rpc-big`: spawns `/usr/lib/child-echo.wasm` through the session's executor, writes it
//!   1 MiB in one `ByteStream.write`, reads the echo to its end, waits, and prints
//!   `rpc-big ok 1048576 exited 0`;
//! - `rpc-many N`: sends N `host.id()` calls before awaiting any, prints `rpc-many ok N`;
//! - `rpc-export`: exports a membrane whose sessions' Host answers `id()` with
//!   `exported by testbed` (and forwards the node's executor and status), prints
//!   `exported`, then waits for the epoch to change while serving it, and prints
//!   `epoch advanced to N`;
//! - `rpc-exit-mid-call CODE`: exits with CODE while a `status.changed` call is in flight;
//! - `rpc-advance`: advances the membrane's epoch, prints `advanced to N`;
//! - `ipfs-cat PATH`: prints the IPFS file at PATH ([`ww::ipfs::cat`]);
//! - `ipfs-add TEXT`: adds TEXT to IPFS, prints its `/ipfs/<cid>`;
//! - `rpc-bench N`: times N sequential `host.id()` calls and N at once, printing
//!   `rpc-bench rtt_p50_us=… rtt_p99_us=… pipelined_per_sec=…` (for `cargo xtask bench`);
//! - `rpc-attenuated-bench N`: `rpc-bench` on the session's host, then on that host
//!   attenuated to `id` alone, printing the `rpc-bench …` line and then
//!   `rpc-bench-attenuated rtt_p50_us=… rtt_p99_us=… pipelined_per_sec=…`;
//! - `rpc-membrane [EXPIRES_MS]`: exports a Counter (`counter`) and narrowed copies of it
//!   (`reader`: `get` only; `limited`: 5 calls a second; `expiring`: for EXPIRES_MS, default
//!   1500; `revocable`, with `revoker`), and to socket callers only pid0's executor
//!   (`admin`); prints `graft: socket|peer <ID>|cell|unknown` for each graft and
//!   `membrane: serving` once in effect;
//! - `net-id`: prints the node's peer id ([`ww::net::id`]);
//! - `net-addrs`: prints each address the node listens on, one a line;
//! - `net-call PEER [ADDR...]`: connects to PEER ([`ww::net::connect`]), grafts, calls
//!   `increment(1)` on its export `counter` and prints `counter = V`;
//! - `net-denied`: prints `denied: <why>` when [`ww::net::id`] fails, `allowed` when it
//!   answers, and exits 0 either way (`spawn [--network] -- net-denied` shows whether a
//!   child got the network).
//!
//! Usage errors and failed `ls`/`write`/`fd-*`/`idle`/`rpc-*`/`ipfs-*`/`net-*` exit 1, the
//! failures printed on stdout as `error: <why>` (`fs` and `seq` print theirs and go on);
//! an unknown mode exits 2.

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use ww::fd::{Fd, Mode};
use ww::process::{Child, Command, DirGrant, FdPass, Stdio};

mod churn;
mod exhaust;
mod fsops;
mod net;
mod rpc;

/// The program children run unless `--path` says otherwise: the testbed itself.
const SELF: &str = "/bin/main.wasm";

thread_local! {
    /// Children spawned with `spawn --bg`, waited for when the mode ends.
    static BACKGROUND: RefCell<Vec<Child>> = const { RefCell::new(Vec::new()) };
}

/// Usage, printed for an unknown mode.
const USAGE: &str = "\
usage: testbed MODE [ARGS...]
  spin | hog | trap | exit N | storm | kill | ls PATH | write PATH TEXT | dirs
  spawn [--dir PATH[:AT]] [--ro-dir PATH[:AT]] [--fd NAME[:CHILD_NAME][:r|w|rw]]
        [--timeout-ms N] [--max-memory N] [--fuel N] [--max-children N] [--executor]
        [--ipfs] [--network] [--path P] [--bytes] [--bg] [--while-bg] -- CHILD_ARGS...
  fs OP ARGS...   (OP: mkdir P | rename A B | symlink TARGET LINK | link A B | unlink P
        | rmdir P | create P | open-create P | open-trunc P | open-write P | truncate P N
        | set-size-ro P N | write P TEXT | append P TEXT | read P | readlink P
        | set-times P | set-times-fd P | stat P | lstat P | ls P | find DIR INNER
        | flip LINK TARGET MS | echo TEXT...)
  seq STEP [;; STEP]...   (STEP: OP ARGS... | spawn ... | any mode, which ends the sequence)
  fd-names | fd-read NAME | fd-write NAME TEXT | fd-size NAME
  fd-read-at NAME OFFSET LEN | fd-write-at NAME OFFSET TEXT
  ping | block | tree WIDTH MIB | args N MIB | bench-spawn N [path|bytes] | idle N
  churn N [PAD]
  rpc-id | rpc-big | rpc-many N | rpc-export | rpc-exit-mid-call CODE | rpc-advance
  rpc-bench N | rpc-attenuated-bench N | rpc-membrane [EXPIRES_MS]
  ipfs-cat PATH | ipfs-add TEXT
  net-id | net-addrs | net-call PEER [ADDR...] | net-denied
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mode(&args);
}

/// Runs the mode `args` names; most end the cell, the rest return.
fn mode(args: &[&str]) {
    match args {
        ["spin"] => spin(),
        ["hog"] => hog(),
        ["trap"] => trap(),
        ["exit", code] => match code.parse::<u8>() {
            Ok(code) => ww::exit(code),
            Err(_) => fail(&format!("exit: {code}: not a status in 0..=255")),
        },
        ["storm"] => storm(),
        ["kill"] => kill(),
        ["spawn", options @ ..] => {
            spawn(options);
            wait_background();
            ww::exit(0);
        }
        ["fs", op @ ..] if !op.is_empty() => {
            fsops::run(op);
            ww::exit(0);
        }
        ["seq", steps @ ..] => seq(steps),
        ["ls", path] => ls(path),
        ["write", path, text] => write(path, text),
        ["dirs"] => dirs(),
        ["fd-names"] => fd_names(),
        ["fd-read", name] => fd_read(name),
        ["fd-write", name, text] => fd_write(name, text),
        ["fd-read-at", name, offset, len] => fd_read_at(name, offset, len),
        ["fd-write-at", name, offset, text] => fd_write_at(name, offset, text),
        ["fd-size", name] => fd_size(name),
        ["ping"] => ping(),
        ["block", ..] => block(),
        ["tree", width, mib] => exhaust::tree(width, mib),
        ["args", n, mib] => exhaust::args(n, mib),
        ["handles", n, width] => exhaust::handles(n, width),
        ["programs", n, kib] => exhaust::programs(n, kib),
        ["fifos", n, fifo, file] => exhaust::fifos(n, fifo, file),
        ["pipe-share"] => exhaust::pipe_share(),
        ["pipe-share-b"] => exhaust::pipe_share_b(),
        ["flood"] => exhaust::flood(),
        ["bench-spawn", n] => bench_spawn(n, None),
        ["bench-spawn", n, source] => bench_spawn(n, Some(source)),
        ["idle", n] => idle(n),
        ["churn", n] => churn::churn(n, None),
        ["churn", n, pad] => churn::churn(n, Some(pad)),
        ["rpc-id"] => rpc::id(),
        ["rpc-big"] => rpc::big(),
        ["rpc-many", n] => rpc::many(n),
        ["rpc-export"] => rpc::export(),
        ["rpc-exit-mid-call", code] => rpc::exit_mid_call(code),
        ["rpc-advance"] => rpc::advance(),
        ["rpc-bench", n] => rpc::bench(n),
        ["rpc-attenuated-bench", n] => rpc::attenuated_bench(n),
        ["rpc-membrane"] => rpc::membrane(None),
        ["rpc-membrane", expires_ms] => rpc::membrane(Some(expires_ms)),
        ["ipfs-cat", path] => match ww::ipfs::cat(path) {
            Ok(bytes) => {
                let mut out = io::stdout().lock();
                if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                    error(&format!("ipfs-cat: {e}"));
                }
            }
            Err(e) => error(&format!("ipfs-cat: {e}")),
        },
        ["ipfs-add", text] => match ww::ipfs::add(text.as_bytes()) {
            Ok(path) => say(&path),
            Err(e) => error(&format!("ipfs-add: {e}")),
        },
        ["net-id"] => net::id(),
        ["net-addrs"] => net::addrs(),
        ["net-call", peer, addrs @ ..] => net::call(peer, addrs),
        ["net-denied"] => net::denied(),
        _ => {
            let _ = io::stderr().write_all(USAGE.as_bytes());
            ww::exit(2);
        }
    }
}

/// Prints `testbed: MESSAGE` on stderr and exits 1.
fn fail(message: &str) -> ! {
    let _ = writeln!(io::stderr(), "testbed: {message}");
    ww::exit(1);
}

/// Prints `error: MESSAGE` on stdout and exits 1.
fn error(message: &dyn std::fmt::Display) -> ! {
    say(&format!("error: {message}"));
    ww::exit(1);
}

/// Prints one line on stdout, flushed.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // Nobody hears us; the exit status still tells.
        ww::exit(1);
    }
}

/// The executor, or exit 1 saying there is none.
fn executor() -> ww::Executor {
    ww::executor().unwrap_or_else(|| fail("this cell holds no executor"))
}

/// `spin`: a busy loop that never calls the host.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// `trap`: executes the `unreachable` instruction.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    // Built natively only for unit tests, which never get here.
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// `hog`: grows memory by 1 MiB at a time, touching every page so it is really used.
fn hog() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
}

/// `storm`: spawns spinning children until the host refuses one.
fn storm() -> ! {
    let executor = executor();
    let mut children = Vec::new();
    let refusal = loop {
        let spawned = Command::path(SELF)
            .arg("spin")
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => break e,
        }
    };
    say(&format!("spawned {}; refused: {refusal}", children.len()));
    for child in &children {
        child.kill();
    }
    ww::exit(0);
}

/// `kill`: spawns a spinning child, kills it and reports its status.
fn kill() -> ! {
    let executor = executor();
    let child = match Command::path(SELF).arg("spin").spawn(&executor) {
        Ok(child) => child,
        Err(e) => fail(&format!("spawn: {e}")),
    };
    if let Some(status) = child.try_wait() {
        fail(&format!("the spinning child already ended: {status}"));
    }
    child.kill();
    // Through the pollable rather than `wait`, so that both ways of waiting get exercised.
    child.pollable().block();
    match child.try_wait() {
        Some(status) => say(&format!("child: {status}")),
        None => fail("the child still runs after its pollable was ready"),
    }
    ww::exit(0);
}

/// `seq STEP ;; STEP ;; ...`
fn seq(steps: &[&str]) -> ! {
    for step in steps.split(|&arg| arg == ";;") {
        match step {
            [] => {}
            [op, ..] if fsops::is_op(op) => fsops::run(step),
            ["spawn", options @ ..] => spawn(options),
            _ => mode(step),
        }
    }
    wait_background();
    ww::exit(0);
}

/// The most times `spawn --while-bg` spawns.
const MAX_REPEATS: u32 = 10_000;

/// Whether a `spawn --bg` child still runs.
fn background_running() -> bool {
    BACKGROUND.with(|bg| bg.borrow().iter().any(|child| child.try_wait().is_none()))
}

/// Waits for every `spawn --bg` child, printing `child: <status>` for each.
fn wait_background() {
    let children = BACKGROUND.with(|bg| std::mem::take(&mut *bg.borrow_mut()));
    for mut child in children {
        say(&format!("child: {}", child.wait()));
    }
}

/// `spawn [OPTIONS] -- CHILD_ARGS...`: prints `child: <status>` (or nothing with `--bg`)
/// or `refused: <why>`, and returns.
fn spawn(args: &[&str]) {
    // The program comes first in a `Command`, so find it before the other options.
    let options = || args.iter().take_while(|&&arg| arg != "--");
    let path = options()
        .skip_while(|&&arg| arg != "--path")
        .nth(1)
        .copied()
        .unwrap_or(SELF);
    let background = options().any(|&arg| arg == "--bg");
    let repeat = options().any(|&arg| arg == "--while-bg");
    let mut command = if options().any(|&arg| arg == "--bytes") {
        match fs::read(path) {
            Ok(bytes) => Command::bytes(bytes),
            Err(e) => {
                say(&format!("error: reading {path}: {e}"));
                return;
            }
        }
    } else {
        Command::path(path)
    };
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        let mut value = || -> &str {
            args.next()
                .unwrap_or_else(|| fail(&format!("spawn: {arg} needs a value")))
        };
        match arg {
            "--dir" | "--ro-dir" => {
                let spec = value();
                let (from, at) = match spec.split_once(':') {
                    Some((from, at)) => (from, Some(at.to_owned())),
                    None => (spec, None),
                };
                command.dir_grant(DirGrant {
                    path: from.to_owned(),
                    at,
                    read_only: arg == "--ro-dir",
                });
            }
            "--fd" => {
                command.fd_with(fd_pass(value()));
            }
            "--timeout-ms" => {
                command.timeout(Duration::from_millis(number(arg, value())));
            }
            "--max-memory" => {
                command.max_memory(number(arg, value()));
            }
            "--fuel" => {
                command.fuel(number(arg, value()));
            }
            "--max-children" => {
                let n = number(arg, value());
                command.max_children(u32::try_from(n).unwrap_or(u32::MAX));
            }
            "--executor" => {
                command.executor(true);
            }
            "--ipfs" => {
                command.ipfs(true);
            }
            "--network" => {
                command.network(true);
            }
            "--path" => {
                value(); // already taken
            }
            "--bytes" | "--bg" | "--while-bg" => {} // already taken
            "--" => {
                command.args(args.by_ref());
                break;
            }
            other if other.starts_with("--") => fail(&format!("spawn: unknown option {other}")),
            other => {
                command.arg(other).args(args.by_ref());
                break;
            }
        }
    }
    if repeat {
        let executor = executor();
        let mut runs = 0;
        while runs < MAX_REPEATS && background_running() {
            match command.spawn(&executor) {
                Ok(mut child) => say(&format!("child: {}", child.wait())),
                Err(e) => say(&format!("refused: {e}")),
            }
            runs += 1;
        }
        say(&format!("repeated {runs}"));
        return;
    }
    match command.spawn(&executor()) {
        Ok(child) if background => BACKGROUND.with(|bg| bg.borrow_mut().push(child)),
        Ok(mut child) => say(&format!("child: {}", child.wait())),
        Err(e) => say(&format!("refused: {e}")),
    }
}

/// Parses `NAME[:CHILD_NAME][:MODE]` (`db`, `db:store`, `db::r`, `db:store:r`), or exits 1.
fn fd_pass(spec: &str) -> FdPass {
    let mut parts = spec.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let child_name = parts.next().filter(|s| !s.is_empty());
    let mode = parts.next().map(|mode| {
        mode.parse::<Mode>()
            .unwrap_or_else(|e| fail(&format!("spawn: --fd {spec}: {e}")))
    });
    FdPass {
        child_name: child_name.map(str::to_owned),
        mode,
        ..FdPass::new(name)
    }
}

/// Parses the value of `option` as a number, or exits 1.
fn number(option: &str, value: &str) -> u64 {
    value
        .parse()
        .unwrap_or_else(|_| fail(&format!("spawn: {option}: {value}: not a number")))
}

/// `ls PATH`
fn ls(path: &str) -> ! {
    let entries = fs::read_dir(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail(&format!("{path}: {e}")));
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        say(&name);
    }
    ww::exit(0);
}

/// `write PATH TEXT`
fn write(path: &str, text: &str) -> ! {
    match fs::write(path, text) {
        Ok(()) => {
            say("wrote");
            ww::exit(0);
        }
        Err(e) => {
            say(&format!("error: {e}"));
            ww::exit(1);
        }
    }
}

/// `dirs`
fn dirs() -> ! {
    for dir in ww::directories() {
        let mode = if dir.read_only { "ro" } else { "rw" };
        say(&format!("{} {mode}", dir.guest_path));
    }
    ww::exit(0);
}

/// The grant `name`, or `error: no fd NAME` and exit 1.
fn grant(name: &str) -> Fd {
    ww::fd(name).unwrap_or_else(|| error(&format_args!("no fd {name}")))
}

/// Parses `value` as a number, or `error: …` and exit 1.
fn parse<T: std::str::FromStr>(what: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| error(&format_args!("{what}: {value}: not a number")))
}

/// `fd-names`
fn fd_names() -> ! {
    for name in ww::fd::names() {
        // A name listed a moment ago is still held: grants never go away while a cell runs.
        let fd = grant(&name);
        say(&format!(
            "{name} {} {} {}",
            fd.mode(),
            fd.kind(),
            fd.target()
        ));
    }
    ww::exit(0);
}

/// `fd-read NAME`
fn fd_read(name: &str) -> ! {
    let mut reader = grant(name).reader().unwrap_or_else(|e| error(&e));
    let mut bytes = Vec::new();
    if let Err(e) = reader.read_to_end(&mut bytes) {
        error(&e);
    }
    let mut out = io::stdout().lock();
    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        ww::exit(1);
    }
    ww::exit(0);
}

/// `fd-write NAME TEXT`
fn fd_write(name: &str, text: &str) -> ! {
    let mut writer = grant(name).writer().unwrap_or_else(|e| error(&e));
    if let Err(e) = writer
        .write_all(text.as_bytes())
        .and_then(|()| writer.flush())
    {
        error(&e);
    }
    say("wrote");
    ww::exit(0);
}

/// `fd-read-at NAME OFFSET LEN`
fn fd_read_at(name: &str, offset: &str, len: &str) -> ! {
    let fd = grant(name);
    let (offset, len) = (parse("offset", offset), parse("length", len));
    let bytes = fd.read_at(len, offset).unwrap_or_else(|e| error(&e));
    say(&String::from_utf8_lossy(&bytes));
    ww::exit(0);
}

/// `fd-write-at NAME OFFSET TEXT`
fn fd_write_at(name: &str, offset: &str, text: &str) -> ! {
    let fd = grant(name);
    let offset = parse("offset", offset);
    let n = fd
        .write_at(text.as_bytes(), offset)
        .unwrap_or_else(|e| error(&e));
    say(&format!("wrote {n}"));
    ww::exit(0);
}

/// `fd-size NAME`
fn fd_size(name: &str) -> ! {
    let size = grant(name).size().unwrap_or_else(|e| error(&e));
    say(&size.to_string());
    ww::exit(0);
}

/// `ping`: one byte for a parent timing how soon `main` runs, then an ordinary return.
fn ping() {
    let mut out = io::stdout().lock();
    let _ = out.write_all(b"!").and_then(|()| out.flush());
}

/// `block`: an idle child, waiting for its stdin to end.
fn block() {
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
}

/// `bench-spawn N [path|bytes]`
///
/// First N spawns of `ping` with stdout piped, each timed from the request to the byte read
/// (the child's `main` ran) and to the exit observed by `wait`; then N spawn-and-waits with
/// no stdio, timed as a whole. A warm-up spawn comes first, so that neither counts the
/// host's first compile or cache load of the program.
///
/// The program is `/bin/main.wasm` by path by default; `bytes` reads it once and sends its
/// bytes with every spawn instead. The path is both the realistic way (cells spawn
/// programs from their images) and the fast one: the host reads and hashes the file from
/// the page cache, where bytes must first be copied out of this cell's memory on every
/// spawn (a debug `ww`, 200 spawns: p50 to `main` ~350 µs by path, ~1,370 µs as bytes).
fn bench_spawn(n: &str, source: Option<&str>) -> ! {
    let n: usize = parse("count", n);
    if n == 0 {
        error(&"bench-spawn: N must be at least 1");
    }
    let executor = executor();
    let program = |args: &[&str]| -> Command {
        let mut command = match source {
            None | Some("path") => Command::path(SELF),
            Some("bytes") => match fs::read(SELF) {
                Ok(bytes) => Command::bytes(bytes),
                Err(e) => error(&format_args!("{SELF}: {e}")),
            },
            Some(other) => error(&format_args!("bench-spawn: {other}: not path or bytes")),
        };
        command.name("ping").args(args.iter().copied());
        command.stdin(Stdio::Null).stderr(Stdio::Null);
        command
    };
    let mut timed = program(&["ping"]);
    timed.stdout(Stdio::Pipe);
    let mut quiet = program(&["ping"]);
    quiet.stdout(Stdio::Null);

    // One spawn: the time to the child's byte and to its exit, in microseconds.
    let once = || -> (f64, f64) {
        let t0 = Instant::now();
        let mut child = timed.spawn(&executor).unwrap_or_else(|e| error(&e));
        let mut stdout = child.take_stdout().expect("stdout was piped");
        let mut byte = [0u8; 1];
        if let Err(e) = stdout.read_exact(&mut byte) {
            error(&format_args!("reading the child's byte: {e}"));
        }
        let t1 = t0.elapsed();
        let status = child.wait();
        let t2 = t0.elapsed();
        if !status.success() {
            error(&format_args!("ping: {status}"));
        }
        (micros(t1), micros(t2))
    };
    once();
    let (mut main, mut exit): (Vec<f64>, Vec<f64>) = (0..n).map(|_| once()).unzip();

    let start = Instant::now();
    for _ in 0..n {
        let status = quiet.spawn(&executor).unwrap_or_else(|e| error(&e)).wait();
        if !status.success() {
            error(&format_args!("ping: {status}"));
        }
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();

    say(&format!(
        "bench-spawn main_p50_us={:.1} main_p99_us={:.1} exit_p50_us={:.1} exit_p99_us={:.1} \
         spawns_per_sec={per_sec:.1}",
        percentile(&mut main, 50),
        percentile(&mut main, 99),
        percentile(&mut exit, 50),
        percentile(&mut exit, 99),
    ));
    ww::exit(0);
}

/// A duration in microseconds.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `p`th percentile of `samples` (nearest rank); `samples` is not empty.
fn percentile(samples: &mut [f64], p: usize) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples[rank - 1]
}

/// `idle N`
fn idle(n: &str) -> ! {
    let n: usize = parse("count", n);
    let executor = executor();
    let mut command = Command::path(SELF);
    command
        .name("block")
        .arg("block")
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Null)
        .stderr(Stdio::Null);
    // Each child with the write end of its stdin, kept so that it blocks until we end.
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let mut child = command.spawn(&executor).unwrap_or_else(|e| error(&e));
        let stdin = child.take_stdin();
        children.push((child, stdin));
    }
    say(&format!("ready {n}"));
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    // Ending the cell ends the children.
    ww::exit(0);
}
