//! Booting an image: the services under `svc/` in its merged root, started beside pid0 and
//! stopped when pid0 exits.
//!
//! Each `svc/<name>/` is a nested image: its directory is the service's own read-only root,
//! `bin/main.wasm` its program. Its output lines reach the host's stdout and stderr prefixed
//! `[name] `; it reads no stdin. `svc/<name>/etc/service.toml`, when present, configures it:
//!
//! ```toml
//! args = ["--port", "8080"]          # after argv[0], which is the service's name
//! executor = false                   # whether it may spawn children
//!
//! [env]                              # its whole environment
//! LOG = "debug"
//!
//! [limits]                           # each at most pid0's own
//! max-memory = "64MiB"
//! timeout = "30s"
//! fuel = 1000000
//! max-children = 4
//! ```
//!
//! A service that cannot start (no program, a malformed config, a binary that does not
//! link) is reported and skipped: it never stops pid0 from booting. A service's config and
//! program are read (and checked) at once; its program is compiled on the blocking pool, so
//! a large one delays only itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;

use crate::caps::{CellInfo, Filesystem, ReadError};
use crate::executor::Executor;
use crate::executor::cell::CellConfig;
use crate::executor::limits::{LimitRequest, Limits, MAX_PROGRAM_BYTES};
use crate::executor::process::Process;
use crate::executor::stdio::Stdio;
use crate::image::ENTRYPOINT;
use crate::units;

/// Where a service's configuration lives inside its image.
pub const SERVICE_CONFIG: &str = "etc/service.toml";

/// A service that could not be started.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("service `{name}` not started: {reason}")]
#[diagnostic(
    code(ww::boot::service),
    help(
        "a service is svc/<name>/bin/main.wasm, optionally configured by svc/<name>/etc/service.toml"
    )
)]
pub struct ServiceError {
    /// The service's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// `etc/service.toml`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceConfig {
    /// Arguments after `argv[0]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The whole environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether the service holds an executor.
    #[serde(default)]
    pub executor: bool,
    /// Limits, each at most pid0's.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// The `[limits]` table of `etc/service.toml`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// A size such as `64MiB`.
    pub max_memory: Option<String>,
    /// A duration such as `30s`.
    pub timeout: Option<String>,
    /// Fuel units.
    pub fuel: Option<u64>,
    /// Live children at once.
    pub max_children: Option<u32>,
}

impl ServiceConfig {
    /// Parses the text of `etc/service.toml`.
    pub fn parse(text: &str) -> Result<ServiceConfig, String> {
        toml::from_str(text).map_err(|e| format!("{SERVICE_CONFIG}: {}", e.message()))
    }

    /// The limits this config asks for.
    pub fn limit_request(&self) -> Result<LimitRequest, String> {
        let l = &self.limits;
        Ok(LimitRequest {
            max_memory: l.max_memory.as_deref().map(units::parse_size).transpose()?,
            timeout: l
                .timeout
                .as_deref()
                .map(units::parse_duration)
                .transpose()?,
            fuel: l.fuel,
            max_children: l.max_children,
        })
    }
}

/// The services of one boot, stopped together.
pub struct Services {
    running: Arc<Mutex<Option<Vec<Process>>>>,
    loading: Vec<tokio::task::AbortHandle>,
}

