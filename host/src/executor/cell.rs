//! Cells: one WebAssembly program with exactly the WASI context, capabilities and limits in
//! its [`CellConfig`], prepared (linked, store built) and then run to its [`Exit`].
//!
//! Architecture invariant: a cell's WASI context is built only from its config: nothing of
//! the host's environment, arguments or filesystem reaches it unless the config names it.

use std::sync::Arc;

use wasmtime::component::{
    Component, Linker as ComponentLinker, ResourceTable, ResourceTableError, types::ComponentItem,
};
use wasmtime::{Engine, Linker as ModuleLinker, Module, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Executor;
use super::budget::{CELL_OVERHEAD, Exhausted, HANDLES_COST, Ticket};
use super::limits::{LimitExceeded, Limits, MAX_GUEST_HANDLES, MAX_HANDLES, MemoryLimiter};
use super::process::{Children, Exit};
use super::stdio::Stdio;
use crate::caps::fd::{FdGrants, FdView};
use crate::caps::ipfs::IpfsView;
use crate::caps::net::NetView;
use crate::caps::rpc::{RpcHost, RpcView};
use crate::caps::{self, CellInfo, DirGrantError};
use crate::ipfs::Ipfs;
use crate::net::Starting;

/// A cell that could not be started.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CellError {
    /// The binary imports functions the host does not provide.
    #[error("cell `{cell}` imports what ww does not provide: {}", imports.join(", "))]
    #[diagnostic(
        code(ww::cell::missing_imports),
        help(
            "ww gives cells WASI preview 2 (preview 1 for core modules) and the ww:host \
             interfaces in wit/; rebuild the guest without the imports listed"
        )
    )]
    MissingImports {
        /// The cell's name.
        cell: String,
        /// Each import the host lacks.
        imports: Vec<String>,
    },

    /// The imports exist but do not match, or the store could not be set up.
    #[error("cannot instantiate cell `{cell}`: {message}")]
    #[diagnostic(
        code(ww::cell::instantiate),
        help("the guest was built against interfaces that do not match this ww; rebuild it")
    )]
    Instantiate {
        /// The cell's name.
        cell: String,
        /// Wasmtime's explanation.
        message: String,
    },

    /// The binary has no entry point ww knows how to call.
    #[error("cell `{cell}` is not a command: {what}")]
    #[diagnostic(
        code(ww::cell::not_a_command),
        help(
            "ww runs WASI commands: a component exporting wasi:cli/run, or a preview 1 module \
             exporting _start (a Rust crate with `fn main` built for wasm32-wasip2 is one)"
        )
    )]
    NotACommand {
        /// The cell's name.
        cell: String,
        /// What is missing.
        what: String,
    },

    /// A directory grant could not be opened.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Filesystem(#[from] DirGrantError),

    /// The node has no room for another cell (memory budget, cells alive, or depth).
    #[error("cannot start a cell: {0}")]
    #[diagnostic(
        code(ww::cell::exhausted),
        help(
            "the node's bounds are --node-memory, --max-cells and --max-depth; end other \
             cells or raise them"
        )
    )]
    // Not `#[from]`, which would make the bound a source too and print it twice.
    Exhausted(Exhausted),
}

impl From<Exhausted> for CellError {
    fn from(bound: Exhausted) -> CellError {
        CellError::Exhausted(bound)
    }
}

/// Everything a cell is given: identity and filesystem, arguments, environment, stdio,
/// limits, and whether it holds an executor, fds, the RPC bridge and IPFS.
#[derive(Clone)]
pub struct CellConfig {
    info: CellInfo,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdio: Stdio,
    limits: Limits,
    executor: bool,
    fds: FdGrants,
    rpc: Option<Arc<dyn RpcHost>>,
    ipfs: Option<Arc<Ipfs>>,
    network: Option<Starting>,
    depth: u32,
}

