//! The jail a native cell runs in, and starting it there.
//!
//! [`Jail::new`] makes a private jail directory (0700, removed when the [`Jail`] drops) that
//! becomes the cell's working directory, with a symlink `NAME -> /proc/self/fd/TARGET` for
//! every `pathlink=true` grant, and prepares a Landlock ruleset (in ww, before the fork).
//! [`Jail::command`] gives a `tokio::process::Command` whose `pre_exec` hook, in the child
//! between fork and exec, runs only async-signal-safe raw syscalls, in this order:
//!
//! 1. every fd the child must keep (fd 3's socket, the grants, the ruleset, the report pipe)
//!    is moved above every target (`F_DUPFD_CLOEXEC`), so no `dup2` clobbers another;
//! 2. `unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)`, else each of them
//!    alone; in a new mount namespace, `/` is made recursively private (nothing propagates
//!    back to the host); a new network namespace has only a loopback interface, down: no
//!    connection leaves it;
//! 3. `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the cell dies with ww;
//!    `prctl(PR_SET_NO_NEW_PRIVS)`: no setuid or file capability gains privileges;
//! 4. `landlock_restrict_self` with the ruleset: the filesystem is read-only (and executable)
//!    at [`SYSTEM_PATHS`], the program (and an image's directory), a `#!` interpreter's prefix
//!    (a virtualenv and the Python it points at); `/proc` readable; `/dev` files readable and
//!    writable; `--dir` grants at their host paths; the jail directory read-write. With ABI 4
//!    or later TCP bind and connect are refused; with ABI 6 or later, signals and abstract
//!    Unix sockets outside the cell's domain;
//! 5. one byte on the report pipe says which of these held;
//! 6. the socket lands on fd 3 and each grant on its target (`dup2`, which clears
//!    close-on-exec), and every other fd above 2 is marked close-on-exec
//!    (`close_range(CLOSE_RANGE_CLOEXEC)`), so after exec the program holds stdio, fd 3 and
//!    its grants, nothing else.
//!
//! The environment is cleared and set to what was granted. No step's failure fails the run
//! except a `dup2` (the cell would miss a grant): a refused protection is reported, and ww
//! logs a warning.
//!
//! 7. With a new PID namespace, the hook forks the namespace's init, which forks the program
//!    (see `pid_namespace`): the program is pid 2, init forwards signals to it and reaps
//!    everything it leaves behind, and the namespace dies with it.

use std::io::Read as _;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use super::{NativeError, NativeProgram};
use crate::fds::Grant;

/// Read-only system paths a program needs to run: its loader, libraries, shells and
/// configuration. Those that do not exist are skipped.
pub const SYSTEM_PATHS: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc",
];

/// Which protections held for a cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protections {
    /// A new user namespace.
    pub user_ns: bool,
    /// A new mount namespace.
    pub mount_ns: bool,
    /// A new network namespace (no interface but a loopback that is down).
    pub net_ns: bool,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The Landlock ABI the ruleset was made for, if the cell is restricted by it.
    pub landlock: Option<i32>,
    /// A new PID namespace, with a small init (pid 1) that forwards signals to the program
    /// and reaps whatever it leaves behind.
    pub pid_ns: bool,
}

const USER_NS: u8 = 1;
const MOUNT_NS: u8 = 2;
const NET_NS: u8 = 4;
const NO_NEW_PRIVS: u8 = 8;
const LANDLOCK: u8 = 16;
const PID_NS: u8 = 32;

impl Protections {
    fn from_bits(bits: u8, abi: Option<i32>) -> Protections {
        Protections {
            user_ns: bits & USER_NS != 0,
            mount_ns: bits & MOUNT_NS != 0,
            net_ns: bits & NET_NS != 0,
            no_new_privs: bits & NO_NEW_PRIVS != 0,
            landlock: abi.filter(|_| bits & LANDLOCK != 0),
            pid_ns: bits & PID_NS != 0,
        }
    }

