//! Child cells: spawning, supervising and limiting them.
//!
//! A cell that holds an executor (pid0 always does; a child only when its parent passes one
//! on) can start children, much as [`std::process`] starts processes:
//!
//! ```no_run
//! use std::io::{Read as _, Write as _};
//! use ww::process::{Command, Stdio};
//!
//! let executor = ww::executor().expect("this cell holds no executor");
//! let mut child = Command::path("/usr/lib/child-echo.wasm")
//!     .stdin(Stdio::Pipe)
//!     .stdout(Stdio::Pipe)
//!     .spawn(&executor)?;
//! let mut stdin = child.take_stdin().expect("stdin was piped");
//! stdin.write_all(b"hello")?;
//! drop(stdin); // the child sees end of file
//! let mut echoed = String::new();
//! child.take_stdout().expect("stdout was piped").read_to_string(&mut echoed)?;
//! println!("{echoed} ({})", child.wait());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Unlike a Unix process, a child holds nothing unless the spawner passes it on:
//!
//! - **Environment**: only the variables set with [`Command::env`]; the spawner's own are
//!   not inherited.
//! - **Directories**: only those granted with [`Command::dir`] and its variants, each one a
//!   directory the spawner holds (see [`crate::directories`]), optionally narrowed to
//!   read-only. Not even the spawner's image root is passed implicitly: grant `/` to share
//!   it.
//! - **File descriptors**: only the grants passed with [`Command::fd`] and its variants,
//!   each one the spawner holds (see [`crate::fd::names`]), optionally under another name
//!   or narrowed to a mode that does less.
//! - **Executor**: only with [`Command::executor`]`(true)`.
//! - **IPFS** ([`mod@crate::ipfs`]): only with [`Command::ipfs`]`(true)`, and only when the
//!   spawner holds it.
//! - **Network** ([`mod@crate::net`]): only with [`Command::network`]`(true)`, and only when
//!   the spawner holds it.
//! - **Limits** ([`Command::max_memory`], [`Command::timeout`], [`Command::fuel`],
//!   [`Command::max_children`]): unset ones are the spawner's own; set ones may only be
//!   tighter.
//!
//! The host enforces all of this: a request for more than the spawner holds is refused
//! with [`SpawnError::NotPermitted`]. A trap, kill or exceeded limit ends only the child;
//! the spawner sees it as an [`ExitStatus`]. Children end when their spawner ends. Dropping
//! a [`Child`] does not end it.

use std::fmt;
use std::time::Duration;

use wasip2::io::poll::Pollable;

use crate::bindings::ww::host::executor as raw;
use crate::fd::Mode;
use crate::io::{StreamReader, StreamWriter};

/// The power to start child cells, as granted to this cell.
///
/// Get it with [`executor`]; use it with [`Command::spawn`]. Cloning is not possible;
/// borrow it for every spawn.
pub struct Executor {
    raw: raw::Executor,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

/// The executor this cell was granted, or `None` when it holds none.
///
/// pid0 always holds one; a child holds one only when its spawner asked for it with
/// [`Command::executor`]. Each call returns a new handle on the same power.
pub fn executor() -> Option<Executor> {
    raw::granted().map(|raw| Executor { raw })
}

/// What a child runs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Program {
    /// A binary (component or WASI preview 1 module) at this path in the spawner's own
    /// filesystem, e.g. `/usr/lib/tool.wasm`.
    Path(String),
    /// A component or preview 1 module, as bytes. The host caps their size
    /// ([`SpawnError::TooLarge`]).
    Bytes(Vec<u8>),
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Path(path) => f.debug_tuple("Path").field(path).finish(),
            // The bytes themselves are rarely worth printing.
            Program::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

/// Where one of a child's standard streams goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Stdio {
    /// The spawner's own stream, shared with the child (the default).
    #[default]
    Inherit,
    /// A pipe whose other end the spawner takes from the [`Child`]
    /// ([`Child::take_stdin`], [`Child::take_stdout`], [`Child::take_stderr`]).
    Pipe,
    /// Nothing: reads see end of file, writes are discarded.
    Null,
}

impl From<Stdio> for raw::Stdio {
    fn from(stdio: Stdio) -> raw::Stdio {
        match stdio {
            Stdio::Inherit => raw::Stdio::Inherit,
            Stdio::Pipe => raw::Stdio::Pipe,
            Stdio::Null => raw::Stdio::Null,
        }
    }
}