impl CellConfig {
    /// A cell described by `info`, with `argv[0]` set to its name, no environment, the host's
    /// stdio, default limits and no executor.
    pub fn new(info: CellInfo) -> CellConfig {
        let args = vec![info.image().to_owned()];
        CellConfig {
            info,
            args,
            env: Vec::new(),
            stdio: Stdio::host(),
            limits: Limits::default(),
            executor: false,
            fds: FdGrants::default(),
            rpc: None,
            ipfs: None,
            network: None,
            depth: 0,
        }
    }

    /// How deep the cell is nested: 0 for pid0, its parent's plus one for a child.
    pub fn at_depth(mut self, depth: u32) -> CellConfig {
        self.depth = depth;
        self
    }

    /// How deep the cell is nested.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// What the host holds for the cell before it grows any memory: its fixed overhead,
    /// the most its resources may take, its arguments and environment, and the buffers of
    /// the streams made for it. Charged to the node's budget at spawn.
    pub fn host_bytes(&self) -> u64 {
        let strings: usize = self.args.iter().map(String::len).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        CELL_OVERHEAD
            .saturating_add(HANDLES_COST)
            .saturating_add(strings as u64)
            .saturating_add(self.stdio.buffered_bytes())
    }

    /// Gives the cell the node's network (`ww:host/net`), or not.
    pub fn network(mut self, network: Option<Starting>) -> CellConfig {
        self.network = network;
        self
    }

    /// Gives the cell IPFS (`ww:host/ipfs`), through this client and cache, or not.
    pub fn ipfs(mut self, ipfs: Option<Arc<Ipfs>>) -> CellConfig {
        self.ipfs = ipfs;
        self
    }

    /// Gives the cell the Cap'n Proto bridge to the node (`ww:host/rpc`), or not.
    pub fn rpc(mut self, host: Option<Arc<dyn RpcHost>>) -> CellConfig {
        self.rpc = host;
        self
    }

    /// Sets the file descriptors the cell holds by name.
    pub fn fds(mut self, fds: FdGrants) -> CellConfig {
        self.fds = fds;
        self
    }

    /// Appends arguments after `argv[0]`.
    pub fn args(mut self, args: impl IntoIterator<Item = String>) -> CellConfig {
        self.args.extend(args);
        self
    }

    /// Sets the whole environment of the cell.
    pub fn env(mut self, env: Vec<(String, String)>) -> CellConfig {
        self.env = env;
        self
    }

    /// Sets the cell's standard streams.
    pub fn stdio(mut self, stdio: Stdio) -> CellConfig {
        self.stdio = stdio;
        self
    }

    /// Sets the cell's limits.
    pub fn limits(mut self, limits: Limits) -> CellConfig {
        self.limits = limits;
        self
    }

    /// Grants the cell an executor (bound by its own limits) or not.
    pub fn executor(mut self, granted: bool) -> CellConfig {
        self.executor = granted;
        self
    }

    /// The cell's name.
    pub fn name(&self) -> &str {
        self.info.image()
    }

    /// When the cell is ended, if ever.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.limits.deadline
    }

    fn wasi(&self) -> Result<WasiCtxBuilder, CellError> {
        let mut builder = WasiCtx::builder();
        // Filesystem calls run on the blocking pool (wasmtime-wasi's default), never on the
        // executor's one thread: a cell opening a FIFO or reading a slow disk must not stop
        // every other cell, the RPC system and the signal handlers.
        builder.args(&self.args).envs(&self.env);
        self.stdio.apply(&mut builder);
        self.info.filesystem().apply(&mut builder)?;
        Ok(builder)
    }
}

/// What a cell that may spawn children carries for it.
pub(crate) struct Spawner {
    /// The executor, when the cell was granted one.
    pub executor: Option<Executor>,
    /// The cell's own limits: its children's are at most these.
    pub limits: Limits,
    /// The cell's stdio, which children may inherit.
    pub stdio: Stdio,
    /// Its live children, killed when the cell ends.
    pub children: Children,
    /// The cell's IPFS, when it holds it: served to the cell (`ww:host/ipfs`) and passed on
    /// to the children it asks it for.
    pub ipfs: Option<Arc<Ipfs>>,
    /// The cell's network, when it holds it: served to the cell (`ww:host/net`) and passed
    /// on to the children it asks it for.
    pub network: Option<Starting>,
    /// How deep the cell is: its children are one deeper.
    pub depth: u32,
}