    /// One line for the log: `user-ns=yes mount-ns=yes net-ns=yes no-new-privs=yes landlock=abi7 pid-ns=yes`.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "user-ns={} mount-ns={} net-ns={} no-new-privs={} landlock={} pid-ns={}",
            yn(self.user_ns),
            yn(self.mount_ns),
            yn(self.net_ns),
            yn(self.no_new_privs),
            self.landlock
                .map_or_else(|| "no".to_owned(), |abi| format!("abi{abi}")),
            yn(self.pid_ns),
        )
    }

    /// What did not hold, one phrase each, for warnings.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.user_ns {
            missing.push("no user namespace");
        }
        if !self.mount_ns {
            missing.push("no mount namespace");
        }
        if !self.net_ns {
            missing.push("no network namespace: the cell may reach the network");
        }
        if !self.no_new_privs {
            missing.push("no_new_privs not set");
        }
        if self.landlock.is_none() {
            missing.push("no Landlock: the cell may read the host's files");
        }
        if !self.pid_ns {
            missing.push("no PID namespace: processes the cell leaves behind are not reaped");
        }
        missing
    }
}

/// A jail: its directory and the Landlock ruleset its cell is restricted by.
#[derive(Debug)]
pub struct Jail {
    dir: tempfile::TempDir,
    ruleset: Option<(OwnedFd, i32)>,
}

impl Jail {
    /// Makes the jail directory for `program`, with its pathlinks, and the Landlock ruleset
    /// (if the kernel has Landlock) allowing what the module's docs list plus `dirs` (host
    /// path, read-only).
    pub fn new(
        program: &NativeProgram,
        grants: &[Grant],
        dirs: &[(PathBuf, bool)],
    ) -> Result<Jail, NativeError> {
        let err = |what, source| NativeError::Spawn {
            path: program.path.clone(),
            what,
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("ww-jail-")
            .tempdir()
            .map_err(|e| err("creating the jail directory", e))?;
        for grant in grants.iter().filter(|g| g.pathlink()) {
            let link = dir.path().join(grant.name());
            std::os::unix::fs::symlink(format!("/proc/self/fd/{}", grant.target()), &link)
                .map_err(|e| err("creating a pathlink", e))?;
        }
        let ruleset = match landlock::ruleset(program, dir.path(), dirs) {
            Ok(ruleset) => ruleset,
            Err(e) => {
                tracing::warn!("cannot prepare the Landlock ruleset: {e}");
                None
            }
        };
        Ok(Jail { dir, ruleset })
    }

    /// The jail directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `program`, copied into the jail directory and made executable (mode 0700), so a
    /// program from a shared store (the IPFS cache) runs from a private copy that goes away
    /// with the jail.
    pub fn private_copy(&self, program: NativeProgram) -> Result<NativeProgram, NativeError> {
        use std::os::unix::fs::PermissionsExt as _;
        let file = program
            .path
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "program".into());
        // In a directory of its own: a grant's pathlink (names never start with a dot) cannot
        // stand where the copy is written.
        let bin = self.dir.path().join(".ww-program");
        let copy = bin.join(file);
        let io = |source| NativeError::Io {
            path: copy.clone(),
            source,
        };
        std::fs::create_dir(&bin).map_err(io)?;
        std::fs::copy(&program.path, &copy).map_err(io)?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(NativeProgram {
            path: copy,
            ..program
        })
    }

    /// The command that runs `program` in this jail with `args` and exactly `env`, holding
    /// `socket` at fd 3 and each grant at its target, plus the pipe the child reports its
    /// protections on (read it with [`Report::protections`] after spawning, once the command
    /// is dropped or spawned).
    pub fn command(
        &self,
        program: &NativeProgram,
        args: &[String],
        env: &[(String, String)],
        socket: &OwnedFd,
        grants: &[Grant],
    ) -> Result<(tokio::process::Command, Report), NativeError> {
        let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| NativeError::Spawn {
                path: program.path.clone(),
                what: "creating the report pipe",
                source: e.into(),
            })?;
        let mut cmd = std::process::Command::new(&program.path);
        cmd.arg0(&program.name)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
        // Everything the hook needs, computed here: it may not allocate.
        let mut moves: Vec<(RawFd, RawFd)> = vec![(socket.as_raw_fd(), 3)];
        moves.extend(grants.iter().map(|g| (g.fd().as_raw_fd(), g.target())));
        let mut keep: Vec<RawFd> = moves.iter().map(|&(_, t)| t).collect();
        keep.sort_unstable();
        keep.dedup();
        let floor = keep.last().copied().unwrap_or(3).max(3) + 1;
        let mut moved: Vec<RawFd> = vec![-1; moves.len()];
        let ruleset = self.ruleset.as_ref().map(|(fd, _)| fd.as_raw_fd());
        let report = report_w.as_raw_fd();
        let hook = move || -> std::io::Result<()> {
            // SAFETY (for the whole hook): raw syscalls on fds this process holds, no
            // allocation, no locks: async-signal-safe between fork and exec.
            unsafe { jail_hook(&moves, &mut moved, &keep, floor, ruleset, report) }
        };
        // SAFETY: the hook only makes async-signal-safe syscalls (see `jail_hook`).
        unsafe {
            cmd.pre_exec(hook);
        }
        let report = Report {
            read: report_r,
            write: Some(report_w),
            abi: self.ruleset.as_ref().map(|(_, abi)| *abi),
        };
        Ok((tokio::process::Command::from(cmd), report))
    }
}

