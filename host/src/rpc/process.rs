//! Executor, Process and ByteStream over Cap'n Proto: spawning a cell's children and
//! talking to them.
//!
//! A spawn is checked by `executor::host::spawn_child`, the same function `ww:host/executor`
//! uses, so a child spawned over Cap'n Proto gets exactly what one spawned from WebAssembly
//! would. Over Cap'n Proto a child gets no directories, no fd grants and no executor (the
//! schema has no way to ask for them).

use capnp::capability::Rc;
use tokio::sync::Mutex;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};

use super::node::NodeState;
use super::schema::host_capnp::{
    Limit, Stdio as CapStdio, byte_stream, executor, exit_status, process,
};
use crate::bindings::ww::host::executor as wit;
use crate::executor::host::{load_program, precheck, spawn_child};
use crate::executor::limits::LimitExceeded;
use crate::executor::process::{Exit, Process};
use crate::executor::stdio::ParentEnds;

/// The most one `ByteStream.read` returns.
pub const MAX_READ: usize = 64 * 1024;

/// The Executor capability of one session: spawns children of the node's cell.
pub(crate) struct ExecutorServer {
    node: Rc<NodeState>,
}

impl ExecutorServer {
    pub(crate) fn new(node: Rc<NodeState>) -> ExecutorServer {
        ExecutorServer { node }
    }
}

impl executor::Server for ExecutorServer {
    async fn spawn(
        self: Rc<Self>,
        params: executor::SpawnParams,
        mut results: executor::SpawnResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let program = program_of(params.get_program()?)?;
        let options = options_of(params.get_options()?)?;
        let spawner = self
            .node
            .spawner()
            .ok_or_else(|| capnp::Error::failed("this session's cell holds no executor".into()))?;
        // Borrowed only for the synchronous checks and spawn, never across the await of the
        // program's loading (which runs on the blocking pool).
        let (executor, filesystem) = {
            let mut state = spawner.borrow_mut();
            let executor = precheck(&mut state.spawner).map_err(refusal)?;
            (executor, state.info.filesystem().clone())
        };
        let program = load_program(&executor, &filesystem, program)
            .await
            .map_err(refusal)?;
        let (process, ends) = {
            let mut state = spawner.borrow_mut();
            let state = &mut *state;
            spawn_child(
                &mut state.spawner,
                &state.info,
                &state.fds,
                program,
                options,
            )
            .map_err(refusal)?
        };
        tracing::debug!(
            id = process.id(),
            name = process.name(),
            "spawned over Cap'n Proto"
        );
        let server = ProcessServer {
            process,
            ends: std::cell::RefCell::new(ends),
        };
        results.get().set_process(capnp_rpc::new_client(server));
        Ok(())
    }
}

fn program_of(
    program: super::schema::host_capnp::program::Reader<'_>,
) -> capnp::Result<wit::Program> {
    use super::schema::host_capnp::program::Which;
    Ok(match program.which()? {
        Which::Bytes(bytes) => wit::Program::Bytes(bytes?.to_vec()),
        Which::Path(path) => wit::Program::Path(path?.to_string()?),
    })
}

fn options_of(
    options: super::schema::host_capnp::spawn_options::Reader<'_>,
) -> capnp::Result<wit::SpawnOptions> {
    let name = options.get_name()?.to_string()?;
    let args = options
        .get_args()?
        .iter()
        .map(|arg| Ok(arg?.to_string()?))
        .collect::<capnp::Result<Vec<_>>>()?;
    let env = options
        .get_env()?
        .iter()
        .map(|var| Ok((var.get_key()?.to_string()?, var.get_value()?.to_string()?)))
        .collect::<capnp::Result<Vec<_>>>()?;
    let limits = options.get_limits()?;
    let nonzero = |v: u64| (v != 0).then_some(v);
    Ok(wit::SpawnOptions {
        name: (!name.is_empty()).then_some(name),
        args,
        env,
        stdin: stdio_of(options.get_stdin()?),
        stdout: stdio_of(options.get_stdout()?),
        stderr: stdio_of(options.get_stderr()?),
        directories: Vec::new(),
        fds: Vec::new(),
        executor: false,
        ipfs: false,
        network: false,
        limits: wit::Limits {
            max_memory: nonzero(limits.get_max_memory()),
            timeout_ms: nonzero(limits.get_timeout_ms()),
            fuel: nonzero(limits.get_fuel()),
            max_children: (limits.get_max_children() != 0).then(|| limits.get_max_children()),
        },
    })
}