/// What a component cell's store holds.
pub(crate) struct CellState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) info: CellInfo,
    pub(crate) fds: FdGrants,
    rpc: Option<Arc<dyn RpcHost>>,
    limiter: MemoryLimiter,
    pub(crate) spawner: Spawner,
}

impl WasiView for CellState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What a preview 1 cell's store holds.
pub(crate) struct ModuleState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// The linker every component cell is instantiated with.
pub(crate) fn component_linker(engine: &Engine) -> wasmtime::Result<ComponentLinker<CellState>> {
    let mut linker = ComponentLinker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    caps::add_to_linker(&mut linker, |state: &mut CellState| &mut state.info)?;
    caps::fd::add_to_linker(&mut linker, |state: &mut CellState| FdView {
        table: &mut state.table,
        grants: &state.fds,
    })?;
    caps::rpc::add_to_linker(&mut linker, |state: &mut CellState| RpcView {
        table: &mut state.table,
        host: state.rpc.as_ref(),
    })?;
    caps::ipfs::add_to_linker(&mut linker, |state: &mut CellState| IpfsView {
        ipfs: state.spawner.ipfs.as_ref(),
    })?;
    caps::net::add_to_linker(&mut linker, |state: &mut CellState| NetView {
        table: &mut state.table,
        network: state.spawner.network.as_ref(),
    })?;
    super::host::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The linker every preview 1 cell is instantiated with.
pub(crate) fn module_linker(engine: &Engine) -> wasmtime::Result<ModuleLinker<ModuleState>> {
    let mut linker = ModuleLinker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut ModuleState| &mut state.wasi)?;
    Ok(linker)
}

/// A cell linked and with its store built, ready to run.
pub(crate) enum Ready {
    Component(Store<CellState>, CommandPre<CellState>),
    Module(Store<ModuleState>, wasmtime::InstancePre<ModuleState>),
}

/// The part of every store's setup that does not depend on the kind of cell.
fn configure<T: 'static>(
    store: &mut Store<T>,
    limits: &Limits,
    fuel_metered: bool,
) -> wasmtime::Result<()> {
    // Every tick of the epoch, a cell yields to the executor, so a busy loop cannot starve
    // other cells, and a busy cell past its deadline ends at once (a cell blocked in the
    // host is ended by the executor's timer instead).
    let deadline = limits.deadline;
    store.epoch_deadline_callback(move |_| match deadline {
        Some(deadline) if std::time::Instant::now() >= deadline => Err(LimitExceeded::Time.into()),
        _ => Ok(UpdateDeadline::Yield(1)),
    });
    store.set_epoch_deadline(1);
    if fuel_metered {
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
    }
    Ok(())
}

/// Links `component` (through `pre`, the cached link) and builds the cell's store.
pub(crate) fn prepare_component(
    executor: &Executor,
    pre: CommandPre<CellState>,
    config: CellConfig,
    ticket: Ticket,
) -> Result<Ready, CellError> {
    let cell = config.name().to_owned();
    let limits = config.limits;
    // Every resource the cell makes the host hold is an entry here: capped, since the
    // budget charged for them at spawn is the cap's worst case.
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HANDLES);
    let state = CellState {
        wasi: config.wasi()?.build(),
        table,
        limiter: MemoryLimiter::new(config.limits.max_memory, ticket),
        spawner: Spawner {
            executor: config.executor.then(|| executor.clone()),
            limits: config.limits,
            stdio: config.stdio,
            children: Children::default(),
            ipfs: config.ipfs,
            network: config.network,
            depth: config.depth,
        },
        info: config.info,
        fds: config.fds,
        rpc: config.rpc,
    };
    let mut store = Store::new(executor.engine(), state);
    store.limiter(|state| &mut state.limiter);
    // The guest's handles to those resources, and to its own, live in the store.
    store.set_max_component_handles(MAX_GUEST_HANDLES);
    configure(&mut store, &limits, executor.fuel_metered()).map_err(|e| {
        CellError::Instantiate {
            cell,
            message: format!("{e:#}"),
        }
    })?;
    Ok(Ready::Component(store, pre))
}

