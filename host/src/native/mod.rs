//! Native cells: programs that are not WebAssembly, run as jailed subprocesses.
//!
//! - [`select`]: is IMAGE a native program (an ELF file, a `#!` script, or an image whose
//!   `bin/` holds native programs chosen by Go's `{os}_{arch}` names)? The one place that
//!   decides.
//! - [`jail`]: the subprocess: a private jail directory as its working directory, new user,
//!   mount and network namespaces where the kernel allows, `no_new_privs`, Landlock, only the
//!   granted environment, and only stdio, fd 3 (the Cap'n Proto socket) and the fd grants at
//!   their targets.
//!
//! Every protection is tried and reported ([`jail::Protections`]); one the kernel refuses is
//! a warning, never a failed run. This module uses [`crate::fds`] and nothing else in the
//! crate; serving the membrane on fd 3 is the command line's business.

pub mod jail;
pub mod select;

use std::path::PathBuf;

pub use self::jail::{Jail, Protections};
pub use self::select::{NativeProgram, detect, host_arch, host_os};

/// What can go wrong finding or starting a native cell.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum NativeError {
    /// An image directory without bin/main.wasm and without a native program for this host.
    #[error("no executable found in IMAGE directory {}: searched {}", image.display(), searched.join(", "))]
    #[diagnostic(
        code(ww::native::none),
        help(
            "put bin/main.wasm, or a program at bin/{{os}}_{{arch}}/<prog> (Go's names, e.g. \
             linux_amd64; override with WW_OS and WW_ARCH), or a single program directly in bin/"
        )
    )]
    NoExecutable {
        /// The image directory.
        image: PathBuf,
        /// What was looked at, in order.
        searched: Vec<String>,
    },

    /// More than one program where one was expected.
    #[error("more than one program in {}: {}", dir.display(), found.join(", "))]
    #[diagnostic(
        code(ww::native::ambiguous),
        help("leave exactly one executable file in that directory")
    )]
    Ambiguous {
        /// The directory searched.
        dir: PathBuf,
        /// The candidates.
        found: Vec<String>,
    },

    /// A native program without the executable bit.
    #[error("{} is a native program but is not executable", path.display())]
    #[diagnostic(code(ww::native::mode), help("make it executable: chmod +x {}", path.display()))]
    NotExecutable {
        /// The program.
        path: PathBuf,
    },

    /// Layers apply to WebAssembly images only.
    #[error("--layer cannot be used with the native program {}", path.display())]
    #[diagnostic(
        code(ww::native::layers),
        help("layers stack WebAssembly images; run the native program without --layer")
    )]
    Layers {
        /// The program.
        path: PathBuf,
    },

    /// The image could not be read.
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(
        code(ww::native::io),
        help("check that the path exists and is readable")
    )]
    Io {
        /// What was read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The jail could not be made or the program not started.
    #[error("cannot start the native cell {}: {what}: {source}", path.display())]
    #[diagnostic(
        code(ww::native::spawn),
        help(
            "check that the program runs on this host (its interpreter exists, its format matches)"
        )
    )]
    Spawn {
        /// The program.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}
