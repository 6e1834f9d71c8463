//! `cargo xtask`: the project's build and test tasks, in Rust so they run wherever cargo does.
//!
//! ```text
//! cargo xtask images            build the guests into examples/images/<name>/bin/main.wasm
//! cargo xtask codegen [--check] regenerate (or check) the Rust code for capnp/*.capnp
//! cargo xtask test [-- ARGS]    run every test; ARGS go to `cargo test --workspace`
//! cargo xtask bench             measure ww against wasmtime and cat; write BENCHMARKS.md
//! cargo xtask soak [--spawns N] [--calls N] [--connections N]
//!                               a long run sampling ww's memory; BENCHMARKS.md's Soak section
//! cargo xtask fuzz [TARGET] [--seconds N] [--build-only]
//!                               run (or build) the cargo-fuzz targets in fuzz/
//! ```
//!
//! `.cargo/config.toml` defines the `xtask` alias for `cargo run --package xtask --`.

mod bench;
mod bench_rpc;
mod codegen;
mod fuzz;
mod images;
mod ipfs_node;
mod soak;
mod test;
mod util;

/// The Rust generated from capnp/, shared with the host (the generated files refer to each
/// other as `crate::rpc::schema::*`).
mod rpc {
    #[allow(dead_code, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod schema {
        pub mod host_capnp {
            include!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../host/src/rpc/schema/host_capnp.rs"
            ));
        }
        pub mod membrane_capnp {
            include!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../host/src/rpc/schema/membrane_capnp.rs"
            ));
        }
    }
}

use std::process::ExitCode;

/// What `cargo xtask help` prints.
const USAGE: &str = "\
usage: cargo xtask <TASK>

tasks:
  images             build the guests (guests/) for wasm32-wasip2 and copy each to
                     examples/images/<name>/bin/main.wasm (installs the target if missing)
  codegen [--check]  compile capnp/*.capnp into host/src/rpc/schema/<name>_capnp.rs;
                     with --check, only verify that the committed files are fresh
  test [-- ARGS]     run every test: install missing tools, images, codegen --check,
                     guest unit tests, then `cargo test --workspace ARGS`
  bench              measure boot, spawn, throughput and memory against `wasmtime run`
                     and `cat`, side by side, and write BENCHMARKS.md
  soak [--spawns N] [--calls N] [--connections N]
                     drive one release node with connections that open and close,
                     spawning children (default 100,000) and calling host.id()
                     (default 1,000,000), sampling ww's resident memory every second;
                     writes the Soak section of BENCHMARKS.md (not run in CI)
  fuzz [TARGET] [--seconds N] [--build-only]
                     run each cargo-fuzz target in fuzz/ (or TARGET) for N seconds
                     (default 60) from fuzz/corpus/ and fuzz/seeds/, printing its
                     executions; fails if any crashes (input in fuzz/artifacts/).
                     --build-only builds them. Installs cargo-fuzz if missing
  help               show this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let result = match (task.as_str(), rest.as_slice()) {
        ("images", []) => images::run(),
        ("codegen", []) => codegen::run(codegen::Mode::Write),
        ("codegen", ["--check"]) => codegen::run(codegen::Mode::Check),
        ("test", []) => test::run(&[]),
        ("bench", []) => bench::run(),
        ("test", ["--", extra @ ..]) => test::run(extra),
        ("soak", args) => soak::Options::parse(args).and_then(|options| soak::run(&options)),
        ("fuzz", args) => fuzz::Options::parse(args).and_then(|options| fuzz::run(&options)),
        ("help" | "--help" | "-h", _) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("xtask: unknown task or arguments: {}\n", args.join(" "));
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
