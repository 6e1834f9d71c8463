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
//! 2. `unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET)`, else each of them alone; in a new
//!    mount namespace, `/` is made recursively private (nothing propagates back to the host);
//!    a new network namespace has only a loopback interface, down: no connection leaves it;
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
//! logs a warning. A PID namespace is not used: the cell's own children are not reaped by ww.

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
}

const USER_NS: u8 = 1;
const MOUNT_NS: u8 = 2;
const NET_NS: u8 = 4;
const NO_NEW_PRIVS: u8 = 8;
const LANDLOCK: u8 = 16;

impl Protections {
    fn from_bits(bits: u8, abi: Option<i32>) -> Protections {
        Protections {
            user_ns: bits & USER_NS != 0,
            mount_ns: bits & MOUNT_NS != 0,
            net_ns: bits & NET_NS != 0,
            no_new_privs: bits & NO_NEW_PRIVS != 0,
            landlock: abi.filter(|_| bits & LANDLOCK != 0),
        }
    }

    /// One line for the log: `user-ns=yes mount-ns=yes net-ns=yes no-new-privs=yes landlock=abi7 pid-ns=no`.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "user-ns={} mount-ns={} net-ns={} no-new-privs={} landlock={} pid-ns=no",
            yn(self.user_ns),
            yn(self.mount_ns),
            yn(self.net_ns),
            yn(self.no_new_privs),
            self.landlock
                .map_or_else(|| "no".to_owned(), |abi| format!("abi{abi}")),
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
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET) == 0 {
            bits |= USER_NS | MOUNT_NS | NET_NS;
        } else {
            for (flag, bit) in [
                (libc::CLONE_NEWUSER, USER_NS),
                (libc::CLONE_NEWNS, MOUNT_NS),
                (libc::CLONE_NEWNET, NET_NS),
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
    }
    Ok(())
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
