//! `cargo xtask test [-- ARGS]`: every test, from a fresh machine, in one command.
//!
//! Steps, each under a short header:
//! 1. tools: install what is missing and can be installed (`capnp`, from Debian's
//!    `capnproto`, when running as root; otherwise the freshness check is skipped with a
//!    warning);
//! 2. images: `cargo xtask images` (installs the `wasm32-wasip2` target if needed);
//! 3. codegen: `cargo xtask codegen --check`;
//! 4. guest unit tests: the tests of `guest-sdk` and the guests, built for the machine's
//!    own target;
//! 5. workspace tests: `cargo test --workspace ARGS`.
//!
//! A failing step does not stop the later ones; the task fails at the end, naming every step
//! that failed.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{codegen, images, util};

/// Runs every step; `extra` goes to `cargo test --workspace`.
pub fn run(extra: &[&str]) -> Result<()> {
    let root = util::root()?;
    let steps = 5;
    let mut failed: Vec<&str> = Vec::new();
    let mut record = |name: &'static str, result: Result<()>| {
        if let Err(err) = result {
            eprintln!("xtask: {name} failed: {err:#}");
            failed.push(name);
        }
    };

    header(1, steps, "tools");
    let have_capnp = match install_capnp() {
        Ok(have) => have,
        Err(err) => {
            record("tools", Err(err));
            false
        }
    };

    header(2, steps, "images (cargo xtask images)");
    record("images", images::run());

    header(3, steps, "generated code (cargo xtask codegen --check)");
    if have_capnp {
        record("codegen", codegen::run(codegen::Mode::Check));
    } else {
        println!("warning: skipped: `capnp` is not installed (apt-get install capnproto)");
    }

    let mut counts = util::TestCounts::default();
    header(4, steps, "guest unit tests");
    record("guest unit tests", guest_tests(&root, &mut counts));

    header(5, steps, "workspace tests (cargo test --workspace)");
    let mut test = Command::new(util::cargo());
    test.current_dir(&root)
        .args(["test", "--workspace"])
        .args(extra);
    let (workspace, result) = util::run_tests(&mut test);
    counts.merge(workspace);
    record("workspace tests", result);

    let verdict = if failed.is_empty() {
        "all steps passed".to_owned()
    } else {
        format!("failed steps: {}", failed.join(", "))
    };
    println!("\nxtask: {verdict}");
    // The closing line CI and people read: every test counted across all steps.
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{verdict}")
    }
}

/// Prints a step's header.
fn header(n: usize, of: usize, title: &str) {
    println!("\n==> [{n}/{of}] {title}");
}

/// Makes sure `capnp` is on `PATH`, installing Debian's `capnproto` when we are root.
/// Returns whether `capnp` is available afterwards.
fn install_capnp() -> Result<bool> {
    if codegen::capnp_available() {
        println!("capnp: found");
        return Ok(true);
    }
    if !is_root() {
        println!(
            "warning: `capnp` is not installed and we are not root: the generated-code \
             freshness check will be skipped (install it with `apt-get install capnproto`)"
        );
        return Ok(false);
    }
    if !util::available("apt-get", "--version") {
        println!(
            "warning: `capnp` is not installed and there is no apt-get to install it with: \
             the generated-code freshness check will be skipped"
        );
        return Ok(false);
    }
    println!("capnp: missing, installing Debian's capnproto");
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "capnproto"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !codegen::capnp_available() {
        bail!("installed capnproto, but `capnp` is still not on PATH");
    }
    Ok(true)
}

/// Whether this process runs as root (owner of `/proc/self` is our effective uid).
#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether this process runs as root: never, off Unix.
#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// Runs the unit tests and doctests of the guests and of `guest-sdk` natively: their logic
/// (such as the shell's word splitting) needs no WebAssembly host, and no test calls into
/// `ww:host` (the doctests that would are compiled, not run).
fn guest_tests(root: &std::path::Path, counts: &mut util::TestCounts) -> Result<()> {
    let host = host_triple()?;
    for manifest in [
        root.join("guest-sdk").join("Cargo.toml"),
        root.join("guests").join("Cargo.toml"),
    ] {
        let mut cmd = Command::new(util::cargo());
        cmd.current_dir(root)
            .args(["test", "--target", &host, "--manifest-path"])
            .arg(manifest)
            .arg("--target-dir")
            .arg(root.join("target").join("guests"));
        let (ran, result) = util::run_tests(&mut cmd);
        counts.merge(ran);
        result?;
    }
    Ok(())
}

/// The machine's own Rust target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .context("cannot run `rustc -vV`")?;
    if !output.status.success() {
        bail!("`rustc -vV` failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|triple| triple.trim().to_owned())
        .context("`rustc -vV` printed no host line")
}
