//! `ww:host/cell`: a cell's view of itself, and its exit with an exact code.

use super::CellInfo;
use crate::bindings::ww::host::cell::{Directory, Host};

impl Host for CellInfo {
    fn image(&mut self) -> String {
        self.image.clone()
    }

    fn directories(&mut self) -> Vec<Directory> {
        self.filesystem
            .preopens()
            .iter()
            .map(|dir| Directory {
                guest_path: dir.guest().to_owned(),
                read_only: dir.read_only(),
            })
            .collect()
    }

    fn exit(&mut self, code: u8) -> wasmtime::Result<()> {
        // The same unwinding wasmtime-wasi uses for `exit`: the cell stops here and the
        // runner reads the code back out of the error.
        Err(wasmtime_wasi::I32Exit(i32::from(code)).into())
    }
}
