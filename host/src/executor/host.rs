//! `ww:host/executor`: a cell spawning, supervising and limiting its children.
//!
//! [`ExecutorView::spawn`] is the one place a spawn request is checked against what the
//! spawner holds: its executor, its live-children cap, its limits (a child's may only be
//! tighter), its directories (a child gets a subset, optionally narrowed to read-only), its
//! fd grants (likewise), its IPFS (passed on only when held) and the size cap on programs.
//! A program is loaded (read, hashed, compiled) by [`load_program`] on the blocking pool,
//! never on the executor's thread, so compiling a large program stalls no other cell.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};

use super::budget::Exhausted;
use super::cell::{CellConfig, CellError, CellState, Spawner};
use super::limits::{LimitExceeded, LimitRequest, MAX_PROGRAM_BYTES};
use super::process::{Exit, Process};
use super::stdio::{ParentEnds, Request};
use super::{Executor, LoadError, Loaded};
use crate::bindings::ww::host::executor as wit;
use crate::caps::fd::{FdGrants, FdPassError, mode_from_wit};
use crate::caps::{CellInfo, DirGrantError, Filesystem, ProgramFile, ReadError};

/// The resource behind a guest's `executor` handle. The power itself is the spawner's grant
/// in the store; a handle can only be had from `granted()` when that grant exists.
pub struct ExecutorHandle;

/// The resource behind a guest's `process` handle.
pub struct ProcessHandle {
    process: Process,
    ends: ParentEnds,
}

#[wasmtime_wasi::async_trait]
impl Pollable for ProcessHandle {
    async fn ready(&mut self) {
        self.process.wait().await;
    }
}

/// What the executor interface sees of a cell's store.
pub(crate) struct ExecutorView<'a> {
    table: &'a mut ResourceTable,
    info: &'a CellInfo,
    fds: &'a FdGrants,
    spawner: &'a mut Spawner,
}

struct ExecutorData;

impl HasData for ExecutorData {
    type Data<'a> = ExecutorView<'a>;
}

/// Adds `ww:host/executor` to a cell linker.
pub(crate) fn add_to_linker(linker: &mut Linker<CellState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<CellState, ExecutorData>(linker, |state| ExecutorView {
        table: &mut state.table,
        info: &state.info,
        fds: &state.fds,
        spawner: &mut state.spawner,
    })
}

impl wit::Host for ExecutorView<'_> {
    fn granted(&mut self) -> wasmtime::Result<Option<Resource<ExecutorHandle>>> {
        if self.spawner.executor.is_none() {
            return Ok(None);
        }
        Ok(Some(self.table.push(ExecutorHandle)?))
    }
}

impl wit::HostExecutor for ExecutorView<'_> {
    async fn spawn(
        &mut self,
        _executor: Resource<ExecutorHandle>,
        program: wit::Program,
        options: wit::SpawnOptions,
    ) -> wasmtime::Result<Result<Resource<ProcessHandle>, wit::SpawnError>> {
        let spawned = match precheck(self.spawner) {
            Ok(executor) => match load_program(&executor, self.info.filesystem(), program).await {
                Ok(program) => self.spawn_child(program, options),
                Err(refusal) => Err(refusal),
            },
            Err(refusal) => Err(refusal),
        };
        match spawned {
            Ok(handle) => Ok(Ok(self.table.push(handle)?)),
            Err(refusal) => {
                tracing::debug!(cell = %self.info.image(), "spawn refused: {refusal:?}");
                Ok(Err(refusal))
            }
        }
    }

    fn drop(&mut self, handle: Resource<ExecutorHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl ExecutorView<'_> {
    fn spawn_child(
        &mut self,
        program: (String, Loaded),
        options: wit::SpawnOptions,
    ) -> Result<ProcessHandle, wit::SpawnError> {
        let (process, ends) = spawn_child(self.spawner, self.info, self.fds, program, options)?;
        Ok(ProcessHandle { process, ends })
    }
}

/// What is checked before a program is loaded, so that a cell that may not spawn cannot
/// make the host read or compile anything: it holds an executor, and room for a child.
/// [`spawn_child`] checks both again (other spawns may have run meanwhile).
pub(crate) fn precheck(spawner: &mut Spawner) -> Result<Executor, wit::SpawnError> {
    use wit::SpawnError as E;
    let executor = spawner
        .executor
        .clone()
        .ok_or_else(|| E::NotPermitted("this cell holds no executor".into()))?;
    let max = spawner.limits.max_children;
    if spawner.children.live() >= max as usize {
        return Err(E::TooManyChildren(max));
    }
    Ok(executor)
}