/// A directory passed to a child.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirGrant {
    /// A directory the spawner holds, by the path the spawner sees it at (e.g. `/data`).
    pub path: String,
    /// Where the child sees it; `None` for the same path.
    pub at: Option<String>,
    /// Give it read-only. A directory the spawner holds read-only stays read-only either
    /// way.
    pub read_only: bool,
}

impl DirGrant {
    /// The spawner's directory at `path`, at the same path in the child, with the
    /// spawner's own access.
    pub fn new(path: impl Into<String>) -> DirGrant {
        DirGrant {
            path: path.into(),
            at: None,
            read_only: false,
        }
    }
}

/// A file descriptor grant passed to a child.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FdPass {
    /// A grant the spawner holds, by name (see [`crate::fd::names`]).
    pub name: String,
    /// The name the child holds it under; `None` for the same name.
    pub child_name: Option<String>,
    /// Narrow its mode (a grant that reads and writes passed on as [`Mode::Read`], say);
    /// `None` for the spawner's own mode. A wider mode than the spawner's is refused.
    pub mode: Option<Mode>,
}

impl FdPass {
    /// The spawner's grant `name`, under the same name and with the same mode in the child.
    pub fn new(name: impl Into<String>) -> FdPass {
        FdPass {
            name: name.into(),
            child_name: None,
            mode: None,
        }
    }
}

/// Which limit ended a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// It tried to grow its memory past its cap.
    Memory,
    /// It ran past its deadline.
    Time,
    /// It ran out of fuel.
    Fuel,
}

impl Limit {
    /// The limit's name: `memory`, `time` or `fuel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Time => "time",
            Limit::Fuel => "fuel",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<raw::Limit> for Limit {
    fn from(limit: raw::Limit) -> Limit {
        match limit {
            raw::Limit::Memory => Limit::Memory,
            raw::Limit::Time => Limit::Time,
            raw::Limit::Fuel => Limit::Fuel,
        }
    }
}

/// How a child ended.
///
/// Displayed as `exited 3`, `trapped: <message>`, `killed` or `limit exceeded: memory`
/// (`time`, `fuel`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It returned from `main` or exited with this code.
    Exited(u8),
    /// It trapped (a panic, `unreachable`, …); the message says how.
    Trapped(String),
    /// Its spawner (or the host) killed it.
    Killed,
    /// A limit ended it.
    LimitExceeded(Limit),
}

impl ExitStatus {
    /// The exit code, when the child exited by itself.
    pub fn code(&self) -> Option<u8> {
        match self {
            ExitStatus::Exited(code) => Some(*code),
            _ => None,
        }
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited {code}"),
            ExitStatus::Trapped(message) => write!(f, "trapped: {message}"),
            ExitStatus::Killed => f.write_str("killed"),
            ExitStatus::LimitExceeded(limit) => write!(f, "limit exceeded: {limit}"),
        }
    }
}

impl From<raw::ExitStatus> for ExitStatus {
    fn from(status: raw::ExitStatus) -> ExitStatus {
        match status {
            raw::ExitStatus::Exited(code) => ExitStatus::Exited(code),
            raw::ExitStatus::Trapped(message) => ExitStatus::Trapped(message),
            raw::ExitStatus::Killed => ExitStatus::Killed,
            raw::ExitStatus::LimitExceeded(limit) => ExitStatus::LimitExceeded(limit.into()),
        }
    }
}

/// Why the host refused a spawn.
///
/// Displayed as `not found: …`, `not permitted: …`, `invalid: …`, `too large: N bytes` or
/// `too many children: N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpawnError {
    /// The program path does not exist in the spawner's filesystem.
    NotFound(String),
    /// The spawner asked for something it does not hold (an executor, a directory, a file
    /// descriptor or a wider mode of one, IPFS, the network), or for looser limits than its
    /// own.
    NotPermitted(String),
    /// The program is not a runnable component or module, or an option is malformed.
    Invalid(String),
    /// The program is larger than the host's cap; its size in bytes.
    TooLarge(u64),
    /// The spawner already has this many children alive, its cap.
    TooManyChildren(u32),
    /// The node has no room for the child: one of the bounds all cells share is reached.
    /// Other cells ending makes room; retrying later may succeed.
    NodeExhausted(NodeBound),
}

