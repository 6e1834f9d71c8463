//! Which program IMAGE names, when it is native: the one place that decides.
//!
//! - A file that starts with the ELF magic or `#!` is a native program (it must be
//!   executable); a wasm file, a file named `*.wasm`, a missing path or any other file is
//!   left to [`crate::image`].
//! - A directory with `bin/main.wasm` is a WebAssembly image. Otherwise its program is the
//!   single executable in `bin/{os}_{arch}/` (Go's `GOOS`/`GOARCH` names for this host,
//!   overridden by `WW_OS` and `WW_ARCH`), else the single executable directly in `bin/`.
//!   A directory without `bin/` is left to [`crate::image`] (which reports the missing
//!   entrypoint).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::NativeError;

/// A native program to run as a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeProgram {
    /// The program file, canonical.
    pub path: PathBuf,
    /// The cell's name and `argv[0]`: the image directory's or the file's name.
    pub name: String,
    /// The image directory, for an image (readable by the cell).
    pub root: Option<PathBuf>,
    /// The interpreter of a `#!` script, as its first line names it.
    pub interpreter: Option<PathBuf>,
}

/// Go's `GOOS` for `os` (a `std::env::consts::OS` value).
pub fn go_os(os: &str) -> &str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's `GOARCH` for `arch` (a `std::env::consts::ARCH` value).
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "wasm32" => "wasm",
        other => other,
    }
}

/// The host's OS in Go's names, or `WW_OS`.
pub fn host_os() -> String {
    std::env::var("WW_OS")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| go_os(std::env::consts::OS).to_owned())
}

/// The host's architecture in Go's names, or `WW_ARCH`.
pub fn host_arch() -> String {
    std::env::var("WW_ARCH")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| go_arch(std::env::consts::ARCH).to_owned())
}

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
enum Magic {
    Wasm,
    Elf,
    Script(Option<PathBuf>),
    Other,
}

fn magic(path: &Path) -> Result<Magic, NativeError> {
    let io = |source| NativeError::Io {
        path: path.to_owned(),
        source,
    };
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(path)
        .map_err(io)?
        .take(256)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(if head.starts_with(b"\0asm") {
        Magic::Wasm
    } else if head.starts_with(b"\x7fELF") {
        Magic::Elf
    } else if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let interpreter = String::from_utf8_lossy(line)
            .split_whitespace()
            .next()
            .map(PathBuf::from);
        Magic::Script(interpreter)
    } else {
        Magic::Other
    })
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cell".to_owned())
}

/// The program at `path` if it is native: `Ok(None)` for wasm and anything unknown.
fn program_file(
    path: &Path,
    name: String,
    root: Option<PathBuf>,
) -> Result<Option<NativeProgram>, NativeError> {
    let interpreter = match magic(path)? {
        Magic::Elf => None,
        Magic::Script(interpreter) => interpreter,
        Magic::Wasm | Magic::Other => return Ok(None),
    };
    if !executable(path) {
        return Err(NativeError::NotExecutable {
            path: path.to_owned(),
        });
    }
    let canonical = path.canonicalize().map_err(|source| NativeError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(NativeProgram {
        path: canonical,
        name,
        root,
        interpreter,
    }))
}

/// The executable files directly in `dir`, sorted; none if it is not a directory.
fn executables(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| executable(p))
        .collect();
    found.sort();
    found
}

