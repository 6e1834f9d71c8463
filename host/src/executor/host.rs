//! `ww:host/executor`: a cell spawning, supervising and limiting its children.
//!
//! [`ExecutorView::spawn`] is the one place a spawn request is checked against what the
//! spawner holds: its executor, its live-children cap, its limits (a child's may only be
//! tighter), its directories (a child gets a subset, optionally narrowed to read-only), its
//! fd grants (likewise), its IPFS (passed on only when held) and the size cap on programs.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};

use super::LoadError;
use super::cell::{CellConfig, CellState, Spawner};
use super::limits::{LimitExceeded, LimitRequest, MAX_PROGRAM_BYTES};
use super::process::{Exit, Process};
use super::stdio::{ParentEnds, Request};
use crate::bindings::ww::host::executor as wit;
use crate::caps::fd::{FdGrants, FdPassError, mode_from_wit};
use crate::caps::{CellInfo, DirGrantError, Filesystem, ReadError};

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
    fn spawn(
        &mut self,
        _executor: Resource<ExecutorHandle>,
        program: wit::Program,
        options: wit::SpawnOptions,
    ) -> wasmtime::Result<Result<Resource<ProcessHandle>, wit::SpawnError>> {
        match self.spawn_child(program, options) {
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
        program: wit::Program,
        options: wit::SpawnOptions,
    ) -> Result<ProcessHandle, wit::SpawnError> {
        let (process, ends) = spawn_child(self.spawner, self.info, self.fds, program, options)?;
        Ok(ProcessHandle { process, ends })
    }
}

/// Spawns a child of the cell whose spawner, identity and fd grants are given: the one
/// place a spawn request is checked against what the spawner holds, for `ww:host/executor`
/// and for the Cap'n Proto `Executor` (`crate::rpc`) alike. The child is recorded among the
/// spawner's children; the caller gets the process and the spawner's ends of its pipes.
pub(crate) fn spawn_child(
    spawner: &mut Spawner,
    info: &CellInfo,
    fds: &FdGrants,
    program: wit::Program,
    options: wit::SpawnOptions,
) -> Result<(Process, ParentEnds), wit::SpawnError> {
    use wit::SpawnError as E;
    let executor = spawner
        .executor
        .clone()
        .ok_or_else(|| E::NotPermitted("this cell holds no executor".into()))?;

    let max = spawner.limits.max_children;
    if spawner.children.live() >= max as usize {
        return Err(E::TooManyChildren(max));
    }

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

    let read_error = |e: ReadError| match e {
        ReadError::NotFound(p) => E::NotFound(p),
        ReadError::TooLarge(n) => E::TooLarge(n),
        ReadError::Io(message) => E::Invalid(message),
    };
    let (origin, loaded) = match program {
        wit::Program::Bytes(bytes) => {
            if bytes.len() as u64 > MAX_PROGRAM_BYTES {
                return Err(E::TooLarge(bytes.len() as u64));
            }
            let loaded = executor
                .load(Path::new("<bytes>"), &bytes)
                .map_err(|e| E::Invalid(e.to_string()))?;
            ("<bytes>".to_owned(), loaded)
        }
        wit::Program::Path(path) => {
            let file = info
                .filesystem()
                .program(&path, MAX_PROGRAM_BYTES)
                .map_err(read_error)?;
            let loaded = executor
                .load_file(Path::new(&path), file)
                .map_err(|e| match e {
                    LoadError::Read(e) => read_error(e),
                    LoadError::Wasm(e) => E::Invalid(e.to_string()),
                })?;
            (path, loaded)
        }
    };

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
        .executor(options.executor);
    let process = executor
        .spawn(&loaded, config)
        .map_err(|e| E::Invalid(e.to_string()))?;
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
        Exit::Limit(LimitExceeded::Memory { .. }) => {
            wit::ExitStatus::LimitExceeded(wit::Limit::Memory)
        }
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
