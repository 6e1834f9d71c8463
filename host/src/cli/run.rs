//! `ww run`: boot an image as pid0 and exit with its status.

use std::path::PathBuf;

use miette::{Diagnostic, Report};
use ww::caps::{CellInfo, DirGrant, Filesystem};
use ww::cell::{self, CellConfig, Exit};
use ww::image::Image;
use ww::wasm;

/// `ww run [OPTIONS] <IMAGE> [ARGS]...`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Stack another layer on IMAGE (repeatable, in order): directories merge, files replace.
    #[arg(short = 'l', long = "layer", value_name = "IMAGE")]
    layers: Vec<PathBuf>,

    /// Set an environment variable for the cell (repeatable). WW_ENV=K=V,K2=V2 adds more;
    /// flags win over WW_ENV. Nothing else of the host's environment reaches the cell.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,

    /// Grant a host directory at GUEST (default: the host path made absolute), read-write
    /// unless `:ro` (repeatable). A grant at `/` replaces the image root.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]")]
    dirs: Vec<String>,

    /// The image: a directory holding bin/main.wasm, or a .wasm file.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    /// Arguments for the cell; argv[0] is the image's name. Everything after IMAGE goes here.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// A malformed `--env` or `WW_ENV` entry.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("bad {source_name} value `{value}`: expected KEY=VALUE with a non-empty KEY")]
#[diagnostic(
    code(ww::run::env),
    help("write -e KEY=VALUE (repeatable), or WW_ENV=KEY=VALUE,KEY2=VALUE2")
)]
struct EnvError {
    source_name: &'static str,
    value: String,
}

/// The cell's environment: `WW_ENV` entries, then `--env` flags, a later key replacing an
/// earlier one.
fn environment(ww_env: Option<&str>, flags: &[String]) -> Result<Vec<(String, String)>, EnvError> {
    let from_ww_env = ww_env
        .into_iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| ("WW_ENV", s));
    let from_flags = flags.iter().map(|s| ("--env", s.as_str()));
    let mut env: Vec<(String, String)> = Vec::new();
    for (source_name, entry) in from_ww_env.chain(from_flags) {
        let (key, value) = match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => (key, value),
            _ => {
                return Err(EnvError {
                    source_name,
                    value: entry.to_owned(),
                });
            }
        };
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }
    Ok(env)
}

/// A cell that trapped: what happened and to which cell.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cell `{cell}` trapped: {message}")]
#[diagnostic(
    code(ww::cell::trap),
    help("this is a fault in the guest program; run with -v for its wasm backtrace")
)]
struct Trapped {
    cell: String,
    message: String,
}

/// Runs `ww run`, returning the cell's exit status.
pub fn main(args: RunArgs) -> Result<u8, Report> {
    let ww_env = std::env::var("WW_ENV").ok();
    let env = environment(ww_env.as_deref(), &args.env)?;
    let grants = args
        .dirs
        .iter()
        .map(|d| d.parse::<DirGrant>())
        .collect::<Result<Vec<_>, _>>()?;

    let image = Image::load(&args.image, &args.layers)?;
    let filesystem = Filesystem::new(image.root(), &grants)?;
    let bytes = image.read_entrypoint()?;
    let engine = wasm::engine()?;
    let program = wasm::compile(&engine, image.entrypoint(), &bytes)?;
    let config = CellConfig::new(CellInfo::new(image.name(), filesystem))
        .args(args.args)
        .env(env);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            miette::miette!(code = "ww::runtime", "cannot start the async runtime: {e}")
        })?;
    let outcome = runtime.block_on(cell::run(&engine, &program, config));
    // A cell blocked reading stdin leaves a reader behind; do not wait for it.
    runtime.shutdown_background();

    let cell = image.name().to_owned();
    drop(image);
    let exit = outcome?;
    if let Exit::Trap { message, detail } = &exit {
        tracing::debug!(cell = %cell, "{detail}");
        let trapped = Trapped {
            cell,
            message: message.clone(),
        };
        eprintln!("{:?}", Report::new(trapped));
    }
    Ok(exit.status())
}

#[cfg(test)]
mod tests {
    use super::environment;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, val)| (k.to_string(), val.to_string()))
            .collect()
    }

    #[test]
    fn flags_win_over_ww_env() {
        let env = environment(Some("A=1,B=2"), &["B=3".into(), "C=x=y".into()]).unwrap();
        assert_eq!(env, pairs(&[("A", "1"), ("B", "3"), ("C", "x=y")]));
    }

    #[test]
    fn empty_values_are_kept_and_empty_entries_skipped() {
        let env = environment(Some("A=,,"), &[]).unwrap();
        assert_eq!(env, pairs(&[("A", "")]));
    }

    #[test]
    fn malformed_entries_name_their_source() {
        let err = environment(Some("NOPE"), &[]).unwrap_err();
        assert_eq!(err.source_name, "WW_ENV");
        let err = environment(None, &["=v".into()]).unwrap_err();
        assert_eq!(err.source_name, "--env");
    }
}
