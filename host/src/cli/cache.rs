//! `ww cache`: what ww keeps in its state directory (compiled code, fetched IPFS content,
//! merged images), and pruning or clearing it; and the size caps `ww run` applies, from
//! `WW_CACHE_MAX` and `WW_IPFS_CACHE_MAX`.
//!
//! Everything `ww cache` removes, ww rebuilds when it needs it again: compiled code is
//! recompiled, IPFS content fetched again. What a running `ww` uses is never removed: an
//! IPFS entry or a merged image it holds is skipped (and compiled code it has loaded stays
//! mapped in it even when its file goes).

use std::path::Path;

use miette::{Diagnostic, Report};
use ww::executor::cache::{CacheLimits, disk};
use ww::ipfs::cache as ipfs_cache;

/// `ww cache [show | prune [--max SIZE] | clear]`
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: Option<CacheCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum CacheCommand {
    /// Print where the state directory is and what each cache holds (the default).
    Show,
    /// Evict least recently used entries until each cache holds at most SIZE (default:
    /// its cap), and remove merged images left by a ww that was killed.
    Prune {
        /// The most each cache may hold afterwards, e.g. 100MiB or 0 (default: the caps,
        /// WW_CACHE_MAX and WW_IPFS_CACHE_MAX).
        #[arg(long, value_name = "SIZE")]
        max: Option<String>,
    },
    /// Remove everything ww can rebuild: compiled code, fetched IPFS content and merged
    /// images, except what a running ww uses.
    Clear,
}

/// The variable capping the compiled code on disk.
pub const CODE_MAX_VAR: &str = "WW_CACHE_MAX";

/// The variable capping the IPFS cache.
pub const IPFS_MAX_VAR: &str = "WW_IPFS_CACHE_MAX";

/// A size ww cannot read, from the command line or the environment.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("bad {what} `{value}`: {reason}")]
#[diagnostic(
    code(ww::cache::size),
    help("write a size such as 512MiB, 2GiB or 0 (units: B, KiB, MiB, GiB)")
)]
pub struct BadSize {
    what: String,
    value: String,
    reason: String,
}

/// The cap on compiled code on disk: `WW_CACHE_MAX`, else [`CacheLimits::DEFAULT_DISK`].
pub fn code_max() -> Result<u64, BadSize> {
    env_size(CODE_MAX_VAR, CacheLimits::DEFAULT_DISK)
}

/// The cap on the IPFS cache: `WW_IPFS_CACHE_MAX`, else [`ipfs_cache::DEFAULT_MAX`].
pub fn ipfs_max() -> Result<u64, BadSize> {
    env_size(IPFS_MAX_VAR, ipfs_cache::DEFAULT_MAX)
}

/// The compile cache's limits for `ww run`: the disk cap from the environment, the rest the
/// defaults.
pub fn limits() -> Result<CacheLimits, BadSize> {
    Ok(CacheLimits {
        disk: code_max()?,
        ..CacheLimits::default()
    })
}

/// The size in `var`, or `default` when it is unset or empty.
fn env_size(var: &str, default: u64) -> Result<u64, BadSize> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => parse(&format!("{var} value"), &value),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(value)) => Err(BadSize {
            what: format!("{var} value"),
            value: value.to_string_lossy().into_owned(),
            reason: "it is not UTF-8".to_owned(),
        }),
    }
}