/// Loads the program a spawn asks for, read through the spawner's `filesystem`: its origin
/// (for the child's name) and the compiled program. Reading and compiling run on the
/// blocking pool; a file the executor has loaded before (same device, inode, size and
/// times) is found without either.
pub(crate) async fn load_program(
    executor: &Executor,
    filesystem: &Filesystem,
    program: wit::Program,
) -> Result<(String, Loaded), wit::SpawnError> {
    use wit::SpawnError as E;
    let read_error = |e: ReadError| match e {
        ReadError::NotFound(p) => E::NotFound(p),
        ReadError::TooLarge(n) => E::TooLarge(n),
        ReadError::Io(message) => E::Invalid(message),
    };
    match program {
        wit::Program::Bytes(bytes) => {
            if bytes.len() as u64 > MAX_PROGRAM_BYTES {
                return Err(E::TooLarge(bytes.len() as u64));
            }
            let executor = executor.clone();
            let loaded = blocking(move || executor.load(Path::new("<bytes>"), &bytes))
                .await?
                .map_err(|e| E::Invalid(e.to_string()))?;
            Ok(("<bytes>".to_owned(), loaded))
        }
        wit::Program::Path(path) => {
            let file: ProgramFile = filesystem
                .program(&path, MAX_PROGRAM_BYTES)
                .map_err(read_error)?;
            let loaded = match executor.find_file(&file.identity()) {
                Some(loaded) => loaded,
                None => {
                    let executor = executor.clone();
                    let origin = path.clone();
                    blocking(move || executor.load_file(Path::new(&origin), file))
                        .await?
                        .map_err(|e| match e {
                            LoadError::Read(e) => read_error(e),
                            LoadError::Wasm(e) => E::Invalid(e.to_string()),
                        })?
                }
            };
            Ok((path, loaded))
        }
    }
}

/// Runs `work` on the blocking pool and awaits it.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, wit::SpawnError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| wit::SpawnError::Invalid(format!("loading the program failed: {e}")))
}

/// The refusal a parent sees for a cell that could not be started.
fn refusal_of(error: CellError) -> wit::SpawnError {
    match error {
        CellError::Exhausted(bound) => wit::SpawnError::NodeExhausted(match bound {
            Exhausted::Memory { .. } => wit::NodeBound::Memory,
            Exhausted::Cells { .. } => wit::NodeBound::Cells,
            Exhausted::Depth { .. } => wit::NodeBound::Depth,
        }),
        other => wit::SpawnError::Invalid(other.to_string()),
    }
}

/// Spawns a child of the cell whose spawner, identity and fd grants are given, running
/// `program` (loaded by [`load_program`]): the one place a spawn request is checked against
/// what the spawner holds, for `ww:host/executor` and for the Cap'n Proto `Executor`
/// (`crate::rpc`) alike. The child is recorded among the spawner's children; the caller gets
/// the process and the spawner's ends of its pipes.
pub(crate) fn spawn_child(
    spawner: &mut Spawner,
    info: &CellInfo,
    fds: &FdGrants,
    program: (String, Loaded),
    options: wit::SpawnOptions,
) -> Result<(Process, ParentEnds), wit::SpawnError> {
    use wit::SpawnError as E;
    let executor = precheck(spawner)?;

    let request = LimitRequest {
        max_memory: options.limits.max_memory,
        timeout: options.limits.timeout_ms.map(Duration::from_millis),
        fuel: options.limits.fuel,
        max_children: options.limits.max_children,
    };
    let limits = spawner
        .limits
        .tighten(&request, Instant::now())
        .map_err(|e| E::NotPermitted(e.to_string()))?;

    let requests = options
        .directories
        .iter()
        .map(|d| (d.path.as_str(), d.at.as_deref(), d.read_only));
    let grants = info.filesystem().attenuate(requests).map_err(|e| match e {
        DirGrantError::NotHeld { .. } => E::NotPermitted(e.to_string()),
        other => E::Invalid(other.to_string()),
    })?;
    let filesystem = Filesystem::of(grants).map_err(|e| E::Invalid(e.to_string()))?;

    let passes = options.fds.iter().map(|p| {
        (
            p.name.as_str(),
            p.child_name.as_deref(),
            p.mode.map(mode_from_wit),
        )
    });
    let fds = fds.attenuate(passes).map_err(|e| match e {
        FdPassError::Duplicate(_) => E::Invalid(e.to_string()),
        other => E::NotPermitted(other.to_string()),
    })?;

    let ipfs = match (options.ipfs, &spawner.ipfs) {
        (false, _) => None,
        (true, Some(ipfs)) => Some(ipfs.clone()),
        (true, None) => {
            return Err(E::NotPermitted(
                "this cell holds no IPFS capability to pass on".into(),
            ));
        }
    };

    let network = match (options.network, &spawner.network) {
        (false, _) => None,
        (true, Some(network)) => Some(network.clone()),
        (true, None) => {
            return Err(E::NotPermitted(
                "this cell holds no network capability to pass on".into(),
            ));
        }
    };

    let (origin, loaded) = program;
    let name = options.name.unwrap_or_else(|| program_name(&origin));
    let (stdio, ends) = spawner.stdio.for_child(
        request_of(options.stdin),
        request_of(options.stdout),
        request_of(options.stderr),
    );
    let config = CellConfig::new(CellInfo::new(name, filesystem))
        .args(options.args)
        .env(options.env)
        .stdio(stdio)
        .limits(limits)
        .fds(fds)
        .ipfs(ipfs)
        .network(network)
        .executor(options.executor)
        .at_depth(spawner.depth.saturating_add(1));
    let process = executor.spawn(&loaded, config).map_err(refusal_of)?;
    spawner.children.push(process.clone());
    Ok((process, ends))
}

