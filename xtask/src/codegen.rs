//! `cargo xtask codegen [--check]`: the Rust code for the Cap'n Proto schemas.
//!
//! Every `capnp/<name>.capnp` compiles (with `capnpc`, which needs the `capnp` schema
//! compiler on `PATH`) into `host/src/rpc/schema/<name>_capnp.rs`, as module
//! `crate::rpc::schema::<name>_capnp`, formatted with `rustfmt --edition 2024` so that
//! `cargo fmt` leaves it alone. Next to them it writes `host/src/rpc/schema/methods.rs`,
//! every method of every interface by name (what `ww::rpc`'s attenuation resolves
//! `allow(["get"])` through), from the compiler's `CodeGeneratorRequest` (`capnp compile
//! -o-`), not from the schemas' text. The output is committed, so building `ww` never needs
//! `capnp`; `--check` regenerates into a scratch directory under `target/` and fails when the
//! committed files are stale.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use capnp::schema_capnp::{code_generator_request, node};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util;

/// Where the committed generated code lives, relative to the repository root.
const OUT_DIR: &str = "host/src/rpc/schema";

/// Suffix of generated files (`host.capnp` gives `host_capnp.rs`).
const GENERATED_SUFFIX: &str = "_capnp.rs";

/// The generated method table, next to the `*_capnp.rs` files.
const METHODS_FILE: &str = "methods.rs";

/// Whether to write the generated code or only compare it with the committed files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Regenerate `host/src/rpc/schema/*_capnp.rs` in place.
    Write,
    /// Fail if regenerating would change anything.
    Check,
}

/// Regenerates the code, or checks that it is fresh.
pub fn run(mode: Mode) -> Result<()> {
    let root = util::root()?;
    if !capnp_available() {
        bail!(
            "the Cap'n Proto schema compiler `capnp` is not on PATH; install it with \
             `apt-get install capnproto` (Debian/Ubuntu; other systems: \
             https://capnproto.org/install.html)"
        );
    }
    let schemas = schemas(&root)?;
    let committed_dir = root.join(OUT_DIR);
    match mode {
        Mode::Write => {
            let scratch = scratch_dir(&root, "codegen")?;
            let generated = generate(&root, &schemas, &scratch)?;
            for file in &generated {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let dest = committed_dir.join(file_name(file)?);
                let rel = util::relative(&root, &dest).display();
                if util::write_if_changed(&dest, &bytes)? {
                    println!("wrote {rel}");
                } else {
                    println!("up to date: {rel}");
                }
            }
            remove_scratch(&scratch);
            Ok(())
        }
        Mode::Check => {
            let scratch = scratch_dir(&root, "codegen-check")?;
            let generated = generate(&root, &schemas, &scratch)?;
            let stale = compare(&root, &generated, &committed_dir)?;
            remove_scratch(&scratch);
            if stale.is_empty() {
                println!(
                    "generated code is fresh: {} schema(s) in capnp/ match {OUT_DIR}/",
                    schemas.len()
                );
                Ok(())
            } else {
                bail!(
                    "generated Cap'n Proto code is stale:\n{}\nregenerate it with \
                     `cargo xtask codegen` (delete files whose schema is gone) and commit \
                     the result",
                    stale
                        .iter()
                        .map(|s| format!("  {s}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
}

/// Whether `capnp` can be run.
pub fn capnp_available() -> bool {
    util::available("capnp", "--version")
}

/// Every `capnp/*.capnp`, sorted.
fn schemas(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("capnp");
    let mut schemas = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "capnp") && path.is_file() {
            schemas.push(path);
        }
    }
    if schemas.is_empty() {
        bail!("no *.capnp schemas in {}", dir.display());
    }
    schemas.sort();
    Ok(schemas)
}

/// A fresh, empty directory `target/xtask/<name>`.
fn scratch_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join("target").join("xtask").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Removes a scratch directory; a leftover one under `target/` does no harm.
fn remove_scratch(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// The final component of `path`, as text.
fn file_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("odd file name: {}", path.display()))
}

/// Compiles `schemas` into `out`, formats the result, and returns the generated files.
fn generate(root: &Path, schemas: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    let mut command = capnpc::CompilerCommand::new();
    command
        .src_prefix(root.join("capnp"))
        .output_path(out)
        .default_parent_module(vec!["rpc".into(), "schema".into()]);
    for schema in schemas {
        command.file(schema);
    }
    command
        .run()
        .map_err(|e| anyhow!("{e}"))
        .context("compiling the Cap'n Proto schemas failed")?;

    let mut generated = Vec::new();
    for schema in schemas {
        let stem = schema
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("odd schema name: {}", schema.display()))?;
        let file = out.join(format!("{stem}{GENERATED_SUFFIX}"));
        if !file.is_file() {
            bail!(
                "capnpc did not produce {} for {}",
                file.display(),
                schema.display()
            );
        }
        generated.push(file);
    }
    let methods = out.join(METHODS_FILE);
    std::fs::write(&methods, methods_rs(&interfaces(root, schemas)?))
        .with_context(|| format!("cannot write {}", methods.display()))?;
    generated.push(methods);
    rustfmt(root, &generated)?;
    Ok(generated)
}

/// One interface of the schemas, with its methods' names in ordinal order.
struct Interface {
    /// Its type id.
    id: u64,
    /// Its name within its file (`Outer.Inner` when nested).
    name: String,
    /// Its methods' names; a method's index is its ordinal (`@N`).
    methods: Vec<String>,
}

/// Every interface of `schemas` (and of what they import), sorted by name, as the schema
/// compiler describes them in its `CodeGeneratorRequest`.
fn interfaces(root: &Path, schemas: &[PathBuf]) -> Result<Vec<Interface>> {
    let output = Command::new("capnp")
        .arg("compile")
        .arg("-o-")
        .arg("--src-prefix")
        .arg(root.join("capnp"))
        .args(schemas)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run `capnp compile -o-`")?;
    if !output.status.success() {
        bail!("`capnp compile -o-` failed ({})", output.status);
    }
    let mut options = capnp::message::ReaderOptions::new();
    // The request describes every node of every schema: far beyond the default limit for a
    // large schema set, and it comes from our own compiler.
    options.traversal_limit_in_words(None);
    let message = capnp::serialize::read_message(output.stdout.as_slice(), options)
        .context("reading the CodeGeneratorRequest of `capnp compile -o-`")?;
    let request: code_generator_request::Reader<'_> = message
        .get_root()
        .context("reading the CodeGeneratorRequest of `capnp compile -o-`")?;
    let mut interfaces = Vec::new();
    for node in request.get_nodes()? {
        let node::Interface(interface) = node.which()? else {
            continue;
        };
        let display = node.get_display_name()?.to_str()?;
        // `file.capnp:Outer.Inner`: the name within the file, however deeply nested.
        let name = display.split_once(':').map_or(display, |(_, name)| name);
        // Methods come in ordinal order (schema.capnp: "Methods ordered by ordinal").
        let methods = interface
            .get_methods()?
            .iter()
            .map(|method| Ok(method.get_name()?.to_str()?.to_owned()))
            .collect::<Result<Vec<_>>>()?;
        interfaces.push(Interface {
            id: node.get_id(),
            name: name.to_owned(),
            methods,
        });
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(interfaces)
}

/// The text of `methods.rs` for `interfaces` (before rustfmt).
fn methods_rs(interfaces: &[Interface]) -> String {
    let mut entries = String::new();
    for interface in interfaces {
        for (id, method) in interface.methods.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = writeln!(
                entries,
                "Method {{ interface_id: {:#018x}, interface: {:?}, name: {:?}, id: {id} }},",
                interface.id, interface.name, method
            );
        }
    }
    format!(
        r#"//! Every method of every interface in `capnp/*.capnp`, by name and ordinal: generated
//! by `cargo xtask codegen` from the schema compiler's `CodeGeneratorRequest`. Do not edit
//! by hand.
//!
//! A policy names methods by number (`Method` in `capnp/membrane.capnp`); this table lets
//! code name them as the schema does (`allow(["get"])`).

/// One method of an interface, as Cap'n Proto numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {{
    /// The interface's type id (`HasTypeId::TYPE_ID` of its generated client).
    pub interface_id: u64,
    /// The interface's name in its schema file (`Outer.Inner` when nested).
    pub interface: &'static str,
    /// The method's name in the schema.
    pub name: &'static str,
    /// The method's ordinal (`@N` in the schema).
    pub id: u16,
}}

/// Every method of every interface, interfaces sorted by name, methods by ordinal.
pub const METHODS: &[Method] = &[
{entries}];

/// The ordinal of the method `name` of the interface `interface_id`, or `None` when the
/// table has no such method.
pub fn method_id(interface_id: u64, name: &str) -> Option<u16> {{
    METHODS
        .iter()
        .find(|m| m.interface_id == interface_id && m.name == name)
        .map(|m| m.id)
}}

/// The name of the interface `interface_id`, or `None` when the table has no method of it.
pub fn interface_name(interface_id: u64) -> Option<&'static str> {{
    METHODS
        .iter()
        .find(|m| m.interface_id == interface_id)
        .map(|m| m.interface)
}}
"#
    )
}