/// The read end of a child's protection report.
#[derive(Debug)]
pub struct Report {
    read: OwnedFd,
    write: Option<OwnedFd>,
    abi: Option<i32>,
}

impl Report {
    /// After the spawn: what the child said held (nothing, if it said nothing).
    pub fn protections(mut self) -> Protections {
        drop(self.write.take());
        let mut file = std::fs::File::from(self.read);
        let mut byte = [0u8; 1];
        let bits = match file.read(&mut byte) {
            Ok(1) => byte[0],
            _ => 0,
        };
        Protections::from_bits(bits, self.abi)
    }
}

/// The `pre_exec` hook; see the module's docs for the steps.
///
/// # Safety
/// Runs between fork and exec: raw syscalls only.
unsafe fn jail_hook(
    moves: &[(RawFd, RawFd)],
    moved: &mut [RawFd],
    keep: &[RawFd],
    floor: RawFd,
    ruleset: Option<RawFd>,
    report: RawFd,
) -> std::io::Result<()> {
    // SAFETY: all calls below are raw syscalls with valid arguments.
    unsafe {
        // 1. Out of the way of every target.
        for (slot, &(src, _)) in moved.iter_mut().zip(moves) {
            *slot = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor);
            if *slot < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let ruleset = ruleset.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor));
        let report = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, floor);
        let mut bits = 0u8;
        // 2. Namespaces.
        let all = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWPID;
        if libc::unshare(all) == 0 {
            bits |= USER_NS | MOUNT_NS | NET_NS | PID_NS;
        } else {
            for (flag, bit) in [
                (libc::CLONE_NEWUSER, USER_NS),
                (libc::CLONE_NEWNS, MOUNT_NS),
                (libc::CLONE_NEWNET, NET_NS),
                (libc::CLONE_NEWPID, PID_NS),
            ] {
                if libc::unshare(flag) == 0 {
                    bits |= bit;
                }
            }
        }
        if bits & MOUNT_NS != 0 {
            // Nothing mounted in here propagates out.
            let _ = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
        }
        // 3. No privilege gained by exec; killed if ww dies.
        let _ = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 {
            bits |= NO_NEW_PRIVS;
        }
        // 4. Landlock.
        if let Some(fd) = ruleset.filter(|&fd| fd >= 0)
            && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) == 0
        {
            bits |= LANDLOCK;
        }
        // 5. The report.
        if report >= 0 {
            let _ = libc::write(report, (&raw const bits).cast(), 1);
        }
        // 6. The fds.
        for (&fd, &(_, target)) in moved.iter().zip(moves) {
            if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut from: RawFd = 3;
        for &k in keep {
            if k > from {
                cloexec_range(from, k - 1);
            }
            from = from.max(k + 1);
        }
        cloexec_range(from, RawFd::MAX);
        // 7. In a new PID namespace, the next fork is its pid 1: see `pid_namespace`.
        if bits & PID_NS != 0 {
            pid_namespace();
        }
    }
    Ok(())
}

