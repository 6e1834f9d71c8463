//! Tracing output on stderr, set by `-v`/`-q` unless `RUST_LOG` says otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set and valid, wins over the flags.
pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // libp2p warns of what a peer did wrong, which ww handles: not the user's concern.
        (false, 0) => "warn,libp2p=error,quinn=error,yamux=error,multistream_select=error",
        (false, 1) => "ww=debug,info",
        (false, _) => "ww=trace,debug",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(true)
        .without_time()
        .try_init();
}