fn request_of(stdio: wit::Stdio) -> Request {
    match stdio {
        wit::Stdio::Inherit => Request::Inherit,
        wit::Stdio::Pipe => Request::Pipe,
        wit::Stdio::Null => Request::Null,
    }
}

/// `argv[0]` for a child spawned from `origin`: the file name without `.wasm`.
fn program_name(origin: &str) -> String {
    let file = origin.rsplit('/').next().unwrap_or(origin);
    let name = file.strip_suffix(".wasm").unwrap_or(file);
    if name.is_empty() || name == "<bytes>" {
        "child".to_owned()
    } else {
        name.to_owned()
    }
}

fn status_of(exit: Exit) -> wit::ExitStatus {
    match exit {
        Exit::Code(code) => wit::ExitStatus::Exited(code),
        Exit::Trap { message, .. } => wit::ExitStatus::Trapped(message),
        Exit::Killed => wit::ExitStatus::Killed,
        // The handle cap bounds host memory: reported as the memory limit.
        Exit::Limit(
            LimitExceeded::Memory { .. }
            | LimitExceeded::NodeMemory { .. }
            | LimitExceeded::Handles { .. },
        ) => wit::ExitStatus::LimitExceeded(wit::Limit::Memory),
        Exit::Limit(LimitExceeded::Time) => wit::ExitStatus::LimitExceeded(wit::Limit::Time),
        Exit::Limit(LimitExceeded::Fuel) => wit::ExitStatus::LimitExceeded(wit::Limit::Fuel),
    }
}

/// Puts a pipe end taken from a process into the table, once; `None` once it was taken.
fn push_taken<T: Send + 'static>(
    table: &mut ResourceTable,
    stream: Option<T>,
) -> wasmtime::Result<Option<Resource<T>>> {
    Ok(match stream {
        Some(stream) => Some(table.push(stream)?),
        None => None,
    })
}

impl wit::HostProcess for ExecutorView<'_> {
    fn id(&mut self, handle: Resource<ProcessHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&handle)?.process.id())
    }

    fn take_stdin(
        &mut self,
        handle: Resource<ProcessHandle>,
    ) -> wasmtime::Result<Option<Resource<DynOutputStream>>> {
        let stream = self.table.get_mut(&handle)?.ends.stdin.take();
        push_taken(self.table, stream)
    }

    fn take_stdout(
        &mut self,
        handle: Resource<ProcessHandle>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        let stream = self.table.get_mut(&handle)?.ends.stdout.take();
        push_taken(self.table, stream)
    }

    fn take_stderr(
        &mut self,
        handle: Resource<ProcessHandle>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        let stream = self.table.get_mut(&handle)?.ends.stderr.take();
        push_taken(self.table, stream)
    }

    fn subscribe(
        &mut self,
        handle: Resource<ProcessHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, handle)
    }

    fn try_wait(
        &mut self,
        handle: Resource<ProcessHandle>,
    ) -> wasmtime::Result<Option<wit::ExitStatus>> {
        Ok(self.table.get(&handle)?.process.try_wait().map(status_of))
    }

    async fn wait(&mut self, handle: Resource<ProcessHandle>) -> wasmtime::Result<wit::ExitStatus> {
        let process = self.table.get(&handle)?.process.clone();
        Ok(status_of(process.wait().await))
    }

    fn kill(&mut self, handle: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        self.table.get(&handle)?.process.kill();
        Ok(())
    }

    fn drop(&mut self, handle: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        // Dropping the handle does not end the child: it stays among the spawner's children
        // and ends with it at the latest.
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_names() {
        assert_eq!(
            super::program_name("/usr/lib/child-echo.wasm"),
            "child-echo"
        );
        assert_eq!(super::program_name("<bytes>"), "child");
        assert_eq!(super::program_name("/bin/tool"), "tool");
    }
}
