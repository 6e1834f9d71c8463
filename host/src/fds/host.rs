//! Everything that touches real host fds: probing a granted fd (held? open how? what is
//! it?), duplicating it, closing a moved original, importing systemd socket-activation fds, and
//! receiving fds over an `--fdctl` Unix socket.
//!
//! Only fds a grant names are touched (plus the `--fdctl` channel itself). Probing uses
//! `fcntl(F_GETFD)` (fails with `EBADF` on an fd ww does not hold), `fcntl(F_GETFL)` (the
//! access mode) and `fstat` (the file type). Duplicates are made with `F_DUPFD_CLOEXEC` at 3 or
//! above, so a copy never lands on a stdio number and never leaks into a child ww spawns.
//!
//! # `--fdctl`
//!
//! `--fdctl PATH`: ww binds a listening Unix stream socket at PATH (which must not exist;
//! ww makes it mode 0600 and removes it once a peer connected), waits for one connection, and
//! refuses a peer whose uid is not ww's effective uid. A SIGINT, SIGTERM, SIGHUP or SIGQUIT
//! during the wait removes the socket before ww ends by that signal (the signals are read
//! from a signalfd while ww waits). `--fdctl inherit:N`: fd N, inherited from ww's parent, is
//! an already connected Unix socket (stream or seqpacket); ww takes it over and closes it
//! when done.
//!
//! On either channel the peer sends, with `sendmsg`, data and `SCM_RIGHTS` fds, in as many
//! messages as it likes, then closes its end. The data, taken as one UTF-8 text, is one line
//! per fd, `\n`-terminated (the last newline may be left out): `NAME[,KEY=VALUE…]`, with the
//! keys of `--fd` except `move` (a received fd is always ww's own). The i-th line names the
//! i-th fd received, counting across messages. Bounds: at most [`FdctlLimits::max_fds`] fds and
//! [`FdctlLimits::max_bytes`] bytes, all within [`FdctlLimits::timeout`] from the start
//! (waiting for the connection included). A count of lines that differs from the count of fds
//! is an error; so is anything over a bound. Every received fd is `O_CLOEXEC`.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

use super::error::{FdError, FdErrorKind, Origin};
use super::spec::{GrantOptions, Kind, Mode, check_name, parse_fdctl_line, parse_number};

/// What a host fd is, as far as granting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// A regular file.
    File,
    /// A socket.
    Socket,
    /// A directory (cannot be granted as an fd).
    Directory,
    /// Anything else: pipe, tty, character device….
    Other,
}

impl Object {
    fn describe(self) -> &'static str {
        match self {
            Object::File => "a regular file",
            Object::Socket => "a socket",
            Object::Directory => "a directory",
            Object::Other => "neither a regular file nor a socket",
        }
    }
}

/// What probing a host fd found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// What its open mode allows.
    pub access: Mode,
    /// What it is.
    pub object: Object,
}

/// Probes fd number `fd`: [`FdErrorKind::NotHeld`] when ww does not hold it.
pub fn probe_number(fd: RawFd) -> Result<Probe, FdErrorKind> {
    if fd < 0 {
        return Err(FdErrorKind::NotHeld { fd });
    }
    // SAFETY: the borrow lives only for these calls, which are harmless on any number: on a
    // closed one they fail with EBADF and touch nothing. ww plans its grants before it opens
    // fds of its own or starts threads that could close one meanwhile.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match rustix::io::fcntl_getfd(borrowed) {
        Ok(_) => probe(borrowed, fd),
        Err(Errno::BADF) => Err(FdErrorKind::NotHeld { fd }),
        Err(e) => Err(os("inspect", fd, e)),
    }
}

/// Probes an fd ww holds; `number` names it in errors.
pub fn probe(fd: BorrowedFd<'_>, number: RawFd) -> Result<Probe, FdErrorKind> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| os("inspect", number, e))?;
    if flags.contains(OFlags::PATH) {
        return Err(FdErrorKind::Unusable {
            fd: number,
            what: "an O_PATH descriptor",
        });
    }
    let access = match flags & OFlags::RWMODE {
        f if f == OFlags::WRONLY => Mode::Write,
        f if f == OFlags::RDWR => Mode::ReadWrite,
        _ => Mode::Read,
    };
    let stat = rustix::fs::fstat(fd).map_err(|e| os("inspect", number, e))?;
    let object = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Object::File,
        FileType::Socket => Object::Socket,
        FileType::Directory => Object::Directory,
        _ => Object::Other,
    };
    Ok(Probe { access, object })
}