impl Services {
    /// Kills every service started, and stops those still loading from starting.
    pub fn kill(&self) {
        for task in &self.loading {
            task.abort();
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        for service in running.into_iter().flatten() {
            service.kill();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts every service under `svc/` of pid0's image, each bound by `limits` (pid0's): reads
/// and checks each one's config and program now (reporting those that cannot start), then
/// compiles each on the blocking pool and spawns it. The services' directories are opened
/// through pid0's image root handle (`image`), never by a host path. Must be called within
/// the runtime that drives the cells.
pub fn start_services(executor: &Executor, image: &Filesystem, limits: &Limits) -> Services {
    let running = Arc::new(Mutex::new(Some(Vec::new())));
    let mut loading = Vec::new();
    for name in image.subdirectories("/svc") {
        let (origin, bytes, cell) = match prepare_service(&name, image, limits) {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let executor = executor.clone();
        let running = running.clone();
        let task = tokio::spawn(async move {
            let compiled = {
                let executor = executor.clone();
                tokio::task::spawn_blocking(move || executor.load(&origin, &bytes)).await
            };
            let fail = |reason: String| ServiceError {
                name: name.clone(),
                reason,
            };
            let started = match compiled {
                Ok(Ok(loaded)) => executor
                    .spawn(&loaded, cell)
                    .map_err(|e| fail(e.to_string())),
                Ok(Err(e)) => Err(fail(e.to_string())),
                Err(e) => Err(fail(format!("compiling it failed: {e}"))),
            };
            match started {
                Ok(process) => {
                    let mut running = running
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    match running.as_mut() {
                        Some(running) => {
                            tracing::info!(service = %name, id = process.id(), "service started");
                            running.push(process);
                        }
                        // Stopped while it loaded.
                        None => process.kill(),
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        });
        loading.push(task.abort_handle());
    }
    Services { running, loading }
}

/// The most bytes a service's `etc/service.toml` may have.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads service `name`'s config and program: where the program is (for messages), its
/// bytes, and the cell to spawn it as.
fn prepare_service(
    name: &str,
    image: &Filesystem,
    limits: &Limits,
) -> Result<(PathBuf, Vec<u8>, CellConfig), ServiceError> {
    let fail = |reason: String| ServiceError {
        name: name.to_owned(),
        reason,
    };
    let filesystem = image
        .nested_root(&format!("/svc/{name}"))
        .map_err(|e| fail(e.to_string()))?;
    let config = match filesystem.read(&format!("/{SERVICE_CONFIG}"), MAX_CONFIG_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| fail(format!("{SERVICE_CONFIG}: not UTF-8 text")))?;
            ServiceConfig::parse(&text).map_err(fail)?
        }
        Err(ReadError::NotFound(_)) => ServiceConfig::default(),
        Err(e) => return Err(fail(format!("{SERVICE_CONFIG}: {e}"))),
    };
    let request = config.limit_request().map_err(fail)?;
    let limits = limits
        .tighten(&request, Instant::now())
        .map_err(|e| fail(e.to_string()))?;
    let entry = format!("/{ENTRYPOINT}");
    let bytes = filesystem
        .read(&entry, MAX_PROGRAM_BYTES)
        .map_err(|e| fail(format!("{ENTRYPOINT}: {e}")))?;
    let origin = filesystem
        .preopens()
        .first()
        .map(|root| root.host().join(ENTRYPOINT))
        .unwrap_or_else(|| PathBuf::from(ENTRYPOINT));
    let cell = CellConfig::new(CellInfo::new(name, filesystem))
        .args(config.args)
        .env(config.env.into_iter().collect())
        .stdio(Stdio::prefixed(name))
        .limits(limits)
        .executor(config.executor)
        // A service is started by the node beside pid0, as one of its children would be.
        .at_depth(1);
    Ok((origin, bytes, cell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let config = ServiceConfig::parse(
            r#"
            args = ["a", "b"]
            executor = true
            [env]
            K = "v"
            [limits]
            max-memory = "64MiB"
            timeout = "30s"
            fuel = 10
            max-children = 2
            "#,
        )
        .unwrap();
        assert_eq!(config.args, ["a", "b"]);
        assert!(config.executor);
        let req = config.limit_request().unwrap();
        assert_eq!(req.max_memory, Some(64 << 20));
        assert_eq!(req.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!((req.fuel, req.max_children), (Some(10), Some(2)));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_units() {
        assert!(ServiceConfig::parse("argz = []").is_err());
        assert!(ServiceConfig::parse("[limits]\nmemory = \"1G\"").is_err());
        assert!(ServiceConfig::parse("args = \"not a list\"").is_err());
        let config = ServiceConfig::parse("[limits]\nmax-memory = \"lots\"").unwrap();
        assert!(config.limit_request().is_err());
    }

    #[test]
    fn lists_service_directories_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("svc/b")).unwrap();
        std::fs::create_dir_all(root.path().join("svc/a")).unwrap();
        std::fs::write(root.path().join("svc/notes"), "").unwrap();
        let image = Filesystem::new(Some(root.path()), &[]).unwrap();
        assert_eq!(image.subdirectories("/svc"), ["a", "b"]);
        assert!(Filesystem::default().subdirectories("/svc").is_empty());
    }
}