/// Builds a preview 1 cell's store and checks `pre`'s module links.
pub(crate) fn prepare_module(
    executor: &Executor,
    pre: wasmtime::InstancePre<ModuleState>,
    config: CellConfig,
    ticket: Ticket,
) -> Result<Ready, CellError> {
    let cell = config.name().to_owned();
    let mut wasi = config.wasi()?.build_p1();
    // Preview 1 keeps its descriptors in a resource table too: capped as a component's.
    WasiView::ctx(&mut wasi).table.set_max_capacity(MAX_HANDLES);
    let state = ModuleState {
        wasi,
        limiter: MemoryLimiter::new(config.limits.max_memory, ticket),
    };
    let mut store = Store::new(executor.engine(), state);
    store.limiter(|state| &mut state.limiter);
    configure(&mut store, &config.limits, executor.fuel_metered()).map_err(|e| {
        CellError::Instantiate {
            cell,
            message: format!("{e:#}"),
        }
    })?;
    Ok(Ready::Module(store, pre))
}

impl Ready {
    /// Runs the cell until it ends.
    pub(crate) async fn run(self) -> Exit {
        match self {
            Ready::Component(mut store, pre) => {
                let result = match pre.instantiate_async(&mut store).await {
                    Ok(command) => command
                        .wasi_cli_run()
                        .call_run(&mut store)
                        .await
                        .map(|ran| match ran {
                            Ok(()) => 0,
                            Err(()) => 1,
                        }),
                    Err(e) => Err(e),
                };
                exit_of(result)
            }
            Ready::Module(mut store, pre) => {
                let result = match pre.instantiate_async(&mut store).await {
                    Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                        Ok(start) => start.call_async(&mut store, ()).await.map(|()| 0),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                exit_of(result)
            }
        }
    }
}

/// The one place a cell's result becomes an [`Exit`].
fn exit_of(result: wasmtime::Result<u8>) -> Exit {
    let error = match result {
        Ok(code) => return Exit::Code(code),
        Err(error) => error,
    };
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>()
        && let Ok(code) = u8::try_from(*code)
    {
        return Exit::Code(code);
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return Exit::Limit(*limit);
    }
    // A host call that found the cell's resource table full: the cap set at prepare.
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return Exit::Limit(LimitExceeded::Handles { limit: MAX_HANDLES });
    }
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => return Exit::Limit(LimitExceeded::Fuel),
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    };
    Exit::Trap {
        message,
        detail: format!("{error:?}"),
    }
}

/// Links `component` for cells, or explains why it cannot be.
pub(crate) fn link_component(
    engine: &Engine,
    linker: &ComponentLinker<CellState>,
    component: &Component,
    cell: &str,
) -> Result<CommandPre<CellState>, CellError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| link_error(engine, component, cell, e))?;
    CommandPre::new(pre).map_err(|_| CellError::NotACommand {
        cell: cell.to_owned(),
        what: "the component does not export wasi:cli/run".into(),
    })
}