fn parse(what: &str, value: &str) -> Result<u64, BadSize> {
    ww::units::parse_size(value).map_err(|reason| BadSize {
        what: what.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

/// Reading or changing the state directory failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cannot {action} {}: {source}", path.display())]
#[diagnostic(
    code(ww::cache::io),
    help(
        "the state directory and what is in it must be this user's (ww refuses directories \
         others can write to); check its permissions"
    )
)]
struct CacheIo {
    action: &'static str,
    path: std::path::PathBuf,
    source: std::io::Error,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheIo {
    let path = path.to_path_buf();
    move |source| CacheIo {
        action,
        path,
        source,
    }
}

/// Runs `ww cache`.
pub fn main(args: CacheArgs) -> Result<u8, Report> {
    let state = super::state_dir()?;
    match args.command.unwrap_or(CacheCommand::Show) {
        CacheCommand::Show => show(&state)?,
        CacheCommand::Prune { max } => {
            let max = max.map(|max| parse("--max", &max)).transpose()?;
            prune(&state, max)?;
        }
        CacheCommand::Clear => clear(&state)?,
    }
    Ok(0)
}

fn show(state: &Path) -> Result<(), Report> {
    let code = disk::usage(state).map_err(io("read", state))?;
    let ipfs_dir = super::ipfs::cache_dir()?;
    let ipfs = ipfs_cache::usage(&ipfs_dir).map_err(io("read", &ipfs_dir))?;
    let images_dir = super::images_dir()?;
    let merged = ww::image::merged(&images_dir).map_err(io("read", &images_dir))?;
    println!("state directory: {}", state.display());
    println!(
        "compiled code:   {} in {} (cap {}, {CODE_MAX_VAR})",
        human(code.bytes),
        count(code.entries, "program"),
        human(code_max()?),
    );
    println!(
        "IPFS content:    {} in {} (cap {}, {IPFS_MAX_VAR})",
        human(ipfs.bytes),
        count(ipfs.entries, "entry"),
        human(ipfs_max()?),
    );
    println!(
        "merged images:   {} in {} left by a ww that was killed; {} in use",
        human(merged.bytes),
        count(merged.images, "image"),
        merged.in_use,
    );
    Ok(())
}

fn prune(state: &Path, max: Option<u64>) -> Result<(), Report> {
    let code_cap = match max {
        Some(max) => max,
        None => code_max()?,
    };
    let ipfs_cap = match max {
        Some(max) => max,
        None => ipfs_max()?,
    };
    let code = disk::prune(state, code_cap, None).map_err(io("prune", state))?;
    let ipfs_dir = super::ipfs::cache_dir()?;
    let ipfs = ipfs_cache::prune(&ipfs_dir, ipfs_cap, None).map_err(io("prune", &ipfs_dir))?;
    let images_dir = super::images_dir()?;
    let merged = ww::image::remove_unused_merged(&images_dir).map_err(io("prune", &images_dir))?;
    println!(
        "compiled code:   evicted {} ({}); {} in {} left",
        count(code.removed.entries, "program"),
        human(code.removed.bytes),
        human(code.remaining.bytes),
        count(code.remaining.entries, "program"),
    );
    println!(
        "IPFS content:    evicted {} ({}); {} in {} left{}",
        count(ipfs.removed.entries, "entry"),
        human(ipfs.removed.bytes),
        human(ipfs.remaining.bytes),
        count(ipfs.remaining.entries, "entry"),
        in_use(ipfs.in_use),
    );
    println!(
        "merged images:   removed {} ({}){}",
        count(merged.images, "image"),
        human(merged.bytes),
        in_use(merged.in_use),
    );
    Ok(())
}

fn clear(state: &Path) -> Result<(), Report> {
    let code = disk::prune(state, 0, None).map_err(io("clear", state))?;
    let ipfs_dir = super::ipfs::cache_dir()?;
    let ipfs = ipfs_cache::prune(&ipfs_dir, 0, None).map_err(io("clear", &ipfs_dir))?;
    let images_dir = super::images_dir()?;
    let merged = ww::image::remove_unused_merged(&images_dir).map_err(io("clear", &images_dir))?;
    println!(
        "compiled code:   removed {} ({})",
        count(code.removed.entries, "program"),
        human(code.removed.bytes),
    );
    println!(
        "IPFS content:    removed {} ({}){}",
        count(ipfs.removed.entries, "entry"),
        human(ipfs.removed.bytes),
        in_use(ipfs.in_use),
    );
    println!(
        "merged images:   removed {} ({}){}",
        count(merged.images, "image"),
        human(merged.bytes),
        in_use(merged.in_use),
    );
    Ok(())
}

/// `; N kept: in use by a running ww`, or nothing.
fn in_use(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} kept: in use by a running ww")
    }
}

/// `1 program`, `2 programs`; `1 entry`, `2 entries`.
fn count(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {noun}s"),
    }
}

/// A size for people: `0 B`, `512 B`, `1.5 KiB`, `12.3 MiB`, `1.0 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_well() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(count(1, "entry"), "1 entry");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(0, "program"), "0 programs");
    }

    #[test]
    fn a_bad_size_says_what_and_why() {
        let e = parse("--max", "lots").unwrap_err();
        assert!(e.to_string().contains("bad --max `lots`"), "{e}");
    }
}
