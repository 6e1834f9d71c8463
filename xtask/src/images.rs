//! `cargo xtask images`: builds every guest in `guests/` for `wasm32-wasip2` and installs it
//! as `examples/images/<name>/bin/main.wasm`, and the guests other images spawn as
//! `examples/images/<image>/usr/lib/<guest>.wasm` (see [`LIBRARIES`]).
//!
//! The guests form their own workspace, built into `target/guests` so that they never share
//! (or invalidate) the host's build. A `wasm32-wasip2` binary is already a component. An
//! image is rewritten only when its bytes change, so a run with nothing to do takes as long
//! as cargo's own no-op build.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The Rust target guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Guests installed into other images as child programs: `(guest, image)` puts the guest's
/// component at `examples/images/<image>/usr/lib/<guest>.wasm` (ignored by git, as every
/// `*.wasm` is).
const LIBRARIES: &[(&str, &str)] = &[
    ("child-echo", "pid0"),
    ("child-echo", "shell"),
    ("child-echo", "testbed"),
];

/// Builds the guests and installs the images.
pub fn run() -> Result<()> {
    let root = util::root()?;
    ensure_target()?;

    let guests = guest_names(&root)?;
    if guests.is_empty() {
        bail!("no guests found in {}", root.join("guests").display());
    }

    let manifest = root.join("guests").join("Cargo.toml");
    let target_dir = root.join("target").join("guests");
    let mut build = Command::new(util::cargo());
    build
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    util::run(&mut build).context("building the guests failed")?;

    let out_dir = target_dir.join(TARGET).join("release");
    let images = root.join("examples").join("images");
    let built = |name: &str| -> Result<Vec<u8>> {
        let path = out_dir.join(format!("{name}.wasm"));
        std::fs::read(&path)
            .with_context(|| format!("cannot read the built guest {}", path.display()))
    };
    // What was already installed, by its path under examples/images/ (an entrypoint by its
    // image's name alone).
    let mut unchanged = Vec::new();
    let mut install = |within: &str, bytes: &[u8]| -> Result<()> {
        let dest = images.join(within);
        if util::write_if_changed(&dest, bytes)? {
            let shown = util::relative(&root, &dest).display().to_string();
            println!("wrote {shown} ({} bytes)", bytes.len());
        } else {
            let name = within.strip_suffix("/bin/main.wasm").unwrap_or(within);
            unchanged.push(name.to_owned());
        }
        Ok(())
    };
    for name in &guests {
        install(&format!("{name}/bin/main.wasm"), &built(name)?)?;
    }
    for (guest, image) in LIBRARIES {
        if !guests.iter().any(|name| name == guest) {
            bail!("{image} needs the guest {guest}, which guests/ does not have");
        }
        install(&format!("{image}/usr/lib/{guest}.wasm"), &built(guest)?)?;
    }
    if !unchanged.is_empty() {
        println!("up to date: {}", unchanged.join(", "));
    }
    Ok(())
}

/// The guest crates: each directory of `guests/` with a `Cargo.toml`, by name. Each is a
/// binary named like its directory, so cargo writes `<name>.wasm`.
fn guest_names(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("guests");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path: PathBuf = entry.path();
        if path.join("Cargo.toml").is_file() {
            let name = entry.file_name().into_string().map_err(|name| {
                anyhow::anyhow!(
                    "guest directory name is not UTF-8: {}",
                    name.to_string_lossy()
                )
            })?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Makes sure the Rust standard library for [`TARGET`] is installed, adding it with rustup
/// when it is missing (`RUSTUP_AUTO_INSTALL=0` means nothing else will).
pub fn ensure_target() -> Result<()> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let output = match listed {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Without rustup the toolchain may still carry the target (a distribution's
            // Rust, say); only fail when it does not.
            if sysroot_has_target()? {
                return Ok(());
            }
            bail!(
                "`rustup` is not installed and the Rust toolchain has no {TARGET} standard \
                 library: install rustup (https://rustup.rs) and run \
                 `rustup target add {TARGET}`, or install your toolchain's {TARGET} target"
            );
        }
        Err(e) => return Err(e).context("cannot run `rustup target list --installed`"),
    };
    if !output.status.success() {
        bail!(
            "`rustup target list --installed` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    println!("installing the {TARGET} target: rustup target add {TARGET}");
    util::run(Command::new("rustup").args(["target", "add", TARGET]))
        .with_context(|| format!("cannot install the {TARGET} target"))
}

/// Whether the active toolchain's sysroot holds a standard library for [`TARGET`].
fn sysroot_has_target() -> Result<bool> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run `rustc --print sysroot`")?;
    if !output.status.success() {
        bail!("`rustc --print sysroot` failed ({})", output.status);
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(sysroot.join("lib").join("rustlib").join(TARGET).is_dir())
}