fn stdio_of(stdio: CapStdio) -> wit::Stdio {
    match stdio {
        CapStdio::Null => wit::Stdio::Null,
        CapStdio::Pipe => wit::Stdio::Pipe,
        CapStdio::Inherit => wit::Stdio::Inherit,
    }
}

/// A refused spawn, as the client sees it: `failed`, with the WIT spawn-error's case; a
/// spawn the node has no room for is `overloaded`, which a client can match and retry.
fn refusal(error: wit::SpawnError) -> capnp::Error {
    if let wit::SpawnError::NodeExhausted(bound) = error {
        let what = match bound {
            wit::NodeBound::Memory => "memory budget",
            wit::NodeBound::Cells => "maximum of cells",
            wit::NodeBound::Depth => "maximum spawn depth",
        };
        return capnp::Error::overloaded(format!("spawn refused: the node's {what} is reached"));
    }
    let why = match error {
        wit::SpawnError::NotFound(path) => format!("not found: {path}"),
        wit::SpawnError::NotPermitted(why) => format!("not permitted: {why}"),
        wit::SpawnError::Invalid(why) => format!("invalid: {why}"),
        wit::SpawnError::TooLarge(n) => format!("too large: {n} bytes"),
        wit::SpawnError::TooManyChildren(n) => format!("too many children: the cap is {n}"),
        wit::SpawnError::NodeExhausted(_) => "node exhausted".to_owned(),
    };
    capnp::Error::failed(format!("spawn refused: {why}"))
}

/// A child spawned through a session.
struct ProcessServer {
    process: Process,
    ends: std::cell::RefCell<ParentEnds>,
}

impl ProcessServer {
    fn stream(&self, end: Direction, which: &str) -> capnp::Result<byte_stream::Client> {
        if end.is_none() {
            return Err(capnp::Error::failed(format!(
                "{which} was not spawned with `pipe`, or was already taken"
            )));
        }
        Ok(capnp_rpc::new_client(ByteStreamServer {
            end: Mutex::new(end),
        }))
    }
}

