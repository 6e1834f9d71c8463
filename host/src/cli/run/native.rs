//! `ww run` for a native program: the jail ([`ww::native`]), the membrane on fd 3, signals
//! forwarded, and the exit status as for a WebAssembly cell.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::Duration;

use miette::Report;
use ww::caps::{CellInfo, DirGrant, Filesystem, Preopen};
use ww::executor::stdio::Stdio;
use ww::fds::Grant;
use ww::native::{Jail, JailDir, NativeError, NativeProgram};
use ww::rpc::{Caller, ExecutorGrant, Node, RpcError, RpcServer, RpcSocket};

use super::{Ended, RunArgs};

/// How the cell's process ended.
enum End {
    /// It exited or was killed; its status.
    Status(std::process::ExitStatus),
    /// It ran past `--timeout` and was killed.
    TimedOut,
}

/// Runs `program` as pid0 in a jail, returning ww's exit status. A program fetched from
/// IPFS (`from_ipfs`) runs from an executable copy in the private jail directory, which is
/// removed afterwards, never from the shared cache.
pub(super) fn main(
    args: &RunArgs,
    program: NativeProgram,
    env: Vec<(String, String)>,
    grants: Vec<Grant>,
    from_ipfs: bool,
    net_config: ww::net::NetConfig,
) -> Result<u8, Report> {
    if !args.layers.is_empty() {
        return Err(NativeError::Layers { path: program.path }.into());
    }
    let dir_grants = args
        .dirs
        .iter()
        .map(|d| d.parse::<DirGrant>())
        .collect::<Result<Vec<_>, _>>()?;
    let filesystem = Filesystem::new(None, &dir_grants)?;
    let dirs = filesystem
        .preopens()
        .iter()
        .map(jail_dir)
        .collect::<Result<Vec<_>, _>>()?;
    let executor = super::executor_for(args)?;
    let jail = Jail::new(&program, &grants, &dirs, args.allow_weak_jail)?;
    drop(dirs);
    let program = if from_ipfs {
        jail.private_copy(program)?
    } else {
        program
    };
    let spawn_err = |what, source| NativeError::Spawn {
        path: program.path.clone(),
        what,
        source,
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| spawn_err("creating the fd 3 socket pair", e))?;
    ours.set_nonblocking(true)
        .map_err(|e| spawn_err("creating the fd 3 socket pair", e))?;
    let theirs = OwnedFd::from(theirs);
    let mut rpc_socket = args
        .rpc_socket
        .as_deref()
        .map(RpcSocket::bind)
        .transpose()?;

    let allowed = args.net.allowed(None)?;
    let runtime = super::runtime()?;
    let network = super::super::net::start(net_config, runtime.handle(), args.quiet);
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, async {
        let limits = super::pid0_limits(args);
        let info = CellInfo::new(program.name.clone(), filesystem);
        let grant = ExecutorGrant::new(executor.clone(), info, limits, Stdio::host());
        let mut node = Node::new(network.clone(), Some(grant));
        node.peer_session = args.net.peer_session;
        node.epoch.advance_on_sighup().map_err(RpcError::Signal)?;
        let server = RpcServer::start(node);
        super::super::net::on_start(
            network.clone(),
            server.clone(),
            Vec::new(),
            allowed,
            args.quiet,
        );
        let stream =
            tokio::net::UnixStream::from_std(ours).map_err(|e| spawn_err("serving fd 3", e))?;
        server.serve(stream, Caller::Cell)?;
        if let Some(socket) = rpc_socket.as_mut() {
            socket.serve(server.clone())?;
            tracing::info!("serving the membrane on {}", socket.path().display());
        }
        // Before the spawn: a signal that arrives once the cell runs is forwarded to it.
        let signals = Signals::install();
        let (mut cmd, report) = jail.command(&program, &args.args, &env, &theirs, &grants)?;
        let spawned = cmd.kill_on_drop(true).spawn();
        drop(cmd);
        // Read after the spawn either way: a step that failed reported itself.
        let protections = report.protections();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                protections.check(args.allow_weak_jail, &program.path)?;
                return Err(spawn_err("starting the program", e).into());
            }
        };
        tracing::info!(
            cell = %program.name,
            jail = %jail.path().display(),
            "jail: {}",
            protections.summary()
        );
        // Without --allow-weak-jail a weak jail never gets here (its hook failed the spawn);
        // should one report less than it set up, the cell is killed as `child` drops.
        for warning in protections.check(args.allow_weak_jail, &program.path)? {
            tracing::warn!(cell = %program.name, "jail: {warning}");
        }
        // A network that cannot start (say, a --listen port taken) ends the run as ww's
        // error; the program is killed as the child handle drops.
        tokio::select! {
            end = supervise(&mut child, signals, args.timeout) => Ok::<End, Report>(end),
            failed = network.failed() => {
                Err(Report::new(super::super::net::StartFailed(failed)))
            }
        }
    });
    drop(theirs);
    // Ends the RPC connections, and with them the children their sessions spawned.
    drop(local);
    runtime.shutdown_background();
    drop(rpc_socket);
    drop(jail);
    let end = outcome?;
    Ok(status_of(&program.name, end))
}