/// Checks the options against what `probe` found, and fills in defaults: the mode the fd
/// allows, the type `fstat` tells (regular file → file, socket → socket, else stream).
pub fn check(
    probe: Probe,
    options: &GrantOptions,
    number: RawFd,
) -> Result<(Mode, Kind), FdErrorKind> {
    if probe.object == Object::Directory {
        return Err(FdErrorKind::Unusable {
            fd: number,
            what: "a directory",
        });
    }
    let mode = options.mode.unwrap_or(probe.access);
    if (mode.reads() && !probe.access.reads()) || (mode.writes() && !probe.access.writes()) {
        return Err(FdErrorKind::ModeNotAllowed {
            fd: number,
            mode: mode.as_str(),
            needs: match mode {
                Mode::Read => "reading",
                Mode::Write => "writing",
                Mode::ReadWrite => "reading and writing",
            },
            opened: match probe.access {
                Mode::Read => "read-only (O_RDONLY)",
                Mode::Write => "write-only (O_WRONLY)",
                Mode::ReadWrite => "read-write (O_RDWR)",
            },
        });
    }
    let derived = match probe.object {
        Object::File => Kind::File,
        Object::Socket => Kind::Socket,
        Object::Directory | Object::Other => Kind::Stream,
    };
    let kind = options.kind.unwrap_or(derived);
    if kind != Kind::Stream && kind != derived {
        return Err(FdErrorKind::TypeMismatch {
            fd: number,
            kind: kind.as_str(),
            actual: probe.object.describe(),
        });
    }
    Ok((mode, kind))
}

/// Duplicates fd number `fd` (already probed) to a new close-on-exec fd numbered 3 or above.
pub fn dup_number(fd: RawFd) -> Result<OwnedFd, FdErrorKind> {
    // SAFETY: as in `probe_number`; the fd was probed as held and nothing closed it since.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_dupfd_cloexec(borrowed, 3).map_err(|e| os("duplicate", fd, e))
}

/// Closes fd number `fd`: the original of a `move=true` grant, after it was duplicated.
///
/// # Safety
///
/// `fd` must be open and owned by nobody else in this process: granting it with `move=true`
/// hands it to ww, and ww holds no other handle on it.
pub unsafe fn close_number(fd: RawFd) {
    // SAFETY: the caller hands over ownership of `fd`.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

fn os(op: &'static str, fd: RawFd, e: Errno) -> FdErrorKind {
    FdErrorKind::Os {
        op,
        fd,
        reason: std::io::Error::from(e).to_string(),
    }
}

/// The systemd socket-activation variables (see `sd_listen_fds(3)`), and where the fds start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdEnv {
    /// `LISTEN_FDS`: how many fds.
    pub listen_fds: Option<String>,
    /// `LISTEN_PID`: the pid they are for.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDNAMES`: their names, colon-separated.
    pub listen_fdnames: Option<String>,
    /// The first fd: 3 (`SD_LISTEN_FDS_START`). Tests set another, to use fds they own.
    pub first_fd: RawFd,
}

/// The most fds `LISTEN_FDS` may announce.
pub const MAX_SYSTEMD_FDS: i32 = 1024;

impl SystemdEnv {
    /// The variables as `lookup` gives them, fds from 3.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> SystemdEnv {
        SystemdEnv {
            listen_fds: lookup("LISTEN_FDS"),
            listen_pid: lookup("LISTEN_PID"),
            listen_fdnames: lookup("LISTEN_FDNAMES"),
            first_fd: 3,
        }
    }

    /// The variables of this process.
    pub fn from_process() -> SystemdEnv {
        SystemdEnv::from_lookup(|k| std::env::var(k).ok())
    }
}

/// What `--use-systemd-fds` imports: `(name, fd)` in fd order, and a warning when the
/// environment was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdImport {
    /// The fds and their names.
    pub fds: Vec<(String, RawFd)>,
    /// Why nothing (or a name) was taken from the environment, for a log line.
    pub warnings: Vec<String>,
}