impl process::Server for ProcessServer {
    async fn stdin(
        self: Rc<Self>,
        _: process::StdinParams,
        mut results: process::StdinResults,
    ) -> Result<(), capnp::Error> {
        let end = self.ends.borrow_mut().stdin.take();
        let stream = self.stream(Direction::Write(end), "stdin")?;
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stdout(
        self: Rc<Self>,
        _: process::StdoutParams,
        mut results: process::StdoutResults,
    ) -> Result<(), capnp::Error> {
        let end = self.ends.borrow_mut().stdout.take();
        let stream = self.stream(Direction::Read(end), "stdout")?;
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stderr(
        self: Rc<Self>,
        _: process::StderrParams,
        mut results: process::StderrResults,
    ) -> Result<(), capnp::Error> {
        let end = self.ends.borrow_mut().stderr.take();
        let stream = self.stream(Direction::Read(end), "stderr")?;
        results.get().set_stream(stream);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: process::WaitParams,
        mut results: process::WaitResults,
    ) -> Result<(), capnp::Error> {
        let exit = self.process.wait().await;
        set_status(results.get().init_status(), &exit);
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        _: process::KillParams,
        _: process::KillResults,
    ) -> Result<(), capnp::Error> {
        self.process.kill();
        Ok(())
    }

    async fn id(
        self: Rc<Self>,
        _: process::IdParams,
        mut results: process::IdResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_id(self.process.id());
        Ok(())
    }
}

fn set_status(mut status: exit_status::Builder<'_>, exit: &Exit) {
    match exit {
        Exit::Code(code) => status.set_exited(*code),
        Exit::Trap { message, .. } => status.set_trapped(message.as_str()),
        Exit::Killed => status.set_killed(()),
        // The handle cap bounds host memory: reported as the memory limit.
        Exit::Limit(
            LimitExceeded::Memory { .. }
            | LimitExceeded::NodeMemory { .. }
            | LimitExceeded::Handles { .. },
        ) => status.set_limit_exceeded(Limit::Memory),
        Exit::Limit(LimitExceeded::Time) => status.set_limit_exceeded(Limit::Time),
        Exit::Limit(LimitExceeded::Fuel) => status.set_limit_exceeded(Limit::Fuel),
    }
}

/// One end of a pipe; `None` once closed.
enum Direction {
    /// The write end of a child's stdin.
    Write(Option<DynOutputStream>),
    /// The read end of a child's stdout or stderr.
    Read(Option<DynInputStream>),
}

impl Direction {
    fn is_none(&self) -> bool {
        match self {
            Direction::Write(end) => end.is_none(),
            Direction::Read(end) => end.is_none(),
        }
    }
}

/// A ByteStream over one end of a child's pipe. Calls on it run one at a time, in order.
struct ByteStreamServer {
    end: Mutex<Direction>,
}

impl byte_stream::Server for ByteStreamServer {
    async fn read(
        self: Rc<Self>,
        params: byte_stream::ReadParams,
        mut results: byte_stream::ReadResults,
    ) -> Result<(), capnp::Error> {
        let max = match params.get()?.get_max_bytes() as usize {
            0 => MAX_READ,
            n => n.min(MAX_READ),
        };
        let mut end = self.end.lock().await;
        let Direction::Read(stream) = &mut *end else {
            return Err(capnp::Error::failed(
                "this is the write end of a pipe: it cannot be read".into(),
            ));
        };
        let Some(input) = stream.as_mut() else {
            // Closed: end of stream, as often as asked.
            results.get().set_data(&[]);
            return Ok(());
        };
        loop {
            match input.read(max) {
                Ok(bytes) if !bytes.is_empty() => {
                    results.get().set_data(&bytes);
                    return Ok(());
                }
                Ok(_) => input.ready().await,
                Err(StreamError::Closed) => {
                    *stream = None;
                    results.get().set_data(&[]);
                    return Ok(());
                }
                Err(e) => return Err(capnp::Error::failed(format!("reading the pipe: {e}"))),
            }
        }
    }

    async fn write(
        self: Rc<Self>,
        params: byte_stream::WriteParams,
        _: byte_stream::WriteResults,
    ) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        let bytes = wasmtime_wasi_io_bytes(data);
        let mut end = self.end.lock().await;
        let Direction::Write(stream) = &mut *end else {
            return Err(capnp::Error::failed(
                "this is the read end of a pipe: it cannot be written".into(),
            ));
        };
        let Some(output) = stream.as_mut() else {
            return Err(capnp::Error::failed("the stream was closed".into()));
        };
        match output.blocking_write_and_flush(bytes).await {
            Ok(()) => Ok(()),
            Err(StreamError::Closed) => {
                *stream = None;
                Err(capnp::Error::failed("the reader is gone".into()))
            }
            Err(e) => Err(capnp::Error::failed(format!("writing the pipe: {e}"))),
        }
    }

    async fn close(
        self: Rc<Self>,
        _: byte_stream::CloseParams,
        _: byte_stream::CloseResults,
    ) -> Result<(), capnp::Error> {
        let mut end = self.end.lock().await;
        match &mut *end {
            // Every write was flushed before it returned: dropping the end only ends the
            // stream, so the reader sees end of stream after what was written.
            Direction::Write(stream) => drop(stream.take()),
            Direction::Read(stream) => drop(stream.take()),
        }
        Ok(())
    }
}

fn wasmtime_wasi_io_bytes(data: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(data)
}
