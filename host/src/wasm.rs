//! WebAssembly binaries: telling components from preview 1 modules, and compiling them with
//! the one engine a `ww` process shares.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Config, Engine, Module};

/// A failure to understand or compile a binary.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum WasmError {
    /// The bytes are not WebAssembly at all.
    #[error("{} is not a WebAssembly binary", path.display())]
    #[diagnostic(
        code(ww::wasm::not_wasm),
        help(
            "bin/main.wasm (or the .wasm IMAGE) must be a WebAssembly component (WASI preview 2) \
             or a preview 1 core module; build Rust guests with --target wasm32-wasip2"
        )
    )]
    NotWasm {
        /// The file that was read.
        path: PathBuf,
    },

    /// Compilation failed: the binary is malformed or uses unsupported features.
    #[error("cannot compile {}: {message}", path.display())]
    #[diagnostic(
        code(ww::wasm::compile),
        help("the binary is malformed or uses a feature this runtime does not enable")
    )]
    Compile {
        /// The file that was read.
        path: PathBuf,
        /// Wasmtime's explanation, with its causes.
        message: String,
    },

    /// The engine could not be configured.
    #[error("cannot start the WebAssembly engine: {message}")]
    #[diagnostic(code(ww::wasm::engine))]
    Engine {
        /// Wasmtime's explanation.
        message: String,
    },
}

/// The two kinds of binary ww runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WebAssembly component (WASI preview 2).
    Component,
    /// A core module, run with WASI preview 1.
    Module,
}

impl Kind {
    /// Classifies `bytes` by their header, without compiling them.
    pub fn of(bytes: &[u8]) -> Option<Kind> {
        if wasmparser::Parser::is_component(bytes) {
            Some(Kind::Component)
        } else if wasmparser::Parser::is_core_wasm(bytes) {
            Some(Kind::Module)
        } else {
            None
        }
    }
}

/// A compiled binary, ready to instantiate.
#[derive(Clone)]
pub enum Program {
    /// A compiled component.
    Component(Component),
    /// A compiled preview 1 core module.
    Module(Module),
}

/// How the engine is configured: what changes the compiled code, and so the cache key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Meter fuel in every cell (costs some speed; needed for `--fuel`).
    pub fuel: bool,
}

/// Builds the engine every cell of this process runs on.
pub fn engine(options: &EngineOptions) -> Result<Engine, WasmError> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Interrupts give busy cells a chance to yield; see the executor's epoch ticker.
        .epoch_interruption(true)
        .consume_fuel(options.fuel);
    Engine::new(&config).map_err(|e| WasmError::Engine {
        message: format!("{e:#}"),
    })
}

/// Compiles `bytes`, read from `path`, as whichever kind of binary they are.
pub fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Program, WasmError> {
    let kind = Kind::of(bytes).ok_or_else(|| WasmError::NotWasm {
        path: path.to_path_buf(),
    })?;
    let started = std::time::Instant::now();
    let compiled = match kind {
        Kind::Component => Component::new(engine, bytes).map(Program::Component),
        Kind::Module => Module::new(engine, bytes).map(Program::Module),
    };
    let program = compiled.map_err(|e| WasmError::Compile {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    tracing::debug!(
        path = %path.display(),
        ?kind,
        bytes = bytes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled"
    );
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_header() {
        let module = wat::parse_str("(module)").unwrap();
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(Kind::of(&module), Some(Kind::Module));
        assert_eq!(Kind::of(&component), Some(Kind::Component));
        assert_eq!(Kind::of(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(Kind::of(b""), None);
    }

    #[test]
    fn garbage_is_not_wasm() {
        let engine = engine(&EngineOptions::default()).unwrap();
        let err = compile(&engine, Path::new("x.wasm"), b"not wasm")
            .err()
            .unwrap();
        assert!(matches!(err, WasmError::NotWasm { .. }));
    }

    #[test]
    fn truncated_wasm_is_a_compile_error() {
        let engine = engine(&EngineOptions::default()).unwrap();
        let mut bytes = wat::parse_str("(module (func (export \"f\")))").unwrap();
        bytes.truncate(bytes.len() - 3);
        let err = compile(&engine, Path::new("x.wasm"), &bytes).err().unwrap();
        assert!(matches!(err, WasmError::Compile { .. }), "{err}");
    }
}