/// A bound shared by every cell of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeBound {
    /// The memory budget of all cells together (`--node-memory`).
    Memory,
    /// The number of cells alive (`--max-cells`).
    Cells,
    /// How deep spawns nest (`--max-depth`).
    Depth,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotFound(what) => write!(f, "not found: {what}"),
            SpawnError::NotPermitted(why) => write!(f, "not permitted: {why}"),
            SpawnError::Invalid(why) => write!(f, "invalid: {why}"),
            SpawnError::TooLarge(bytes) => write!(f, "too large: {bytes} bytes"),
            SpawnError::TooManyChildren(cap) => write!(f, "too many children: {cap}"),
            SpawnError::NodeExhausted(bound) => {
                let what = match bound {
                    NodeBound::Memory => "memory budget",
                    NodeBound::Cells => "maximum of cells",
                    NodeBound::Depth => "maximum spawn depth",
                };
                write!(f, "node exhausted: its {what} is reached")
            }
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<raw::SpawnError> for SpawnError {
    fn from(error: raw::SpawnError) -> SpawnError {
        match error {
            raw::SpawnError::NotFound(what) => SpawnError::NotFound(what),
            raw::SpawnError::NotPermitted(why) => SpawnError::NotPermitted(why),
            raw::SpawnError::Invalid(why) => SpawnError::Invalid(why),
            raw::SpawnError::TooLarge(bytes) => SpawnError::TooLarge(bytes),
            raw::SpawnError::TooManyChildren(cap) => SpawnError::TooManyChildren(cap),
            raw::SpawnError::NodeExhausted(bound) => SpawnError::NodeExhausted(match bound {
                raw::NodeBound::Memory => NodeBound::Memory,
                raw::NodeBound::Cells => NodeBound::Cells,
                raw::NodeBound::Depth => NodeBound::Depth,
            }),
        }
    }
}

/// A child to start: its program and everything it is given, built up like
/// [`std::process::Command`].
///
/// By default the child gets no arguments besides `argv[0]` (the program's file name
/// without `.wasm`, or `child` for bytes), no environment, the spawner's own stdio, no
/// directories, no file descriptors, no executor, no IPFS, no network and the spawner's own
/// limits.
///
/// ```no_run
/// use std::time::Duration;
/// use ww::process::{Command, Stdio};
///
/// let executor = ww::executor().expect("an executor");
/// let status = Command::path("/usr/lib/tool.wasm")
///     .args(["--verbose", "input.txt"])
///     .env("LANG", "C")
///     .dir_read_only("/data")
///     .fd_as("db", "store")
///     .stdin(Stdio::Null)
///     .timeout(Duration::from_secs(5))
///     .max_memory(64 << 20)
///     .spawn(&executor)?
///     .wait();
/// println!("tool {status}");
/// # Ok::<(), ww::process::SpawnError>(())
/// ```
#[derive(Clone)]
pub struct Command {
    /// Already in the host's form, so that a spawn need not copy a program's bytes.
    program: raw::Program,
    name: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    directories: Vec<DirGrant>,
    fds: Vec<FdPass>,
    executor: bool,
    ipfs: bool,
    network: bool,
    max_memory: Option<u64>,
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    max_children: Option<u32>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Command");
        match &self.program {
            raw::Program::Path(path) => s.field("path", path),
            raw::Program::Bytes(bytes) => {
                s.field("bytes", &format_args!("<{} bytes>", bytes.len()))
            }
        };
        s.field("name", &self.name)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("directories", &self.directories)
            .field("fds", &self.fds)
            .field("executor", &self.executor)
            .field("ipfs", &self.ipfs)
            .field("network", &self.network)
            .field("max_memory", &self.max_memory)
            .field("timeout_ms", &self.timeout_ms)
            .field("fuel", &self.fuel)
            .field("max_children", &self.max_children)
            .finish()
    }
}

impl Command {
    /// A command running `program`, with the defaults described on [`Command`].
    pub fn new(program: Program) -> Command {
        let program = match program {
            Program::Path(path) => raw::Program::Path(path),
            Program::Bytes(bytes) => raw::Program::Bytes(bytes),
        };
        Command {
            program,
            name: None,
            args: Vec::new(),
            env: Vec::new(),
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            directories: Vec::new(),
            fds: Vec::new(),
            executor: false,
            ipfs: false,
            network: false,
            max_memory: None,
            timeout_ms: None,
            fuel: None,
            max_children: None,
        }
    }

    /// A command running the binary at `path` in the spawner's own filesystem.
    pub fn path(path: impl Into<String>) -> Command {
        Command::new(Program::Path(path.into()))
    }

