//! `ww run`: boot an image as pid0 and exit with its status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use miette::{Diagnostic, Report};
use ww::boot;
use ww::caps::fd::FdGrants;
use ww::caps::rpc::RpcHost;
use ww::caps::{CellInfo, DirGrant, Filesystem};
use ww::executor::budget::{DEFAULT_MAX_CELLS, DEFAULT_MAX_DEPTH, NodeLimits};
use ww::executor::cache::CompileCache;
use ww::executor::cell::CellConfig;
use ww::executor::limits::{DEFAULT_MAX_CHILDREN, DEFAULT_MAX_MEMORY, LimitExceeded, Limits};
use ww::executor::process::Exit;
use ww::executor::stdio::Stdio;
use ww::executor::{Executor, Loaded};
use ww::image::Image;
use ww::net::bootstrap::{self, BootPeer};
use ww::rpc::{ExecutorGrant, Node, RpcError, RpcServer, RpcSocket};
use ww::units;
use ww::wasm::EngineOptions;

mod native;

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

    /// Cap pid0's linear memory (e.g. 64MiB, 1G); children get at most as much.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size, default_value = "1GiB")]
    max_memory: u64,

    /// End pid0 (and so every cell) after this long (e.g. 500ms, 10s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    timeout: Option<Duration>,

    /// Meter pid0's execution: it may run about N wasm instructions. Enables fuel for
    /// children too, each bound by its parent's.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// Cap how many children pid0 may have alive at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CHILDREN)]
    max_children: u32,

    /// Bound what all cells together make the host hold: linear memories, tables, instance
    /// state, arguments, environment and stream buffers (e.g. 2GiB). Default: half the
    /// physical memory, or of the cgroup's limit when lower. Per-cell limits nest inside it.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    node_memory: Option<u64>,

    /// Bound the cells alive in the node at once (pid0, services, children, grandchildren).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CELLS)]
    max_cells: u32,

    /// Bound how deep spawns nest (pid0 is depth 0, its children 1, ...).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DEPTH)]
    max_depth: u32,

    #[command(flatten)]
    fds: super::fd::FdArgs,

    #[command(flatten)]
    ipfs: super::ipfs::IpfsArgs,

    #[command(flatten)]
    net: super::net::NetArgs,

    /// Compile without the on-disk cache of compiled programs (see WW_CACHE_DIR).
    #[arg(long)]
    no_cache: bool,

    /// Run a native program even where the kernel refuses part of its jail (a namespace,
    /// its own root, Landlock, seccomp): what did not hold is then a warning, not an error.
    /// WW_ALLOW_WEAK_JAIL=1 (or true, yes, on) does the same.
    #[arg(long, env = "WW_ALLOW_WEAK_JAIL", value_parser = clap::builder::BoolishValueParser::new())]
    allow_weak_jail: bool,

    /// Serve the node's Cap'n Proto membrane to local clients on a Unix socket created at
    /// PATH (mode 0600; it must not exist; removed on exit). SIGHUP advances the epoch.
    #[arg(long, value_name = "PATH")]
    rpc_socket: Option<PathBuf>,

    /// The image: a directory holding bin/main.wasm, or a .wasm file; or a native program
    /// (an ELF file, a `#!` script, or a directory whose bin/ holds them; see README).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    /// Arguments for the cell; argv[0] is the image's name. Everything after IMAGE goes here.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,

    /// `-q`: print nothing but errors (set from the global flag).
    #[arg(skip)]
    pub quiet: bool,
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