/// Reads socket-activation fds as systemd passes them: `LISTEN_FDS` fds from
/// `env.first_fd` on, for process `LISTEN_PID`. The rules:
///
/// - `LISTEN_FDS` unset, or `LISTEN_PID` unset or not `pid`: nothing, with a warning (the
///   variables were meant for another process).
/// - `LISTEN_FDS` not a count up to [`MAX_SYSTEMD_FDS`]: an error.
/// - Names: the `LISTEN_FDNAMES` entry when it is a valid grant name; else `PREFIX` and the
///   index (`listen0`, `listen1`…), with a warning when an entry was there but unusable
///   (systemd's default name, the unit's `foo.socket`, is not a grant name). A
///   `LISTEN_FDNAMES` with a different count of entries than `LISTEN_FDS` is an error.
///
/// The fds are not checked here; the plan probes them like any granted fd.
pub fn systemd_fds(env: &SystemdEnv, pid: u32, prefix: &str) -> Result<SystemdImport, FdError> {
    let mut import = SystemdImport::default();
    let Some(count_text) = &env.listen_fds else {
        import
            .warnings
            .push("--use-systemd-fds: LISTEN_FDS is not set; no fds imported".into());
        return Ok(import);
    };
    let for_us = env
        .listen_pid
        .as_deref()
        .is_some_and(|p| p.trim().parse::<u32>().ok() == Some(pid));
    if !for_us {
        import.warnings.push(format!(
            "--use-systemd-fds: LISTEN_PID is {} but ww's pid is {pid}; the fds are not for ww, none imported",
            env.listen_pid.as_deref().unwrap_or("not set")
        ));
        return Ok(import);
    }
    let env_origin = |var, value: &str| Origin::SystemdEnv {
        var,
        value: value.to_owned(),
    };
    let count = match parse_number("LISTEN_FDS", count_text) {
        Ok(n) if n <= MAX_SYSTEMD_FDS => n,
        _ => {
            return Err(FdError::new(
                FdErrorKind::Systemd {
                    problem: format!("LISTEN_FDS must be a count from 0 to {MAX_SYSTEMD_FDS}"),
                },
                env_origin("LISTEN_FDS", count_text),
            ));
        }
    };
    let names: Option<Vec<&str>> = env
        .listen_fdnames
        .as_deref()
        .map(|n| n.split(':').collect());
    if let (Some(names), Some(text)) = (&names, &env.listen_fdnames)
        && names.len() != count as usize
    {
        return Err(FdError::new(
            FdErrorKind::Systemd {
                problem: format!(
                    "LISTEN_FDNAMES has {} names for LISTEN_FDS={count} fds",
                    names.len()
                ),
            },
            env_origin("LISTEN_FDNAMES", text),
        ));
    }
    check_name(prefix).map_err(|k| FdError::new(k, Origin::flag("--use-systemd-fds", prefix)))?;
    for i in 0..count {
        let fallback = format!("{prefix}{i}");
        let name = match names.as_ref().and_then(|n| n.get(i as usize)) {
            Some(name) if check_name(name).is_ok() => (*name).to_owned(),
            Some(name) => {
                import.warnings.push(format!(
                    "--use-systemd-fds: LISTEN_FDNAMES entry `{name}` is not a grant name; fd {} is `{fallback}`",
                    env.first_fd + i
                ));
                fallback
            }
            None => fallback,
        };
        import.fds.push((name, env.first_fd + i));
    }
    Ok(import)
}

/// Where `--fdctl` receives fds from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdctlChannel {
    /// `inherit:N`: an inherited, connected Unix socket.
    Inherit(RawFd),
    /// `PATH`: ww listens there for one connection.
    Path(PathBuf),
}

impl FdctlChannel {
    /// Parses an `--fdctl` value: `inherit:N`, or a non-empty path.
    pub fn parse(value: &str) -> Result<FdctlChannel, FdError> {
        let at = || Origin::flag("--fdctl", value);
        if let Some(n) = value.strip_prefix("inherit:") {
            return parse_number("fd", n)
                .map(FdctlChannel::Inherit)
                .map_err(|k| FdError::new(k, at()));
        }
        if value.is_empty() {
            return Err(FdError::new(
                FdErrorKind::Syntax {
                    expected: "inherit:N or a socket PATH",
                },
                at(),
            ));
        }
        Ok(FdctlChannel::Path(PathBuf::from(value)))
    }
}

