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
//! 5. workspace tests: `cargo test --workspace ARGS` (after making the Python virtualenv
//!    of step 6, which the native-cell tests' probe uses), with a real IPFS node (js-ipfs from
//!    `tests/ipfs-node/`, installed with `npm ci` when missing, see `ipfs_node`) running
//!    offline on 127.0.0.1 and named by `WW_TEST_IPFS`; without node and npm a warning, and
//!    the IPFS tests skip. The node is stopped afterwards;
//! 6. Python interop tests: pycapnp clients against `ww run --rpc-socket` (`tests/python/`),
//!    in a virtualenv at `target/pyenv` created (with pycapnp and pytest) when missing;
//!    skipped with a warning only when `python3 -m venv` is unavailable. Their pytest counts
//!    join the totals.
//! 7. fuzz targets build and run briefly: `cargo xtask fuzz --seconds 5` (see `fuzz`), every
//!    cargo-fuzz target built and run five seconds from its seeds; a crash fails the step.
//!
//! A failing step does not stop the later ones; the task fails at the end, naming every step
//! that failed.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{codegen, fuzz, images, ipfs_node, util};

/// Runs every step; `extra` goes to `cargo test --workspace`.
pub fn run(extra: &[&str]) -> Result<()> {
    let root = util::root()?;
    let steps = 7;
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
    // The Python virtualenv (pycapnp, pytest) first: the native-cell tests run a Python
    // probe from it, and would otherwise be skipped on a fresh machine.
    if let Err(err) = python_env(&root) {
        println!("warning: no Python virtualenv yet ({err:#}); tests that need it will skip");
    }
    let node = match ipfs_node::start(&root) {
        Ok(node) => node,
        Err(err) => {
            record("ipfs test node", Err(err));
            None
        }
    };
    // Tests that cannot run here (a kernel feature, a missing tool) write why to this file
    // and return; they are counted as skipped, not passed.
    let skips = root.join("target").join("test-skips.txt");
    let _ = std::fs::remove_file(&skips);
    let mut test = Command::new(util::cargo());
    test.current_dir(&root)
        .args(["test", "--workspace"])
        .args(extra)
        .env("WW_TEST_SKIPS", &skips);
    match &node {
        Some(node) => test.env("WW_TEST_IPFS", &node.api),
        None => test.env_remove("WW_TEST_IPFS"),
    };
    let (mut workspace, result) = util::run_tests(&mut test, util::TestCounts::of_cargo_line);
    drop(node);
    workspace.move_skips(&skips);
    counts.merge(workspace);
    record("workspace tests", result);

    header(6, steps, "Python interop tests (pycapnp, tests/python)");
    record("python tests", python_tests(&root, &mut counts));

    header(
        7,
        steps,
        "fuzz targets build and run briefly (cargo xtask fuzz --seconds 5)",
    );
    record(
        "fuzz targets",
        fuzz::run(&fuzz::Options {
            target: None,
            seconds: 5,
            build_only: false,
        }),
    );

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
        let (ran, result) = util::run_tests(&mut cmd, util::TestCounts::of_cargo_line);
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

/// Where `cargo xtask test` keeps its Python virtualenv (under `target/`, so ignored by git).
const PYENV: &str = "target/pyenv";

/// What the virtualenv holds: the versions the tests were written against.
const PYTHON_PACKAGES: &[&str] = &["pycapnp==2.2.4", "pytest==9.2.0"];

/// The Python of the project's virtualenv (pycapnp and pytest), created when missing;
/// `None` when `python3 -m venv` cannot run here.
pub fn python_env(root: &std::path::Path) -> Result<Option<std::path::PathBuf>> {
    let venv = root.join(PYENV);
    let python = venv.join("bin").join("python");
    let ready = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import capnp, pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        if !create_venv(&venv)? {
            return Ok(None);
        }
        util::run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PYTHON_PACKAGES),
        )
        .context("installing pycapnp and pytest into the virtualenv failed")?;
    }
    Ok(Some(python))
}

/// Runs `tests/python` with pytest in the virtualenv, creating it when missing, and adds
/// pytest's counts to `counts`. Skips, with a warning, when `python3 -m venv` cannot run.
fn python_tests(root: &std::path::Path, counts: &mut util::TestCounts) -> Result<()> {
    let Some(python) = python_env(root)? else {
        println!(
            "warning: skipped: `python3 -m venv` is not available (Debian: apt-get install \
             python3-venv), so the pycapnp interop tests cannot run"
        );
        return Ok(());
    };
    // The tests run the debug binary, which `cargo test` built; make sure it is there.
    util::run(
        Command::new(util::cargo())
            .current_dir(root)
            .args(["build", "--quiet", "-p", "ww"]),
    )?;
    let mut cmd = Command::new(&python);
    cmd.current_dir(root)
        .args([
            "-m",
            "pytest",
            "tests/python",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ])
        .env("WW_BIN", root.join("target").join("debug").join("ww"));
    // Pytest's summary line (`2 passed, 1 skipped in 0.41s`) is its count.
    let (ran, result) = util::run_tests(&mut cmd, pytest_summary);
    counts.merge(ran);
    result
}

/// Creates the virtualenv at `venv` (with `python3 -m venv`; as root on Debian, installing
/// `python3-venv` first when it is missing). Whether there is one now.
fn create_venv(venv: &std::path::Path) -> Result<bool> {
    let attempt = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(venv)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if attempt() {
        return Ok(true);
    }
    if !util::available("python3", "--version") {
        return Ok(false);
    }
    if is_root() && util::available("apt-get", "--version") {
        println!("python3 -m venv failed: installing Debian's python3-venv");
        let installed = util::run(
            Command::new("apt-get")
                .args(["install", "-y", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
        if installed.is_ok() && attempt() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The counts of a pytest summary line, such as `1 failed, 2 passed, 1 skipped in 0.5s`
/// (possibly between `=` rules); `None` for any other line.
fn pytest_summary(line: &str) -> Option<util::TestCounts> {
    let line = line.trim().trim_matches('=').trim();
    let (parts, time) = line.rsplit_once(" in ")?;
    if !time.trim_end().ends_with('s') {
        return None;
    }
    let mut counts = util::TestCounts::default();
    let mut any = false;
    for part in parts.split(", ") {
        let (n, what) = part.trim().split_once(' ')?;
        let n: u64 = n.parse().ok()?;
        match what {
            "passed" | "xfailed" => counts.passed += n,
            "failed" | "error" | "errors" | "xpassed" => counts.failed += n,
            "skipped" => counts.ignored += n,
            "deselected" | "warning" | "warnings" => {}
            _ => return None,
        }
        any = true;
    }
    any.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::pytest_summary;

    #[test]
    fn reads_pytest_summaries() {
        let c = pytest_summary("2 passed in 0.41s").unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (2, 0, 0));
        let c =
            pytest_summary("==== 1 failed, 3 passed, 2 skipped, 1 error in 1.20s ====").unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (3, 2, 2));
        assert!(pytest_summary("tests/python/test_membrane.py ..").is_none());
        assert!(pytest_summary("the bytes in 3s").is_none());
    }
}