/// Runs `ww run`, returning the cell's exit status.
pub fn main(mut args: RunArgs) -> Result<u8, Report> {
    // First, before the engine or the runtime open fds of their own: a grant names an fd by
    // number, and only fds ww inherited may answer to it.
    let plan = args.fds.plan()?;
    for warning in plan.warnings() {
        tracing::warn!("{warning}");
    }
    if args.fds.fd_verbose {
        for line in plan.verbose_lines() {
            eprintln!("{line}");
        }
    }
    let ww_env = std::env::var("WW_ENV").ok();
    let mut env = environment(ww_env.as_deref(), &args.env)?;
    // The grants' variables describe what the cell holds, so they win over -e and WW_ENV.
    for (key, value) in plan.env() {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    // An /ipfs or /ipns IMAGE or --layer becomes its verified, cached local copy (after the
    // fd plan: a connection to the daemon is an fd of ww's own).
    let from_ipfs = args
        .image
        .to_str()
        .and_then(ww::ipfs::path::IpfsPath::parse)
        .is_some();
    // Pinned for the whole run: no `ww` evicts the image from the IPFS cache meanwhile.
    let _pins = args.ipfs.localize(&mut args.image, &mut args.layers)?;
    // The directory grants, checked before anything runs: no writable grant may hold ww's
    // own state (compiled code is native code).
    let grants = args
        .dirs
        .iter()
        .map(|d| d.parse::<DirGrant>())
        .collect::<Result<Vec<_>, _>>()?;
    let state: Vec<PathBuf> = super::state_dir().into_iter().collect();
    ww::caps::refuse_state(&grants, &state)?;
    // The node's identity (created now if --identity names no file) and listen addresses.
    let mut net_config = args.net.config()?;
    // A native program (ELF, `#!` script, or a bin/{os}_{arch}/ image) runs in a jail.
    if let Some(program) = ww::native::detect(&args.image)? {
        return native::main(
            &args,
            program,
            env,
            plan.into_grants(),
            from_ipfs,
            net_config,
        );
    }
    let fds = FdGrants::from_grants(plan.into_grants());
    // pid0 holds the node's IPFS (ww:host/ipfs). Nothing is contacted or created until a
    // cell uses it; a bad endpoint leaves pid0 without it rather than failing the run.
    let ipfs = match args.ipfs.deferred() {
        Ok(ipfs) => Some(Arc::new(ipfs)),
        Err(report) => {
            tracing::warn!("pid0 holds no IPFS capability: {report}");
            None
        }
    };
    let executor = executor_for(&args)?;
    let mut booted = Booted::load(&args, &grants, &executor)?;
    // Before the runtime, so that a bad path is ww's error (125) before pid0 starts.
    let mut rpc_socket = args
        .rpc_socket
        .as_deref()
        .map(RpcSocket::bind)
        .transpose()?;

    let runtime = runtime()?;
    // The boot/ peers are known to the network from its start; it starts on a thread of its
    // own while pid0 boots.
    let boot_peers = booted.image.root().map(boot_peers).unwrap_or_default();
    let allowed = args.net.allowed(booted.image.root())?;
    net_config.known = boot_peers
        .iter()
        .map(|p| (p.peer, p.addrs.clone()))
        .collect();
    let network = super::net::start(net_config, runtime.handle(), args.quiet);
    let cell = booted.image.name().to_owned();
    // Cap'n Proto (capnp-rpc is !Send) runs on this thread's local set, beside the cells.
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, async {
        let limits = pid0_limits(&args);
        // The node's RPC system: pid0 reaches it through the bridge (ww:host/rpc), local
        // clients through --rpc-socket. Sessions get pid0's executor.
        let grant = |booted: &Booted| {
            ExecutorGrant::new(executor.clone(), booted.info(), limits, Stdio::host())
        };
        let mut node = Node::new(network.clone(), Some(grant(&booted)));
        node.peer_session = args.net.peer_session;
        node.epoch.advance_on_sighup().map_err(RpcError::Signal)?;
        let server = RpcServer::start(node);
        super::net::on_start(
            network.clone(),
            server.clone(),
            boot_peers,
            allowed,
            args.quiet,
        );
        if let Some(socket) = rpc_socket.as_mut() {
            socket.serve(server.clone())?;
            tracing::info!("serving the membrane on {}", socket.path().display());
        }
        let bridge: Arc<dyn RpcHost> = Arc::new(server.clone());
        let serving = rpc_socket.is_some();
        let mut reloads = reload_requests();
        loop {
            let config = CellConfig::new(booted.info())
                .args(args.args.clone())
                .env(env.clone())
                .limits(limits)
                .fds(fds.clone())
                .rpc(Some(bridge.clone()))
                .ipfs(ipfs.clone())
                .network(Some(network.clone()))
                .executor(true);
            let pid0 = executor.spawn(&booted.loaded, config)?;
            let services = boot::start_services(&executor, &booted.image_root, &limits);
            // pid0's end, a signal, or a reload; a reload that fails to load keeps the
            // running image.
            let ended = loop {
                tokio::select! {
                    exit = pid0.wait() => break BootEnd::Exit(exit),
                    // The node's own deadline, raced here as well as in pid0's task: with
                    // thousands of cells ready to run, pid0's task may be polled late, and
                    // --timeout must end the node on time whatever its cells are doing.
                    () = deadline(limits.deadline) => {
                        pid0.kill();
                        break BootEnd::Exit(Exit::Limit(LimitExceeded::Time));
                    }
                    failed = network.failed() => {
                        pid0.kill();
                        break BootEnd::Failed(Report::new(super::net::StartFailed(failed)));
                    }
                    // With a socket to remove, SIGINT and SIGTERM end ww in order.
                    status = terminated(), if serving => {
                        pid0.kill();
                        break BootEnd::Signal(status);
                    }
                    Some(()) = reloads.recv() => match Booted::load(&args, &grants, &executor) {
                        Ok(next) => {
                            pid0.kill();
                            pid0.wait().await;
                            services.kill();
                            booted = next;
                            server.regrant(grant(&booted))?;
                            let epoch = server.epoch().advance();
                            tracing::warn!(
                                epoch,
                                "image reloaded: pid0 restarted, earlier sessions revoked"
                            );
                            break BootEnd::Reloaded;
                        }
                        Err(report) => {
                            eprintln!("{report:?}");
                            tracing::warn!("reload failed: the running image stays");
                        }
                    },
                }
            };
            services.kill();
            match ended {
                BootEnd::Reloaded => continue,
                BootEnd::Exit(exit) => break Ok::<Result<Exit, u8>, Report>(Ok(exit)),
                BootEnd::Signal(status) => break Ok(Err(status)),
                BootEnd::Failed(report) => break Err(report),
            }
        }
    });
    // Ends the RPC connections, and with them the children their sessions spawned.
    drop(local);
    // A cell blocked reading stdin leaves a reader behind; do not wait for it.
    runtime.shutdown_background();
    // What the cells wrote is queued to a writer thread (never written on the executor's
    // thread): let it reach ww's stdout before ww ends, unless nobody reads it.
    ww::executor::host_output::drain(std::time::Duration::from_secs(1));
    drop(rpc_socket);
    drop(booted);

    let exit = match outcome? {
        Ok(exit) => exit,
        // Ended by a signal: the status a shell expects (128 + the signal's number).
        Err(status) => return Ok(status),
    };
    report(&cell, &exit, &args_limits_hint(args.max_memory));
    Ok(exit.status())
}

