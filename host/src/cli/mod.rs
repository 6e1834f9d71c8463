//! Command-line parsing and rendering: one module per subcommand, plus logging setup.
//!
//! Exit status: a cell's own exit code; 134 when it traps; 125 when `ww` itself fails (a bad
//! flag, a missing image, a binary it cannot run), as `docker run` does.

mod cache;
mod export;
mod fd;
mod ipfs;
mod keygen;
mod logging;
mod net;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ww's own state directory: `$WW_CACHE_DIR`, else `$XDG_CACHE_HOME/ww`, else
/// `~/.cache/ww`. It holds compiled programs, the IPFS cache and merged images; no cell may
/// be granted it writable. There is no fallback in the shared temporary directory, where a
/// cell of another run granted that directory could rewrite it: without one, what needs it
/// fails with [`NoStateDir`].
pub(crate) fn state_dir() -> Result<std::path::PathBuf, NoStateDir> {
    ww::executor::cache::CompileCache::default_dir().ok_or(NoStateDir)
}

/// Where merged images are made: a private (0700) directory inside [`state_dir`].
pub(crate) fn images_dir() -> Result<std::path::PathBuf, NoStateDir> {
    Ok(state_dir()?.join("images"))
}

/// Neither `WW_CACHE_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("ww has no state directory: WW_CACHE_DIR, XDG_CACHE_HOME and HOME are all unset")]
#[diagnostic(
    code(ww::state_dir),
    help(
        "set WW_CACHE_DIR to a directory of this user's that no cell is granted (ww keeps \
         merged images and its IPFS cache there)"
    )
)]
pub(crate) struct NoStateDir;

/// The status for errors of `ww` itself, as opposed to a cell's.
pub const WW_ERROR: u8 = 125;

/// ww: a capability-secure runtime for WebAssembly cells.
#[derive(Debug, Parser)]
#[command(name = "ww", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot IMAGE as pid0; ARGS go to the cell.
    Run(Box<run::RunArgs>),
    /// Add a file or directory to IPFS and print its /ipfs/<cid>.
    Export(export::ExportArgs),
    /// Write a new node identity (an ed25519 key) to PATH and print its peer id.
    Keygen(keygen::KeygenArgs),
    /// Show what ww keeps in its state directory (compiled code, IPFS content, merged
    /// images); `prune` or `clear` it.
    Cache(cache::CacheArgs),
}

/// Renders diagnostics for a person on a terminal, and unwrapped (one line per message,
/// easy to grep) otherwise.
fn install_error_renderer() {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(terminal)
                .build(),
        )
    }));
}

/// Parses the command line, runs it, and turns the outcome into `ww`'s exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { WW_ERROR } else { 0 });
        }
    };
    logging::init(cli.verbose, cli.quiet);
    install_error_renderer();
    let result = match cli.command {
        Command::Run(mut args) => {
            args.quiet = cli.quiet;
            run::main(*args)
        }
        Command::Export(args) => export::main(args),
        Command::Keygen(args) => keygen::main(args),
        Command::Cache(args) => cache::main(args),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(WW_ERROR)
        }
    }
}