/// Bounds on one `--fdctl` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdctlLimits {
    /// The most fds (default 64).
    pub max_fds: usize,
    /// The most bytes of names (default 64 KiB).
    pub max_bytes: usize,
    /// From the start of the wait to the peer's close (default 30 s).
    pub timeout: Duration,
}

impl Default for FdctlLimits {
    fn default() -> FdctlLimits {
        FdctlLimits {
            max_fds: 64,
            max_bytes: 64 << 10,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One fd received over `--fdctl`.
#[derive(Debug)]
pub struct Received {
    /// Its name.
    pub name: String,
    /// Its options.
    pub options: GrantOptions,
    /// The fd, ww's own.
    pub fd: OwnedFd,
    /// Its zero-based index on the channel.
    pub index: usize,
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT, blocked for this thread and read from a signalfd
/// while it lives, so a wait can clean up before ww ends by the signal. `--fdctl` is received
/// first thing in `ww run`, while ww has one thread, so blocking here catches them all.
struct TerminationSignals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl TerminationSignals {
    const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

    fn catch() -> std::io::Result<TerminationSignals> {
        // SAFETY: sigset and signalfd calls on local, initialized sets; the returned fd is
        // new and owned by nothing else.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in Self::SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            if r != 0 {
                return Err(std::io::Error::from_raw_os_error(r));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return Err(e);
            }
            Ok(TerminationSignals {
                fd: OwnedFd::from_raw_fd(fd),
                old,
            })
        }
    }

    /// A signal that arrived, if any.
    fn pending(&self) -> Option<libc::c_int> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into a buffer of that size.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                info.as_mut_ptr().cast(),
                size,
            )
        };
        // SAFETY: a full read initialized it.
        (n == size as isize).then(|| unsafe { info.assume_init() }.ssi_signo as libc::c_int)
    }

    /// Ends ww by `signal`, as it would have ended without this: the default action.
    fn die_by(self, signal: libc::c_int) -> ! {
        // SAFETY: restoring the default action and the old mask, then raising the signal,
        // which ends the process; `_exit` covers a signal whose default does not.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
            libc::raise(signal);
            libc::_exit(128 + signal)
        }
    }
}