/// The peers of the image's `boot/`, warning of every entry skipped.
fn boot_peers(root: &std::path::Path) -> Vec<BootPeer> {
    let (peers, warnings) = bootstrap::read(root);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    peers
}

/// The executor pid0 and its children run on, as the flags configure it.
fn executor_for(args: &RunArgs) -> Result<Executor, Report> {
    let options = EngineOptions {
        fuel: args.fuel.is_some(),
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        CompileCache::default_dir()
    };
    let node = NodeLimits {
        memory: args
            .node_memory
            .unwrap_or_else(ww::executor::budget::default_memory),
        cells: args.max_cells,
        depth: args.max_depth,
    };
    Ok(Executor::new(
        &options,
        cache_dir.as_deref(),
        super::cache::limits()?,
        node,
    )?)
}

/// The single-threaded runtime every cell and the RPC system run on.
fn runtime() -> Result<tokio::runtime::Runtime, Report> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| miette::miette!(code = "ww::runtime", "cannot start the async runtime: {e}"))
}

/// pid0's limits from the flags; its deadline counts from now.
fn pid0_limits(args: &RunArgs) -> Limits {
    Limits {
        max_memory: args.max_memory,
        deadline: args.timeout.map(|t| Instant::now() + t),
        fuel: args.fuel,
        max_children: args.max_children,
    }
}

/// How one boot of the image ended.
enum BootEnd {
    /// pid0 ended.
    Exit(Exit),
    /// ww was told to stop; the status to exit with.
    Signal(u8),
    /// The image was reloaded and pid0 must boot again.
    Reloaded,
    /// Something pid0 depends on failed (the network could not start).
    Failed(Report),
}