/// The pid that the signal handlers of [`pid_namespace`]'s supervisors forward to.
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Forwards a signal to [`FORWARD_TO`]: async-signal-safe.
extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Makes the supervisor forward the signals a user or ww sends to `pid`.
///
/// # Safety
/// Raw syscalls only.
unsafe fn forward_signals_to(pid: libc::pid_t) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: sigaction with a zeroed, then filled, struct and an async-signal-safe handler.
    unsafe {
        for signal in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Closes every fd except `keep`.
///
/// # Safety
/// Raw syscalls only.
unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: closing fd numbers; an fd that is not open is skipped.
    unsafe {
        for (first, last) in [(0, keep - 1), (keep + 1, RawFd::MAX)] {
            if first > last {
                continue;
            }
            let r = libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0,
            );
            if r != 0 {
                for fd in first..=last.min(65536) {
                    libc::close(fd);
                }
            }
        }
    }
}

/// Waits for `pid`, through signals; its raw wait status.
///
/// # Safety
/// Raw syscalls only.
unsafe fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid with a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Ends this process the way a wait `status` says a process ended: by the same signal,
/// or with the same code.
///
/// # Safety
/// Raw syscalls only; never returns.
unsafe fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: signal, kill and _exit are async-signal-safe.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1
        })
    }
}

/// After `unshare(CLONE_NEWPID)`: the process ww spawned (outside the namespace) forks the
/// namespace's init (pid 1), which forks the program (pid 2). Only the program returns (and
/// execs); the two supervisors never do.
///
/// - The outer supervisor (the pid ww knows) forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
///   SIGUSR1 and SIGUSR2 to init, and ends as the program ended (the same signal or code,
///   which init passes it over a pipe).
/// - Init forwards the same signals to the program (pid 1 gets only signals it handles, so
///   the program is not pid 1), reaps every process in the namespace, and exits when the
///   program does; the kernel then kills whatever is left in the namespace.
/// - Both close every fd they do not need (so ww's spawn sees the exec, and no grant is held
///   by a supervisor), and die with their parent (`PR_SET_PDEATHSIG`).
///
/// If a fork or the pipe fails, it returns in whatever process it is in, which then execs
/// the program without the namespace's protection.
///
/// # Safety
/// Raw syscalls only; between fork and exec.
unsafe fn pid_namespace() {
    // SAFETY: raw syscalls only; each branch below never returns except the program's.
    unsafe {
        let mut pipe: [RawFd; 2] = [-1, -1];
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return;
        }
        let init = libc::fork();
        if init < 0 {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
            return;
        }
        if init > 0 {
            // The outer supervisor.
            close_all_but(pipe[0]);
            forward_signals_to(init);
            let init_status = wait_for(init).unwrap_or(0);
            let mut program_status: libc::c_int = 0;
            let n = libc::read(pipe[0], (&raw mut program_status).cast(), 4);
            exit_like(if n == 4 { program_status } else { init_status });
        }
        // Init, pid 1 of the new namespace.
        libc::close(pipe[0]);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let program = libc::fork();
        if program == 0 {
            // The program: on to exec.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            return;
        }
        close_all_but(pipe[1]);
        if program < 0 {
            libc::_exit(127);
        }
        forward_signals_to(program);
        // Reap every process of the namespace until the program itself ends.
        let mut status: libc::c_int = 0;
        loop {
            let mut reaped: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut reaped, 0);
            if pid == program {
                status = reaped;
                break;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        libc::write(pipe[1], (&raw const status).cast(), 4);
        libc::_exit(0);
    }
}

