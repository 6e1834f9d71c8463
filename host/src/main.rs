//! The `ww` command line. See `ww --help` and README.md.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
