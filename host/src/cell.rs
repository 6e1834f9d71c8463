//! Cells: one WebAssembly program running with exactly the WASI context and capabilities it
//! was granted, and how it ended.
//!
//! Architecture invariant: a cell's WASI context is built only from its [`CellConfig`]:
//! nothing of the host's environment, arguments or filesystem reaches it unless the config
//! names it. The host's stdio is passed through as the cell's stdio.

use wasmtime::component::{
    Component, Linker as ComponentLinker, ResourceTable, types::ComponentItem,
};
use wasmtime::{Engine, Linker as ModuleLinker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::caps::{self, CellInfo, DirGrantError};
use crate::wasm::Program;

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

    /// The imports exist but do not match, or instantiation failed for another reason.
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
}

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The cell returned, or exited with this code.
    Code(u8),
    /// The cell trapped (or its exit was malformed).
    Trap {
        /// What happened, in one line.
        message: String,
        /// Wasmtime's full report, with the wasm backtrace when there is one.
        detail: String,
    },
}

impl Exit {
    /// The status `ww` exits with for this cell: its own code, or 134 (128 + SIGABRT, as
    /// `wasmtime run` reports) for a trap.
    pub fn status(&self) -> u8 {
        match self {
            Exit::Code(code) => *code,
            Exit::Trap { .. } => 134,
        }
    }
}

/// Everything a cell is given: its identity and filesystem, arguments and environment.
#[derive(Debug, Clone)]
pub struct CellConfig {
    info: CellInfo,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl CellConfig {
    /// A cell described by `info`, with `argv[0]` set to its image name and no environment.
    pub fn new(info: CellInfo) -> CellConfig {
        let args = vec![info.image().to_owned()];
        CellConfig {
            info,
            args,
            env: Vec::new(),
        }
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

    fn name(&self) -> &str {
        self.info.image()
    }

    fn wasi(&self) -> Result<WasiCtxBuilder, CellError> {
        let mut builder = WasiCtx::builder();
        builder
            .args(&self.args)
            .envs(&self.env)
            .inherit_stdio()
            // Filesystem calls run inline instead of hopping to a blocking thread: the
            // executor is single-threaded, so the hop would only add latency.
            .allow_blocking_current_thread(true);
        self.info.filesystem().apply(&mut builder)?;
        Ok(builder)
    }
}

/// Runs `program` as a cell configured by `config`, until it ends.
pub async fn run(
    engine: &Engine,
    program: &Program,
    config: CellConfig,
) -> Result<Exit, CellError> {
    let started = std::time::Instant::now();
    let exit = match program {
        Program::Component(component) => run_component(engine, component, config).await?,
        Program::Module(module) => run_module(engine, module, config).await?,
    };
    tracing::debug!(
        ?exit,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cell ended"
    );
    Ok(exit)
}

/// What a component cell's store holds.
struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    info: CellInfo,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn component_linker(engine: &Engine) -> wasmtime::Result<ComponentLinker<ComponentState>> {
    let mut linker = ComponentLinker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    caps::add_to_linker(&mut linker, |state: &mut ComponentState| &mut state.info)?;
    Ok(linker)
}

async fn run_component(
    engine: &Engine,
    component: &Component,
    config: CellConfig,
) -> Result<Exit, CellError> {
    let cell = config.name().to_owned();
    let instantiate_err = |e: wasmtime::Error| CellError::Instantiate {
        cell: cell.clone(),
        message: format!("{e:#}"),
    };
    let linker = component_linker(engine).map_err(instantiate_err)?;
    let pre = match linker.instantiate_pre(component) {
        Ok(pre) => pre,
        Err(e) => return Err(link_error(engine, component, &cell, e)),
    };
    let pre = CommandPre::new(pre).map_err(|_| CellError::NotACommand {
        cell: cell.clone(),
        what: "the component does not export wasi:cli/run".into(),
    })?;
    let state = ComponentState {
        wasi: config.wasi()?.build(),
        table: ResourceTable::new(),
        info: config.info,
    };
    let mut store = Store::new(engine, state);
    let command = pre
        .instantiate_async(&mut store)
        .await
        .map_err(instantiate_err)?;
    let result = command.wasi_cli_run().call_run(&mut store).await;
    Ok(exit_of(result.map(|ran| match ran {
        Ok(()) => 0,
        Err(()) => 1,
    })))
}

async fn run_module(
    engine: &Engine,
    module: &Module,
    config: CellConfig,
) -> Result<Exit, CellError> {
    let cell = config.name().to_owned();
    let instantiate_err = |e: wasmtime::Error| CellError::Instantiate {
        cell: cell.clone(),
        message: format!("{e:#}"),
    };
    let mut linker: ModuleLinker<WasiP1Ctx> = ModuleLinker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |wasi| wasi).map_err(instantiate_err)?;
    let mut store = Store::new(engine, config.wasi()?.build_p1());

    let missing: Vec<String> = module
        .imports()
        .filter(|import| linker.get_by_import(&mut store, import).is_none())
        .map(|import| format!("{}::{}", import.module(), import.name()))
        .collect();
    if !missing.is_empty() {
        return Err(CellError::MissingImports {
            cell,
            imports: missing,
        });
    }

    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(instantiate_err)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| CellError::NotACommand {
            cell: cell.clone(),
            what: "the module does not export a `_start` function".into(),
        })?;
    let result = start.call_async(&mut store, ()).await;
    Ok(exit_of(result.map(|()| 0)))
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
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    };
    Exit::Trap {
        message,
        detail: format!("{error:?}"),
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
            Ok(_) => {
                return CellError::MissingImports {
                    cell: cell.to_owned(),
                    imports: missing,
                };
            }
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
    if !text.contains("a matching implementation was not found") {
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