/// Links `module` for preview 1 cells, or lists every import the host lacks.
pub(crate) fn link_module(
    engine: &Engine,
    linker: &ModuleLinker<ModuleState>,
    module: &Module,
    cell: &str,
) -> Result<wasmtime::InstancePre<ModuleState>, CellError> {
    match linker.instantiate_pre(module) {
        Ok(pre) => {
            if module.get_export("_start").is_none() {
                return Err(CellError::NotACommand {
                    cell: cell.to_owned(),
                    what: "the module does not export a `_start` function".into(),
                });
            }
            Ok(pre)
        }
        Err(e) => {
            // A throwaway store answers which imports the linker has.
            let empty = ModuleState {
                wasi: WasiCtxBuilder::new().build_p1(),
                limiter: MemoryLimiter::new(0, Ticket::unbounded()),
            };
            let mut store = Store::new(engine, empty);
            let missing: Vec<String> = module
                .imports()
                .filter(|import| linker.get_by_import(&mut store, import).is_none())
                .map(|import| format!("{}::{}", import.module(), import.name()))
                .collect();
            if missing.is_empty() {
                Err(CellError::Instantiate {
                    cell: cell.to_owned(),
                    message: format!("{e:#}"),
                })
            } else {
                Err(CellError::MissingImports {
                    cell: cell.to_owned(),
                    imports: missing,
                })
            }
        }
    }
}

/// Explains why `component` could not be linked, listing every missing import.
///
/// Wasmtime reports the first unsatisfied import only. To list them all, each one it names
/// is stubbed out in a scratch linker and linking is retried, until it succeeds or fails for
/// another reason.
fn link_error(
    engine: &Engine,
    component: &Component,
    cell: &str,
    first: wasmtime::Error,
) -> CellError {
    let instantiate = |e: &wasmtime::Error| CellError::Instantiate {
        cell: cell.to_owned(),
        message: format!("{e:#}"),
    };
    let Ok(mut probe) = component_linker(engine) else {
        return instantiate(&first);
    };
    let imports: Vec<(String, ComponentItem)> = component
        .component_type()
        .imports(engine)
        .map(|(name, import)| (name.to_owned(), import.ty))
        .collect();

    let mut missing: Vec<String> = Vec::new();
    let mut error = first;
    // Each round either finds a new missing import or stops, so this ends.
    for _ in 0..=imports.len() {
        let Some(name) = unsatisfied_import(&error) else {
            break;
        };
        if missing.contains(&name) {
            break;
        }
        let Some((_, item)) = imports.iter().find(|(n, _)| *n == name) else {
            break;
        };
        if stub(&mut probe.root(), &name, item, engine).is_err() {
            break;
        }
        missing.push(name);
        match probe.instantiate_pre(component) {
            Ok(_) => break,
            Err(next) => error = next,
        }
    }
    if missing.is_empty() {
        instantiate(&error)
    } else {
        CellError::MissingImports {
            cell: cell.to_owned(),
            imports: missing,
        }
    }
}

/// The import named in wasmtime's "component imports … `NAME`, but a matching
/// implementation was not found" message, if that is what `error` says.
fn unsatisfied_import(error: &wasmtime::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text.strip_prefix("component imports ")?;
    // The same message heads a type mismatch; only an absent definition is "missing".
    if !format!("{error:#}").contains("implementation is missing") {
        return None;
    }
    let start = rest.find('`')? + 1;
    let len = rest[start..].find('`')?;
    Some(rest[start..start + len].to_owned())
}

/// Defines `name` in `linker` as `item` with every function trapping, for [`link_error`].
fn stub<T: 'static>(
    linker: &mut wasmtime::component::LinkerInstance<'_, T>,
    name: &str,
    item: &ComponentItem,
    engine: &Engine,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            linker.func_new(name, |_, _, _, _| Err(wasmtime::Error::msg("not provided")))
        }
        ComponentItem::Resource(_) => linker.resource(
            name,
            wasmtime::component::ResourceType::host::<()>(),
            |_, _| Ok(()),
        ),
        ComponentItem::ComponentInstance(instance) => {
            let mut nested = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                // An export the linker already has keeps its real definition.
                let _ = stub(&mut nested, export, &item.ty, engine);
            }
            Ok(())
        }
        _ => Err(wasmtime::Error::msg("cannot stub this kind of import")),
    }
}