    /// A command running a component or preview 1 module given as bytes.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Command {
        Command::new(Program::Bytes(bytes.into()))
    }

    /// Sets the child's `argv[0]` (and the name the host logs it under).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Command {
        self.name = Some(name.into());
        self
    }

    /// Adds an argument after `argv[0]`.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Command {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments after `argv[0]`, in order.
    pub fn args<I>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the child, replacing an earlier value for `key`.
    /// The child has no other variables than those set here.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Command {
        let (key, value) = (key.into(), value.into());
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.env.push((key, value)),
        }
        self
    }

    /// Sets several environment variables, as [`Command::env`] does for each.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    /// Where the child's stdin comes from.
    pub fn stdin(&mut self, stdio: Stdio) -> &mut Command {
        self.stdin = stdio;
        self
    }

    /// Where the child's stdout goes.
    pub fn stdout(&mut self, stdio: Stdio) -> &mut Command {
        self.stdout = stdio;
        self
    }

    /// Where the child's stderr goes.
    pub fn stderr(&mut self, stdio: Stdio) -> &mut Command {
        self.stderr = stdio;
        self
    }

    /// Passes the spawner's directory at `path` to the child, at the same path and with
    /// the spawner's own access.
    pub fn dir(&mut self, path: impl Into<String>) -> &mut Command {
        self.dir_grant(DirGrant::new(path))
    }

    /// Passes the spawner's directory at `path` to the child, which sees it at `at`.
    pub fn dir_at(&mut self, path: impl Into<String>, at: impl Into<String>) -> &mut Command {
        self.dir_grant(DirGrant {
            at: Some(at.into()),
            ..DirGrant::new(path)
        })
    }

    /// Passes the spawner's directory at `path` to the child read-only, at the same path.
    pub fn dir_read_only(&mut self, path: impl Into<String>) -> &mut Command {
        self.dir_grant(DirGrant {
            read_only: true,
            ..DirGrant::new(path)
        })
    }

    /// Passes a directory to the child as `grant` says.
    pub fn dir_grant(&mut self, grant: DirGrant) -> &mut Command {
        self.directories.push(grant);
        self
    }

    /// Passes the spawner's file descriptor grant `name` to the child, under the same name
    /// and with the same mode.
    pub fn fd(&mut self, name: impl Into<String>) -> &mut Command {
        self.fd_with(FdPass::new(name))
    }

    /// Passes the spawner's grant `name` to the child, which holds it as `child_name`.
    pub fn fd_as(
        &mut self,
        name: impl Into<String>,
        child_name: impl Into<String>,
    ) -> &mut Command {
        self.fd_with(FdPass {
            child_name: Some(child_name.into()),
            ..FdPass::new(name)
        })
    }

    /// Passes a grant to the child as `pass` says, e.g. narrowed to read-only:
    ///
    /// ```no_run
    /// use ww::fd::Mode;
    /// use ww::process::{Command, FdPass};
    ///
    /// let executor = ww::executor().expect("an executor");
    /// Command::path("/usr/lib/reader.wasm")
    ///     .fd_with(FdPass { mode: Some(Mode::Read), ..FdPass::new("db") })
    ///     .spawn(&executor)?;
    /// # Ok::<(), ww::process::SpawnError>(())
    /// ```
    pub fn fd_with(&mut self, pass: FdPass) -> &mut Command {
        self.fds.push(pass);
        self
    }

    /// Whether the child gets an executor of its own (bound by the child's limits).
    /// Default: no.
    pub fn executor(&mut self, executor: bool) -> &mut Command {
        self.executor = executor;
        self
    }

    /// Whether the child gets this cell's IPFS capability ([`mod@crate::ipfs`]). The spawn
    /// is refused with [`SpawnError::NotPermitted`] when this cell holds none. Default: no.
    pub fn ipfs(&mut self, ipfs: bool) -> &mut Command {
        self.ipfs = ipfs;
        self
    }

    /// Whether the child gets this cell's network capability ([`mod@crate::net`]): the
    /// node's identity, peers and connections to them. The spawn is refused with
    /// [`SpawnError::NotPermitted`] when this cell holds none. Default: no.
    pub fn network(&mut self, network: bool) -> &mut Command {
        self.network = network;
        self
    }

    /// Caps the child's linear memory, in bytes over all its memories.
    pub fn max_memory(&mut self, bytes: u64) -> &mut Command {
        self.max_memory = Some(bytes);
        self
    }

    /// Ends the child when it has run this long, counted from the spawn. Passed to the
    /// host in whole milliseconds, rounded up.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        self.timeout_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }

    /// Gives the child this much fuel (about one unit per wasm instruction). Only possible
    /// when `ww` meters fuel (`ww run --fuel`); otherwise the spawn is refused.
    pub fn fuel(&mut self, fuel: u64) -> &mut Command {
        self.fuel = Some(fuel);
        self
    }

    /// Caps how many children the child may have alive at once.
    pub fn max_children(&mut self, max: u32) -> &mut Command {
        self.max_children = Some(max);
        self
    }

    /// Starts the child with `executor`.
    ///
    /// The host checks everything asked for against what this cell holds; a refusal is a
    /// [`SpawnError`] and nothing is started.
    pub fn spawn(&self, executor: &Executor) -> Result<Child, SpawnError> {
        let options = raw::SpawnOptions {
            name: self.name.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            stdin: self.stdin.into(),
            stdout: self.stdout.into(),
            stderr: self.stderr.into(),
            directories: self
                .directories
                .iter()
                .map(|d| raw::DirectoryGrant {
                    path: d.path.clone(),
                    at: d.at.clone(),
                    read_only: d.read_only,
                })
                .collect(),
            fds: self
                .fds
                .iter()
                .map(|p| raw::FdPass {
                    name: p.name.clone(),
                    child_name: p.child_name.clone(),
                    mode: p.mode.map(Into::into),
                })
                .collect(),
            executor: self.executor,
            ipfs: self.ipfs,
            network: self.network,
            limits: raw::Limits {
                max_memory: self.max_memory,
                timeout_ms: self.timeout_ms,
                fuel: self.fuel,
                max_children: self.max_children,
            },
        };
        let process = executor.raw.spawn(&self.program, &options)?;
        let id = process.id();
        Ok(Child { raw: process, id })
    }
}