/// Formats `files` as `cargo fmt` would format them inside the host crate.
fn rustfmt(root: &Path, files: &[PathBuf]) -> Result<()> {
    let mut cmd = Command::new("rustfmt");
    cmd.args(["--edition", "2024"]);
    // The files sit in a scratch directory, outside the repository: hand rustfmt the
    // configuration it would find for their committed location, if there is one.
    if let Some(config) = rustfmt_config(root) {
        cmd.arg("--config-path").arg(config);
    }
    cmd.args(files);
    util::run(&mut cmd).context("formatting the generated code failed (is rustfmt installed?)")
}

/// The `rustfmt.toml` or `.rustfmt.toml` nearest to [`OUT_DIR`], up to the root.
fn rustfmt_config(root: &Path) -> Option<PathBuf> {
    let mut dir = root.join(OUT_DIR);
    loop {
        for name in ["rustfmt.toml", ".rustfmt.toml"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
        if dir == root || !dir.pop() {
            return None;
        }
    }
}

/// Compares fresh output with the committed files; returns what is stale, one line each.
fn compare(root: &Path, generated: &[PathBuf], committed_dir: &Path) -> Result<Vec<String>> {
    let mut stale = Vec::new();
    let mut expected = Vec::new();
    for file in generated {
        let name = file_name(file)?;
        expected.push(name.to_owned());
        let fresh =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let committed_path = committed_dir.join(name);
        let rel = util::relative(root, &committed_path).display().to_string();
        match std::fs::read(&committed_path) {
            Ok(committed) if committed == fresh => {}
            Ok(_) => stale.push(format!("{rel} differs from what its schema generates")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stale.push(format!("{rel} is missing"))
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", committed_path.display()));
            }
        }
    }
    // Generated files whose schema is gone.
    if committed_dir.is_dir() {
        let entries = std::fs::read_dir(committed_dir)
            .with_context(|| format!("cannot list {}", committed_dir.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot list {}", committed_dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(GENERATED_SUFFIX) && !expected.contains(&name) {
                let rel = util::relative(root, &entry.path()).display().to_string();
                stale.push(format!("{rel} has no schema in capnp/ (delete it)"));
            }
        }
    }
    Ok(stale)
}
