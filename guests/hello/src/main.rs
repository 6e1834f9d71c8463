//! `hello`: the smallest cell, a plain WASI command.
//!
//! It prints `hello from a ww cell` and exits 0. It does not depend on `guest-sdk`, so its
//! component imports only `wasi:*` interfaces and runs under `wasmtime run` as well as under
//! `ww run`; `cargo xtask bench` compares the two booting it.

fn main() {
    println!("hello from a ww cell");
}