/// The native program IMAGE names, if it names one (see the module's docs), with `os` and
/// `arch` in Go's names.
pub fn detect_for(
    image: &Path,
    os: &str,
    arch: &str,
) -> Result<Option<NativeProgram>, NativeError> {
    // A missing image, or a file named .wasm, is the image module's to report.
    let Ok(meta) = std::fs::metadata(image) else {
        return Ok(None);
    };
    if meta.is_file() && image.extension().is_some_and(|e| e == "wasm") {
        return Ok(None);
    }
    if meta.is_file() {
        return program_file(image, name_of(image), None);
    }
    let bin = image.join("bin");
    if image.join(crate_entrypoint()).exists() || !bin.is_dir() {
        return Ok(None);
    }
    let root = image.canonicalize().map_err(|source| NativeError::Io {
        path: image.to_owned(),
        source,
    })?;
    let name = name_of(&root);
    let platform = bin.join(format!("{os}_{arch}"));
    let mut searched = Vec::new();
    for dir in [&platform, &bin] {
        searched.push(format!("{}/", dir.display()));
        match executables(dir).as_slice() {
            [] => continue,
            [one] => {
                return match program_file(one, name.clone(), Some(root.clone()))? {
                    Some(program) => Ok(Some(program)),
                    None => Err(NativeError::NoExecutable {
                        image: image.to_owned(),
                        searched: vec![format!("{} (not ELF or #!)", one.display())],
                    }),
                };
            }
            many => {
                return Err(NativeError::Ambiguous {
                    dir: dir.clone(),
                    found: many.iter().map(|p| name_of(p)).collect(),
                });
            }
        }
    }
    searched.insert(0, format!("{}", image.join(crate_entrypoint()).display()));
    Err(NativeError::NoExecutable {
        image: image.to_owned(),
        searched,
    })
}

/// [`detect_for`] with this host's names (or `WW_OS`, `WW_ARCH`).
pub fn detect(image: &Path) -> Result<Option<NativeProgram>, NativeError> {
    detect_for(image, &host_os(), &host_arch())
}

/// The WebAssembly entrypoint's path in an image.
fn crate_entrypoint() -> &'static str {
    // Kept beside the image module's constant; `image` must not depend on `native`, nor
    // the reverse, so the string is repeated (a unit test checks they agree).
    "bin/main.wasm"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, data: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn go_names() {
        assert_eq!(go_os("linux"), "linux");
        assert_eq!(go_os("macos"), "darwin");
        assert_eq!(go_os("windows"), "windows");
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("x86"), "386");
        assert_eq!(crate_entrypoint(), crate::image::ENTRYPOINT);
    }

    #[test]
    fn files_by_magic() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        write(&script, b"#!/bin/sh -e\necho\n", 0o755);
        let p = detect_for(&script, "linux", "amd64").unwrap().unwrap();
        assert_eq!(p.interpreter.as_deref(), Some(Path::new("/bin/sh")));
        assert_eq!(p.name, "s");
        let wasm = dir.path().join("w.wasm");
        write(&wasm, b"\0asm\x01\0\0\0", 0o755);
        assert_eq!(detect_for(&wasm, "linux", "amd64").unwrap(), None);
        let plain = dir.path().join("n");
        write(&plain, b"#!/bin/sh\n", 0o644);
        assert!(matches!(
            detect_for(&plain, "linux", "amd64"),
            Err(NativeError::NotExecutable { .. })
        ));
    }

    #[test]
    fn go_style_bin_directories() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("app");
        write(&img.join("bin/linux_amd64/prog"), b"#!/bin/sh\n", 0o755);
        write(&img.join("bin/linux_arm64/prog"), b"#!/bin/sh\n", 0o755);
        let p = detect_for(&img, "linux", "arm64").unwrap().unwrap();
        assert!(p.path.ends_with("bin/linux_arm64/prog"));
        assert_eq!(p.name, "app");
        let err = detect_for(&img, "plan9", "mips").unwrap_err();
        assert!(
            err.to_string()
                .contains("no executable found in IMAGE directory"),
            "{err}"
        );
        assert!(err.to_string().contains("plan9_mips"), "{err}");
        write(&img.join("bin/single"), b"#!/bin/sh\n", 0o755);
        let p = detect_for(&img, "plan9", "mips").unwrap().unwrap();
        assert!(p.path.ends_with("bin/single"));
        write(&img.join("bin/main.wasm"), b"\0asm", 0o644);
        assert_eq!(detect_for(&img, "linux", "amd64").unwrap(), None);
    }
}
