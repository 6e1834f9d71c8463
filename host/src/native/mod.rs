//! Native cells: programs that are not WebAssembly, run as jailed subprocesses.
//!
//! - [`select`]: is IMAGE a native program (an ELF file, a `#!` script, or an image whose
//!   `bin/` holds native programs chosen by Go's `{os}_{arch}` names)? The one place that
//!   decides.
//! - [`jail`]: the subprocess, in layers, all prepared in ww before the fork and set up by
//!   raw syscalls between fork and exec: new user, mount, network and PID namespaces (an
//!   init of its own reaps and forwards signals, [`pidns`]); its own root ([`root`]:
//!   `pivot_root` into read-only binds of the system directories, an allow-list of `/etc`,
//!   the program and its interpreter, the `--dir` grants at their guest paths, all bound from
//!   handles; a new `/proc`, a minimal `/dev`, private `/tmp` and `/dev/shm`; nothing of the
//!   host's `/run`, `/tmp` or sockets); `no_new_privs`; Landlock as a second layer over the
//!   same handles, no TCP, abstract Unix sockets and signals scoped ([`ruleset`]); a seccomp
//!   filter that refuses namespaces, mounts, ptrace, keyrings, bpf, io_uring
//!   ([`seccomp`]); no capabilities; only the granted environment; only stdio, fd 3 (the
//!   Cap'n Proto socket) and the fd grants at their targets.
//!
//! Every protection is reported ([`jail::Protections`]). One the kernel refuses fails the
//! run ([`NativeError::WeakJail`], exit status 125) unless the operator passed
//! `--allow-weak-jail`: then it is a warning. This module uses [`crate::fds`] and nothing
//! else in the crate; serving the membrane on fd 3 is the command line's business.

pub mod jail;
pub mod pidns;
pub mod root;
pub mod ruleset;
pub mod seccomp;
pub mod select;

use std::path::PathBuf;

pub use self::jail::{Jail, JailDir, Protections};
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

    /// A protection of the jail could not be set up, and the operator did not accept a
    /// weaker jail.
    #[error("cannot jail the native cell {}: {protection}: {reason}", path.display())]
    #[diagnostic(
        code(ww::native::weak_jail),
        help(
            "this kernel (or its configuration) refuses that protection: user namespaces, \
             Landlock and seccomp must be enabled. To run the cell anyway with less isolation, \
             pass --allow-weak-jail (or set WW_ALLOW_WEAK_JAIL=1): what did not hold is then a \
             warning"
        )
    )]
    WeakJail {
        /// The program.
        path: PathBuf,
        /// The protection, and the step that failed.
        protection: String,
        /// The kernel's reason.
        reason: String,
    },

    /// A `--dir` grant at a guest path a native cell cannot have one at.
    #[error("--dir ...::{guest}: a native cell cannot have a grant there")]
    #[diagnostic(
        code(ww::native::grant_path),
        help(
            "a native cell's grants are mounted in its own root: pick an absolute guest path \
             other than /, /proc or /dev (e.g. --dir ./data::/data)"
        )
    )]
    GrantPath {
        /// The guest path.
        guest: String,
    },
}