impl AsFd for TerminationSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for TerminationSignals {
    fn drop(&mut self) {
        // Signals that arrived meanwhile stay pending and are delivered now, as usual.
        // SAFETY: restores the mask saved in `catch`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// Removes the socket file ww created, once.
struct Unlink(Option<PathBuf>);

impl Unlink {
    fn now(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Unlink {
    fn drop(&mut self) {
        self.now();
    }
}

/// Receives the fds of one `--fdctl` channel (see the module docs). `value` is the flag's
/// value, for error messages. For [`FdctlChannel::Inherit`] the caller has probed the fd and
/// hands it over: it is closed when this returns.
pub fn receive(
    channel: &FdctlChannel,
    value: &str,
    limits: &FdctlLimits,
) -> Result<Vec<Received>, FdError> {
    let start = Instant::now();
    let at = |index: Option<usize>| Origin::Fdctl {
        channel: value.to_owned(),
        index,
    };
    let fail = |problem: String| FdError::new(FdErrorKind::Fdctl { problem }, at(None));
    let stream = match channel {
        FdctlChannel::Inherit(fd) => {
            // SAFETY: `inherit:N` hands fd N to ww; the plan made sure no grant names it.
            UnixStream::from(unsafe { OwnedFd::from_raw_fd(*fd) })
        }
        FdctlChannel::Path(path) => accept_one(path, start, limits, &fail)?,
    };
    let (data, fds) = read_all(&stream, start, limits, &fail)?;
    drop(stream);
    let text =
        String::from_utf8(data).map_err(|_| fail("the names sent are not UTF-8 text".into()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let lines: Vec<&str> = if text.is_empty() && fds.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    if lines.len() != fds.len() {
        return Err(fail(format!(
            "received {} fds but {} name lines; send one NAME line per fd",
            fds.len(),
            lines.len()
        )));
    }
    lines
        .into_iter()
        .zip(fds)
        .enumerate()
        .map(|(index, (line, fd))| {
            let (name, options) =
                parse_fdctl_line(line).map_err(|k| FdError::new(k, at(Some(index))))?;
            Ok(Received {
                name,
                options,
                fd,
                index,
            })
        })
        .collect()
}

fn remaining(start: Instant, limits: &FdctlLimits) -> Option<Duration> {
    limits
        .timeout
        .checked_sub(start.elapsed())
        .filter(|d| !d.is_zero())
}

fn accept_one(
    path: &Path,
    start: Instant,
    limits: &FdctlLimits,
    fail: &dyn Fn(String) -> FdError,
) -> Result<UnixStream, FdError> {
    // Before the socket exists: a terminating signal that arrives once it does is read
    // here, not acted on by default (which would leave the socket behind).
    let signals = TerminationSignals::catch()
        .map_err(|e| fail(format!("cannot watch for signals while waiting: {e}")))?;
    let listener = UnixListener::bind(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            fail(format!(
                "cannot listen at {}: it exists; remove it or pick a new path",
                path.display()
            ))
        } else {
            fail(format!("cannot listen at {}: {e}", path.display()))
        }
    })?;
    let mut unlink = Unlink(Some(path.to_owned()));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("cannot restrict {}: {e}", path.display())))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("cannot set up {}: {e}", path.display())))?;
    let timed_out = || {
        fail(format!(
            "no peer connected to {} within {:?}",
            path.display(),
            limits.timeout
        ))
    };
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("accept on {}: {e}", path.display()))),
        }
        let left = remaining(start, limits).ok_or_else(timed_out)?;
        let timeout = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [
            PollFd::new(&listener, PollFlags::IN),
            PollFd::new(&signals, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(fail(format!("poll on {}: {e}", path.display()))),
        }
        if let Some(signal) = signals.pending() {
            unlink.now();
            signals.die_by(signal);
        }
    };
    unlink.now();
    drop(signals);
    stream
        .set_nonblocking(false)
        .map_err(|e| fail(format!("cannot set up the connection: {e}")))?;
    let cred = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| fail(format!("cannot tell who connected: {e}")))?;
    let ours = rustix::process::geteuid();
    if cred.uid != ours {
        return Err(fail(format!(
            "the peer runs as uid {}, not ww's uid {}; refused",
            cred.uid.as_raw(),
            ours.as_raw()
        )));
    }
    Ok(stream)
}