/// A running or finished child.
///
/// Dropping it does not end the child: it runs on, and ends at the latest when this cell
/// does. Use [`Child::kill`] to end it.
pub struct Child {
    raw: raw::Process,
    id: u32,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child").field("id", &self.id).finish()
    }
}

impl Child {
    /// A number naming the child, unique within this `ww` process.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The write end of the child's stdin, when it was spawned with [`Stdio::Pipe`]; `None`
    /// otherwise or once taken. Dropping it closes the pipe: the child reads end of file.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.raw.take_stdin().map(StreamWriter::new)
    }

    /// The read end of the child's stdout, when it was spawned with [`Stdio::Pipe`]; `None`
    /// otherwise or once taken.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.raw.take_stdout().map(StreamReader::new)
    }

    /// The read end of the child's stderr, when it was spawned with [`Stdio::Pipe`]; `None`
    /// otherwise or once taken.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.raw.take_stderr().map(StreamReader::new)
    }

    /// How the child ended, or `None` while it runs. Never blocks.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.raw.try_wait().map(Into::into)
    }

    /// Blocks until the child ends, and tells how it ended. Once it has ended, returns the
    /// same status again at once.
    ///
    /// As [`std::process::Child::wait`] does, a piped stdin that was not taken is closed
    /// first, so that a child reading it to the end cannot wait for this cell forever.
    pub fn wait(&mut self) -> ExitStatus {
        drop(self.raw.take_stdin());
        self.raw.wait().into()
    }

    /// Ends the child now; its status becomes [`ExitStatus::Killed`]. Does nothing when it
    /// already ended.
    pub fn kill(&self) {
        self.raw.kill();
    }

    /// A pollable that is ready once the child has ended, to wait for it together with
    /// other events through [`wasip2::io::poll::poll`].
    pub fn pollable(&self) -> Pollable {
        self.raw.subscribe()
    }
}

/// The write end of a child's piped stdin; see [`Child::take_stdin`].
///
/// A [`StreamWriter`]: writes block until the pipe has room and return once the bytes are
/// in it, as with a Unix pipe; a pipe whose child has ended fails them with
/// [`io::ErrorKind::BrokenPipe`](std::io::ErrorKind::BrokenPipe). Dropping it closes the
/// pipe: the child reads end of file.
pub type ChildStdin = StreamWriter;

/// The read end of a child's piped stdout or stderr; see [`Child::take_stdout`] and
/// [`Child::take_stderr`].
///
/// A [`StreamReader`]: reads block until the child writes; they return 0 (end of file) once
/// every holder of the pipe's write end (the child, and any child it passed its stream on
/// to) has ended.
pub type ChildStdout = StreamReader;

/// The read end of a child's piped stderr: the same type as [`ChildStdout`].
pub type ChildStderr = StreamReader;