/// Marks fds `first..=last` close-on-exec.
///
/// # Safety
/// Raw syscalls only.
unsafe fn cloexec_range(first: RawFd, last: RawFd) {
    // SAFETY: raw syscalls on fd numbers; an fd that is not open is skipped.
    unsafe {
        let r = libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if r != 0 {
            // An old kernel: one fd at a time, up to a bound.
            let end = last.min(first.saturating_add(65536));
            for fd in first..=end {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Landlock, with raw syscalls: making the ruleset in ww, before the fork.
mod landlock {
    use super::*;

    const READ_DIR: u64 = 1 << 3;
    const EXECUTE: u64 = 1 << 0;
    const WRITE_FILE: u64 = 1 << 1;
    const READ_FILE: u64 = 1 << 2;
    const ALL_V1: u64 = (1 << 13) - 1;
    const REFER: u64 = 1 << 13;
    const TRUNCATE: u64 = 1 << 14;
    const IOCTL_DEV: u64 = 1 << 15;
    /// The rights that apply to a file (not a directory).
    const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
    const NET_BIND_TCP: u64 = 1;
    const NET_CONNECT_TCP: u64 = 2;
    const SCOPE_ABSTRACT_UNIX: u64 = 1;
    const SCOPE_SIGNAL: u64 = 2;
    const RULE_PATH_BENEATH: libc::c_int = 1;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }

    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// The kernel's Landlock ABI version, if it has Landlock.
    fn abi() -> Option<i32> {
        // SAFETY: the documented version query: null attr, size 0, flag VERSION.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                1u32,
            )
        };
        (v > 0).then_some(v as i32)
    }

    /// The ruleset and its ABI; `None` without Landlock.
    pub(super) fn ruleset(
        program: &NativeProgram,
        jail: &Path,
        dirs: &[(PathBuf, bool)],
    ) -> std::io::Result<Option<(OwnedFd, i32)>> {
        let Some(abi) = abi() else {
            return Ok(None);
        };
        let mut fs = ALL_V1;
        if abi >= 2 {
            fs |= REFER;
        }
        if abi >= 3 {
            fs |= TRUNCATE;
        }
        if abi >= 5 {
            fs |= IOCTL_DEV;
        }
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL
            } else {
                0
            },
        };
        let size = match abi {
            1..=3 => 8usize,
            4 | 5 => 16,
            _ => 24,
        };
        // SAFETY: a valid attr of at least `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &raw const attr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let read = EXECUTE | READ_FILE | READ_DIR;
        let mut rules: Vec<(PathBuf, u64)> = SYSTEM_PATHS
            .iter()
            .map(|p| (PathBuf::from(p), read))
            .collect();
        rules.push(("/proc".into(), READ_FILE | READ_DIR));
        rules.push((
            "/dev".into(),
            READ_FILE | WRITE_FILE | READ_DIR | TRUNCATE | IOCTL_DEV,
        ));
        rules.push((program.path.clone(), read));
        if let Some(root) = &program.root {
            rules.push((root.clone(), read));
        }
        if let Some(interpreter) = &program.interpreter {
            for path in [Some(interpreter.clone()), interpreter.canonicalize().ok()]
                .into_iter()
                .flatten()
            {
                rules.push((prefix_of(&path), read));
            }
        }
        for (dir, read_only) in dirs {
            let rights = if *read_only { read } else { fs };
            rules.push((dir.clone(), rights));
        }
        rules.push((jail.to_owned(), fs));
        for (path, rights) in rules {
            let Ok(file) = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&path)
            else {
                continue;
            };
            let is_dir = file.metadata().is_ok_and(|m| m.is_dir());
            let mut allowed = rights & fs;
            if !is_dir {
                allowed &= FILE_RIGHTS;
            }
            let rule = PathBeneath {
                allowed_access: allowed,
                parent_fd: file.as_fd().as_raw_fd(),
            };
            // SAFETY: a valid rule for the ruleset fd we own.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset.as_raw_fd(),
                    RULE_PATH_BENEATH,
                    &raw const rule,
                    0u32,
                )
            };
            if r != 0 {
                tracing::warn!(
                    "Landlock: cannot allow {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Some((ruleset, abi)))
    }

    /// What to allow for an interpreter: its prefix (`/x/venv` for `/x/venv/bin/python`),
    /// when that is at least two levels deep, else the interpreter alone.
    fn prefix_of(interpreter: &Path) -> PathBuf {
        let prefix = interpreter
            .parent()
            .filter(|bin| bin.file_name().is_some_and(|n| n == "bin"))
            .and_then(Path::parent);
        match prefix {
            Some(p) if p.components().count() >= 3 => p.to_owned(),
            _ => interpreter.to_owned(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn interpreter_prefixes() {
            assert_eq!(
                prefix_of(Path::new("/work/x/pyenv/bin/python")),
                Path::new("/work/x/pyenv")
            );
            assert_eq!(prefix_of(Path::new("/bin/sh")), Path::new("/bin/sh"));
            assert_eq!(
                prefix_of(Path::new("/usr/bin/env")),
                Path::new("/usr/bin/env")
            );
        }
    }
}