fn read_all(
    stream: &UnixStream,
    start: Instant,
    limits: &FdctlLimits,
    fail: &dyn Fn(String) -> FdError,
) -> Result<(Vec<u8>, Vec<OwnedFd>), FdError> {
    let mut data = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(limits.max_fds.max(1)))];
    let mut buf = [0u8; 4096];
    let timed_out = || {
        fail(format!(
            "the peer did not finish within {:?}",
            limits.timeout
        ))
    };
    loop {
        let left = remaining(start, limits).ok_or_else(timed_out)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| fail(format!("cannot set a timeout: {e}")))?;
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match recvmsg(
            stream.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(timed_out()),
            Err(e) => return Err(fail(format!("receive: {e}"))),
        };
        let before = fds.len();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > limits.max_fds {
            return Err(fail(format!(
                "the peer sent more than {} fds",
                limits.max_fds
            )));
        }
        if msg.bytes == 0 && fds.len() == before {
            return Ok((data, fds));
        }
        data.extend_from_slice(&buf[..msg.bytes.min(buf.len())]);
        if data.len() > limits.max_bytes {
            return Err(fail(format!(
                "the peer sent more than {} bytes of names",
                limits.max_bytes
            )));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

    /// Sends `text` and `fds` in one message.
    pub(crate) fn send(stream: &UnixStream, text: impl AsRef<[u8]>, fds: &[BorrowedFd<'_>]) {
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        }
        sendmsg(
            stream,
            &[IoSlice::new(text.as_ref())],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    fn kind_of(r: Result<Probe, FdErrorKind>) -> String {
        match r {
            Ok(p) => format!("{:?} {:?}", p.access, p.object),
            Err(e) => format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    #[test]
    fn probes_tell_access_and_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let ro = std::fs::File::open(&path).unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let cases: Vec<(RawFd, &str)> = vec![
            (ro.as_raw_fd(), "Read File"),
            (wo.as_raw_fd(), "Write File"),
            (rw.as_raw_fd(), "ReadWrite File"),
            (reader.as_raw_fd(), "Read Other"),
            (writer.as_raw_fd(), "Write Other"),
            (a.as_raw_fd(), "ReadWrite Socket"),
            (d.as_raw_fd(), "Read Directory"),
            (-1, "NotHeld"),
            (4000, "NotHeld"),
        ];
        for (fd, want) in cases {
            assert_eq!(kind_of(probe_number(fd)), want, "fd {fd}");
        }
    }

    #[test]
    fn o_path_fds_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::PATH | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert_eq!(kind_of(probe_number(fd.as_raw_fd())), "Unusable");
    }

    fn checked(access: Mode, object: Object, options: &str) -> String {
        let options =
            GrantOptions::parse_items(options.split(',').filter(|s| !s.is_empty())).unwrap();
        match check(Probe { access, object }, &options, 7) {
            Ok((mode, kind)) => format!("{} {}", mode.as_str(), kind.as_str()),
            Err(e) => format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    #[test]
    fn modes_and_types_against_what_the_fd_allows() {
        use Mode::*;
        use Object::*;
        #[rustfmt::skip]
        let cases: &[(Mode, Object, &str, &str)] = &[
            // Defaults come from the fd.
            (Read, File, "", "r file"),
            (Write, Other, "", "w stream"),
            (ReadWrite, Socket, "", "rw socket"),
            // Narrowing is fine.
            (ReadWrite, File, "mode=r", "r file"),
            (ReadWrite, Socket, "mode=w", "w socket"),
            // Widening is not.
            (Read, File, "mode=rw", "ModeNotAllowed"),
            (Read, File, "mode=w", "ModeNotAllowed"),
            (Write, Other, "mode=rw", "ModeNotAllowed"),
            (Write, Other, "mode=r", "ModeNotAllowed"),
            // Types.
            (Read, File, "type=stream", "r stream"),
            (ReadWrite, Socket, "type=stream", "rw stream"),
            (Read, Other, "type=file", "TypeMismatch"),
            (Read, File, "type=socket", "TypeMismatch"),
            (ReadWrite, Socket, "type=file", "TypeMismatch"),
            (Read, Directory, "", "Unusable"),
        ];
        for (access, object, options, want) in cases {
            assert_eq!(
                checked(*access, *object, options),
                *want,
                "{access:?} {object:?} {options}"
            );
        }
    }

    #[test]
    fn dup_gives_a_cloexec_copy_above_stdio() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let copy = dup_number(reader.as_raw_fd()).unwrap();
        assert!(copy.as_raw_fd() >= 3);
        assert_ne!(copy.as_raw_fd(), reader.as_raw_fd());
        let flags = rustix::io::fcntl_getfd(&copy).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(probe(copy.as_fd(), 0).unwrap().access, Mode::Read);
    }

    fn env(fds: Option<&str>, pid: Option<&str>, names: Option<&str>) -> SystemdEnv {
        SystemdEnv {
            listen_fds: fds.map(Into::into),
            listen_pid: pid.map(Into::into),
            listen_fdnames: names.map(Into::into),
            first_fd: 3,
        }
    }

    #[test]
    fn systemd_rules() {
        let pid = 4242;
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Result<&'a [(&'a str, i32)], &'a str>,
            usize,
        );
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            (Some("2"), Some("4242"), None, "listen", Ok(&[("listen0", 3), ("listen1", 4)]), 0),
            (Some("2"), Some("4242"), None, "sock", Ok(&[("sock0", 3), ("sock1", 4)]), 0),
            (Some("2"), Some("4242"), Some("web:admin"), "listen", Ok(&[("web", 3), ("admin", 4)]), 0),
            // An unusable systemd name falls back to PREFIX+index, with a warning.
            (Some("2"), Some("4242"), Some("web.socket:admin"), "listen", Ok(&[("listen0", 3), ("admin", 4)]), 1),
            (Some("0"), Some("4242"), None, "listen", Ok(&[]), 0),
            // Not for us: ignored, with a warning.
            (Some("2"), Some("1"), None, "listen", Ok(&[]), 1),
            (Some("2"), None, None, "listen", Ok(&[]), 1),
            (Some("2"), Some("x"), None, "listen", Ok(&[]), 1),
            (None, Some("4242"), None, "listen", Ok(&[]), 1),
            // Malformed.
            (Some("two"), Some("4242"), None, "listen", Err("Systemd"), 0),
            (Some("-1"), Some("4242"), None, "listen", Err("Systemd"), 0),
            (Some("5000"), Some("4242"), None, "listen", Err("Systemd"), 0),
            (Some("2"), Some("4242"), Some("web"), "listen", Err("Systemd"), 0),
            (Some("1"), Some("4242"), Some("a:b"), "listen", Err("Systemd"), 0),
            (Some("1"), Some("4242"), None, "bad.prefix", Err("BadName"), 0),
        ];
        for (fds, p, names, prefix, want, warnings) in cases {
            let got = systemd_fds(&env(*fds, *p, *names), pid, prefix);
            let label = format!("{fds:?} {p:?} {names:?} {prefix}");
            match (got, want) {
                (Ok(import), Ok(want)) => {
                    let got: Vec<(&str, i32)> =
                        import.fds.iter().map(|(n, f)| (n.as_str(), *f)).collect();
                    assert_eq!(got, *want, "{label}");
                    assert_eq!(
                        import.warnings.len(),
                        *warnings,
                        "{label}: {:?}",
                        import.warnings
                    );
                }
                (Err(e), Err(want)) => {
                    assert!(format!("{:?}", e.kind()).starts_with(want), "{label}: {e}");
                }
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn systemd_env_from_lookup() {
        let env = SystemdEnv::from_lookup(|k| match k {
            "LISTEN_FDS" => Some("1".into()),
            "LISTEN_PID" => Some("7".into()),
            _ => None,
        });
        assert_eq!(env.first_fd, 3);
        let import = systemd_fds(&env, 7, "listen").unwrap();
        assert_eq!(import.fds, vec![("listen0".to_owned(), 3)]);
    }

    #[test]
    fn fdctl_values() {
        assert_eq!(
            FdctlChannel::parse("inherit:5").unwrap(),
            FdctlChannel::Inherit(5)
        );
        assert_eq!(
            FdctlChannel::parse("/run/ww.sock").unwrap(),
            FdctlChannel::Path("/run/ww.sock".into())
        );
        for bad in ["inherit:", "inherit:x", "inherit:-1", ""] {
            let e = FdctlChannel::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("--fdctl"), "{e}");
        }
    }

    fn short() -> FdctlLimits {
        FdctlLimits {
            timeout: Duration::from_secs(5),
            ..FdctlLimits::default()
        }
    }

    #[test]
    fn fdctl_path_receives_two_fds_with_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (reader, writer) = std::io::pipe().unwrap();
        let (sock, peer) = UnixStream::pair().unwrap();
        let client_path = path.clone();
        let client = std::thread::spawn(move || {
            let stream = loop {
                match UnixStream::connect(&client_path) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            // Names may be split across messages; fds pair with lines in order.
            send(&stream, "out,mode=w\nso", &[writer.as_fd()]);
            send(&stream, "ck\n", &[sock.as_fd()]);
        });
        let received = receive(
            &FdctlChannel::Path(path.clone()),
            &path.display().to_string(),
            &short(),
        )
        .unwrap();
        client.join().unwrap();
        assert!(!path.exists(), "the socket file is removed");
        let got: Vec<_> = received
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.options.mode,
                    r.index,
                    probe(r.fd.as_fd(), 0).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "out",
                    Some(Mode::Write),
                    0,
                    Probe {
                        access: Mode::Write,
                        object: Object::Other
                    }
                ),
                (
                    "sock",
                    None,
                    1,
                    Probe {
                        access: Mode::ReadWrite,
                        object: Object::Socket
                    }
                ),
            ]
        );
        // The received fds are live: what goes into them comes out of the originals' peers.
        rustix::io::write(&received[0].fd, b"hi").unwrap();
        let mut buf = [0u8; 2];
        rustix::io::read(&reader, &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        rustix::io::write(&received[1].fd, b"yo").unwrap();
        rustix::io::read(&peer, &mut buf).unwrap();
        assert_eq!(&buf, b"yo");
        assert!(
            rustix::io::fcntl_getfd(&received[0].fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
    }

    /// Runs `peer` on the other end of an `inherit:N` channel and returns what ww received.
    fn over_inherit(
        limits: FdctlLimits,
        peer: impl FnOnce(UnixStream),
    ) -> Result<Vec<Received>, FdError> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        peer(theirs);
        let n = std::os::fd::IntoRawFd::into_raw_fd(ours);
        receive(&FdctlChannel::Inherit(n), &format!("inherit:{n}"), &limits)
    }

    fn fdctl_error(limits: FdctlLimits, peer: impl FnOnce(UnixStream)) -> String {
        match over_inherit(limits, peer) {
            Ok(r) => panic!("received {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn fdctl_inherit_receives_and_checks() {
        let (r, _w) = std::io::pipe().unwrap();
        let got = over_inherit(short(), |s| send(&s, "in\n", &[r.as_fd()])).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "in");
        // An empty channel gives nothing.
        assert!(over_inherit(short(), drop).unwrap().is_empty());

        let e = fdctl_error(short(), |s| send(&s, "a\nb\n", &[r.as_fd()]));
        assert!(e.contains("received 1 fds but 2 name lines"), "{e}");
        let e = fdctl_error(short(), |s| send(&s, "a\n", &[]));
        assert!(e.contains("received 0 fds but 1 name lines"), "{e}");
        let e = fdctl_error(short(), |s| send(&s, "a\n\n", &[r.as_fd(), r.as_fd()]));
        assert!(e.contains("(received fd #1): bad grant name ``"), "{e}");
        let e = fdctl_error(short(), |s| send(&s, "a b\n", &[r.as_fd()]));
        assert!(e.contains("(received fd #0): bad grant name `a b`"), "{e}");
        let e = fdctl_error(short(), |s| send(&s, "a,move=true\n", &[r.as_fd()]));
        assert!(e.contains("unknown key `move`"), "{e}");
        let e = fdctl_error(short(), |s| send(&s, b"a\xff\n", &[r.as_fd()]));
        assert!(e.contains("not UTF-8"), "{e}");
        let one = FdctlLimits {
            max_fds: 1,
            ..short()
        };
        let e = fdctl_error(one, |s| send(&s, "a\nb\n", &[r.as_fd(), r.as_fd()]));
        assert!(e.contains("more than 1 fds"), "{e}");
        let e = fdctl_error(one, |s| {
            send(&s, "a\n", &[r.as_fd()]);
            send(&s, "b\n", &[r.as_fd()]);
        });
        assert!(e.contains("more than 1 fds"), "{e}");
        let tiny = FdctlLimits {
            max_bytes: 4,
            ..short()
        };
        let e = fdctl_error(tiny, |s| send(&s, "abcdefgh\n", &[r.as_fd()]));
        assert!(e.contains("more than 4 bytes"), "{e}");
        // A peer that never closes runs into the timeout.
        let quick = FdctlLimits {
            timeout: Duration::from_millis(100),
            ..short()
        };
        let mut keep = None;
        let e = fdctl_error(quick, |s| {
            send(&s, "a\n", &[r.as_fd()]);
            keep = Some(s);
        });
        assert!(e.contains("did not finish within"), "{e}");
        assert!(e.starts_with("--fdctl inherit:"), "{e}");
    }

    #[test]
    fn fdctl_path_errors() {
        let dir = tempfile::tempdir().unwrap();
        let quick = FdctlLimits {
            timeout: Duration::from_millis(100),
            ..short()
        };
        // Nobody connects.
        let path = dir.path().join("lonely.sock");
        let e = receive(&FdctlChannel::Path(path.clone()), "lonely", &quick).unwrap_err();
        assert!(e.to_string().contains("no peer connected"), "{e}");
        assert!(!path.exists());
        // The path exists already: never removed, never reused.
        let taken = dir.path().join("taken");
        std::fs::write(&taken, "mine").unwrap();
        let e = receive(&FdctlChannel::Path(taken.clone()), "taken", &quick).unwrap_err();
        assert!(e.to_string().contains("it exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&taken).unwrap(), "mine");
        // A directory that does not exist.
        let e = receive(
            &FdctlChannel::Path(dir.path().join("no/such.sock")),
            "x",
            &quick,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot listen"), "{e}");
    }
}