/// The handle a native cell's `--dir` grant is bound from: a duplicate of the directory
/// `Filesystem::new` opened (the one place a grant touches the host by path), shown at the
/// grant's guest path.
fn jail_dir(preopen: &Preopen) -> Result<JailDir, NativeError> {
    let dir = preopen
        .dir()
        .try_clone()
        .map_err(|source| NativeError::Io {
            path: preopen.host().to_owned(),
            source,
        })?;
    Ok(JailDir {
        dir: OwnedFd::from(dir.into_std_file()),
        at: PathBuf::from(preopen.guest()),
        read_only: preopen.read_only(),
    })
}

/// Waits for the cell, forwarding SIGINT and SIGTERM to it and killing it at `timeout`.
async fn supervise(
    child: &mut tokio::process::Child,
    signals: Signals,
    timeout: Option<Duration>,
) -> End {
    let Signals {
        mut interrupt,
        mut terminate,
    } = signals;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    loop {
        let forward = tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(_) if timed_out => End::TimedOut,
                    Ok(status) => End::Status(status),
                    // The child cannot be waited for: it is gone as far as ww can tell.
                    Err(_) => End::Status(std::process::ExitStatus::from_raw(libc::SIGKILL)),
                };
            }
            Some(()) = recv(&mut interrupt) => libc::SIGINT,
            Some(()) = recv(&mut terminate) => libc::SIGTERM,
            () = sleep_until(deadline), if !timed_out => {
                timed_out = true;
                let _ = child.start_kill();
                continue;
            }
        };
        if let Some(pid) = child.id() {
            // SAFETY: a signal to our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, forward);
            }
        }
    }
}

/// SIGINT and SIGTERM, caught for forwarding (either may be missing if its handler could not
/// be installed: that signal then ends ww as usual).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let caught = |kind| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot catch a signal to forward it to the cell: {e}");
                None
            }
        };
        Signals {
            interrupt: caught(SignalKind::interrupt()),
            terminate: caught(SignalKind::terminate()),
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// ww's exit status for how the cell ended, printing a diagnostic when it did not exit by
/// itself.
fn status_of(cell: &str, end: End) -> u8 {
    let (status, what, help) = match end {
        End::Status(status) => {
            if let Some(code) = status.code() {
                return (code & 0xff) as u8;
            }
            let signal = status.signal().unwrap_or(libc::SIGKILL);
            (
                (128 + signal).clamp(0, 255) as u8,
                format!("was killed by signal {signal} ({})", signal_name(signal)),
                "something sent the program a signal, or it crashed".to_owned(),
            )
        }
        End::TimedOut => (
            124,
            "ran past its time limit".to_owned(),
            "raise --timeout, or find why the cell does not finish".to_owned(),
        ),
    };
    let ended = Ended {
        cell: cell.to_owned(),
        what,
        help,
    };
    eprintln!("{:?}", Report::new(ended));
    status
}

/// The usual name of a signal.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "a signal",
    }
}