/// One load of the image: its merged root, and pid0's filesystem and program.
struct Booted {
    image: Image,
    filesystem: Filesystem,
    /// The image's root alone, opened once: services are read through it.
    image_root: Filesystem,
    loaded: Loaded,
}

impl Booted {
    /// Loads IMAGE and its layers as the command line gives them, and compiles (or finds
    /// compiled) its entrypoint.
    fn load(args: &RunArgs, grants: &[DirGrant], executor: &Executor) -> Result<Booted, Report> {
        let private = super::images_dir().ok();
        let image = Image::load(&args.image, &args.layers, private.as_deref())?;
        // The image alone (pid0's grants may claim `/`): where services are found. pid0's
        // filesystem shares its handle.
        let image_root = Filesystem::image(image.root())?;
        let filesystem = image_root.granting(grants)?;
        let bytes = image.read_entrypoint()?;
        let loaded = executor.load(image.entrypoint(), &bytes)?;
        Ok(Booted {
            image,
            filesystem,
            image_root,
            loaded,
        })
    }

    /// What pid0 is.
    fn info(&self) -> CellInfo {
        CellInfo::new(self.image.name(), self.filesystem.clone())
    }
}

/// Resolves at `at`; never without one.
async fn deadline(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// SIGUSR1 to ww: reload the image. Never yields if the handler cannot be installed.
struct ReloadRequests(Option<tokio::signal::unix::Signal>);

fn reload_requests() -> ReloadRequests {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(signal) => ReloadRequests(Some(signal)),
        Err(e) => {
            tracing::warn!("cannot listen for SIGUSR1; the image cannot be reloaded: {e}");
            ReloadRequests(None)
        }
    }
}

impl ReloadRequests {
    async fn recv(&mut self) -> Option<()> {
        match &mut self.0 {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Resolves when ww receives SIGINT or SIGTERM, with the status it then exits with (130 or
/// 143); never, if the handlers cannot be installed (the signals then end ww as usual).
async fn terminated() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
            _ = interrupt.recv() => 130,
            _ = terminate.recv() => 143,
        },
        _ => std::future::pending().await,
    }
}

fn args_limits_hint(max_memory: u64) -> String {
    if max_memory == DEFAULT_MAX_MEMORY {
        "raise it with --max-memory".to_owned()
    } else {
        format!("it was set to {max_memory} bytes by --max-memory")
    }
}

/// A cell that did not end by itself: what happened and to which cell.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cell `{cell}` {what}")]
#[diagnostic(code(ww::cell::ended))]
struct Ended {
    cell: String,
    what: String,
    #[help]
    help: String,
}

/// Prints the one-paragraph diagnostic for an exit that is not the cell's own code.
fn report(cell: &str, exit: &Exit, memory_hint: &str) {
    let (what, help) = match exit {
        Exit::Code(_) => return,
        Exit::Trap { message, detail } => {
            tracing::debug!(cell = %cell, "{detail}");
            (
                format!("trapped: {message}"),
                "this is a fault in the guest program; run with -v for its wasm backtrace"
                    .to_owned(),
            )
        }
        Exit::Killed => (
            "was killed".to_owned(),
            "something ended it before it finished".to_owned(),
        ),
        Exit::Limit(LimitExceeded::Memory { limit }) => (
            format!("exceeded its memory limit ({limit} bytes)"),
            memory_hint.to_owned(),
        ),
        Exit::Limit(LimitExceeded::NodeMemory { limit }) => (
            format!(
                "could not grow: the node's memory budget ({limit} bytes for all cells) is spent"
            ),
            "raise --node-memory, or give the cells lower --max-memory".to_owned(),
        ),
        Exit::Limit(LimitExceeded::Handles { limit }) => (
            format!("held more than {limit} resources (streams, pollables, descriptors) at once"),
            "a cell must drop the resources it no longer uses".to_owned(),
        ),
        Exit::Limit(LimitExceeded::Time) => (
            "ran past its time limit".to_owned(),
            "raise --timeout, or find why the cell does not finish".to_owned(),
        ),
        Exit::Limit(LimitExceeded::Fuel) => (
            "ran out of fuel".to_owned(),
            "raise --fuel, or find why the cell runs so long".to_owned(),
        ),
    };
    let ended = Ended {
        cell: cell.to_owned(),
        what,
        help,
    };
    eprintln!("{:?}", Report::new(ended));
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
