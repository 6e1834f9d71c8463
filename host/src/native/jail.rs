//! The jail a native cell runs in, and starting it there.
//!
//! Everything is computed in ww before the fork ([`Jail::command`]): the root's steps
//! ([`super::root`], from handles opened once), the Landlock ruleset
//! ([`super::ruleset`]), the seccomp filter ([`super::seccomp`]), the uid and gid maps, every
//! C string. The `pre_exec` hook then runs only raw async-signal-safe syscalls (no
//! allocation, no locks), in this order:
//!
//! 1. every fd the child must keep (fd 3's socket, the grants, the ruleset, the report pipe)
//!    is moved above every target (`F_DUPFD_CLOEXEC`), so no `dup2` clobbers another;
//! 2. `PR_SET_PDEATHSIG`: the jail dies with ww;
//! 3. `unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)`; the new network
//!    namespace has only a loopback that is down: no connection leaves it, and abstract Unix
//!    sockets are per network namespace;
//! 4. `setgroups` deny, `uid_map` and `gid_map` (ww's uid and gid map to themselves), then
//!    `PR_SET_DUMPABLE` 0 (the supervisors are copies of ww's memory: nothing in the jail
//!    may read them; after the maps, which a process that is not dumpable cannot write);
//! 5. `/` made recursively private: nothing mounted here reaches the host;
//! 6. the command line blanked to `ww-jail-init` (the supervisors are forks of ww: the
//!    cell must not read ww's arguments in `/proc/1/cmdline`), then the fork of the PID
//!    namespace's init ([`super::pidns`]): the process ww spawned stays outside as the
//!    outer supervisor;
//! 7. in init: the cell's root is built and entered ([`super::root::Plan::build`]: tmpfs,
//!    binds from handles, a new `/proc` for this PID namespace, `pivot_root`);
//! 8. init forks the program (pid 2) and supervises it;
//! 9. in the program: `chdir` to `/jail`, `no_new_privs`, Landlock (the late rules for
//!    `/proc`, `/tmp`, `/dev/shm`, then `landlock_restrict_self`; after `pivot_root`, since a
//!    Landlock domain may not mount), the seccomp filter, every capability dropped (bounding
//!    set, ambient set, `SECBIT_NOROOT`, then `capset` to nothing, so root in the user
//!    namespace holds no capability after exec), the report written, the socket on fd 3 and
//!    each grant on its target (`dup2`), every other fd above 2 close-on-exec.
//!
//! **Fail closed.** Each step that fails reports which step and the kernel's errno on the
//! report pipe ([`Report`]); without `allow_weak` the hook then fails, the spawn fails, and
//! ww fails the run with [`NativeError::WeakJail`] naming the protection and the reason. A
//! protection ww can tell is missing before the fork (no Landlock, no seccomp filter for this
//! architecture, a root that cannot be planned) fails the same way before anything starts.
//! With `allow_weak` (`--allow-weak-jail`), the hook goes on without what failed (a root
//! that fails part-way is abandoned whole) and ww logs a warning for each missing
//! protection. A failed `dup2` (a missing grant) always fails the spawn.
//!
//! The environment is cleared and set to what was granted; the jail directory is removed
//! when the [`Jail`] drops.

use std::ffi::CString;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Component, Path, PathBuf};

use super::pidns::{cloexec_range, fork_init, fork_program, rename_process};
use super::root::{self, Access, Builder, GUEST_CWD, Plan};
use super::ruleset::{self, Late, Prepared};
use super::seccomp::{self, Filter};
use super::{NativeError, NativeProgram};
use crate::fds::Grant;

/// A directory a native cell is granted: a handle, never a path.
#[derive(Debug)]
pub struct JailDir {
    /// An open directory (`O_PATH` or `O_DIRECTORY`): what the cell sees, whatever happens
    /// to the host path it was opened by.
    pub dir: OwnedFd,
    /// Where the cell sees it (absolute).
    pub at: PathBuf,
    /// Whether the cell may only read it.
    pub read_only: bool,
}

/// Which protections held for a cell, and the first that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protections {
    /// A new user namespace.
    pub user_ns: bool,
    /// A new mount namespace.
    pub mount_ns: bool,
    /// A new network namespace (no interface but a loopback that is down).
    pub net_ns: bool,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The Landlock ABI the cell is restricted by, if it is.
    pub landlock: Option<i32>,
    /// A new PID namespace, with a small init (pid 1) that forwards signals to the program
    /// and reaps whatever it leaves behind.
    pub pid_ns: bool,
    /// The cell's own root (`pivot_root` into binds of what it needs).
    pub root: bool,
    /// The seccomp filter.
    pub seccomp: bool,
    /// Every capability dropped before exec.
    pub no_caps: bool,
    /// The first protection that failed, and why.
    pub failure: Option<Failure>,
}

/// A protection that could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which protection, with the step that failed.
    pub protection: String,
    /// The kernel's reason.
    pub reason: String,
}

const USER_NS: u16 = 1;
const MOUNT_NS: u16 = 2;
const NET_NS: u16 = 4;
const NO_NEW_PRIVS: u16 = 8;
const LANDLOCK: u16 = 16;
const PID_NS: u16 = 32;
const ROOT: u16 = 64;
const SECCOMP: u16 = 128;
const NO_CAPS: u16 = 256;

/// The hook's steps, as reported (a root step `i` is `STEP_ROOT + i`).
const STEP_UNSHARE: u16 = 1;
const STEP_SETGROUPS: u16 = 2;
const STEP_UID_MAP: u16 = 3;
const STEP_GID_MAP: u16 = 4;
const STEP_PRIVATE: u16 = 5;
const STEP_FORK_INIT: u16 = 6;
const STEP_FORK_PROGRAM: u16 = 7;
const STEP_CHDIR: u16 = 8;
const STEP_NO_NEW_PRIVS: u16 = 9;
const STEP_LANDLOCK_RULE: u16 = 10;
const STEP_LANDLOCK: u16 = 11;
const STEP_SECCOMP: u16 = 12;
const STEP_CAPS: u16 = 13;
const STEP_ROOT: u16 = 0x100;

/// The protection a reported step belongs to, and what the step is.
fn step_name(step: u16, root_steps: &[String]) -> String {
    match step {
        STEP_UNSHARE => "namespaces: unshare(user, mount, network, PID)".to_owned(),
        STEP_SETGROUPS => "user namespace: writing /proc/self/setgroups".to_owned(),
        STEP_UID_MAP => "user namespace: writing /proc/self/uid_map".to_owned(),
        STEP_GID_MAP => "user namespace: writing /proc/self/gid_map".to_owned(),
        STEP_PRIVATE => "mount namespace: making / private".to_owned(),
        STEP_FORK_INIT => "PID namespace: forking its init".to_owned(),
        STEP_FORK_PROGRAM => "PID namespace: forking the program".to_owned(),
        STEP_CHDIR => "working directory: chdir".to_owned(),
        STEP_NO_NEW_PRIVS => "no_new_privs: prctl".to_owned(),
        STEP_LANDLOCK_RULE => "Landlock: a rule for /proc, /tmp or /dev/shm".to_owned(),
        STEP_LANDLOCK => "Landlock: landlock_restrict_self".to_owned(),
        STEP_SECCOMP => "seccomp: installing the filter".to_owned(),
        STEP_CAPS => "capabilities: dropping them".to_owned(),
        s if s >= STEP_ROOT => format!(
            "own root: {}",
            root_steps
                .get(usize::from(s - STEP_ROOT))
                .map_or("a step", String::as_str)
        ),
        _ => "the jail".to_owned(),
    }
}

impl Protections {
    fn from_bits(bits: u16, abi: Option<i32>) -> Protections {
        Protections {
            user_ns: bits & USER_NS != 0,
            mount_ns: bits & MOUNT_NS != 0,
            net_ns: bits & NET_NS != 0,
            no_new_privs: bits & NO_NEW_PRIVS != 0,
            landlock: abi.filter(|_| bits & LANDLOCK != 0),
            pid_ns: bits & PID_NS != 0,
            root: bits & ROOT != 0,
            seccomp: bits & SECCOMP != 0,
            no_caps: bits & NO_CAPS != 0,
            failure: None,
        }
    }

    /// One line for the log: `user-ns=yes mount-ns=yes net-ns=yes no-new-privs=yes
    /// landlock=abi7 pid-ns=yes root=yes seccomp=yes caps=none`.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "user-ns={} mount-ns={} net-ns={} no-new-privs={} landlock={} pid-ns={} root={} \
             seccomp={} caps={}",
            yn(self.user_ns),
            yn(self.mount_ns),
            yn(self.net_ns),
            yn(self.no_new_privs),
            self.landlock
                .map_or_else(|| "no".to_owned(), |abi| format!("abi{abi}")),
            yn(self.pid_ns),
            yn(self.root),
            yn(self.seccomp),
            if self.no_caps { "none" } else { "kept" },
        )
    }

    /// What did not hold, one phrase each, for warnings.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        for (held, what) in [
            (self.user_ns, "no user namespace"),
            (self.mount_ns, "no mount namespace"),
            (
                self.net_ns,
                "no network namespace: the cell may reach the network",
            ),
            (
                self.pid_ns,
                "no PID namespace: the cell sees the host's processes, and what it leaves \
                 behind is not reaped",
            ),
            (
                self.root,
                "no root of its own: the cell sees the host's filesystem (and its sockets) \
                 wherever Landlock allows",
            ),
            (self.no_new_privs, "no_new_privs not set"),
            (
                self.landlock.is_some(),
                "no Landlock: the cell may read and write whatever its root shows",
            ),
            (
                self.seccomp,
                "no seccomp filter: the cell may make namespaces, mount, ptrace",
            ),
            (self.no_caps, "capabilities kept"),
        ] {
            if !held {
                missing.push(what);
            }
        }
        missing
    }

    /// Whether the cell may run with these protections: with every one, yes; else only
    /// with `allow_weak`, and then the warnings to log. Without it, the error naming the
    /// first protection that failed, the kernel's reason and the flag.
    pub fn check(&self, allow_weak: bool, path: &Path) -> Result<Vec<String>, NativeError> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        if allow_weak {
            let mut warnings: Vec<String> = missing.iter().map(|m| (*m).to_owned()).collect();
            if let Some(f) = &self.failure {
                warnings.push(format!("{} failed: {}", f.protection, f.reason));
            }
            return Ok(warnings);
        }
        let (protection, reason) = match &self.failure {
            Some(f) => (f.protection.clone(), f.reason.clone()),
            None => (
                missing[0].to_owned(),
                "the jail did not report it in force".to_owned(),
            ),
        };
        Err(NativeError::WeakJail {
            path: path.to_owned(),
            protection,
            reason,
        })
    }
}

/// A jail: its private directory (0700, removed on drop), holding the cell's working
/// directory and the empty staging directory its root is built on, and the handles of the
/// directories it is granted.
#[derive(Debug)]
pub struct Jail {
    /// Removed (with everything in it) when the jail drops.
    _dir: tempfile::TempDir,
    work: PathBuf,
    staging: PathBuf,
    dirs: Vec<JailDir>,
    allow_weak: bool,
}

/// Whether `at` is a guest path a native cell may have a grant at: absolute, not `/`, and
/// not in the `/proc` or `/dev` the jail makes.
fn grant_path_ok(at: &Path) -> bool {
    at.is_absolute()
        && at
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && at != Path::new("/")
        && !at.starts_with("/proc")
        && !at.starts_with("/dev")
}

impl Jail {
    /// Makes the jail directory for `program`, with a symlink `NAME -> /proc/self/fd/TARGET`
    /// for each `pathlink=true` grant in its working directory, and keeps (a duplicate of)
    /// each directory handle. `allow_weak`: a protection that cannot be set up is a warning,
    /// not an error.
    pub fn new(
        program: &NativeProgram,
        grants: &[Grant],
        dirs: &[JailDir],
        allow_weak: bool,
    ) -> Result<Jail, NativeError> {
        let err = |what, source| NativeError::Spawn {
            path: program.path.clone(),
            what,
            source,
        };
        for d in dirs {
            if !grant_path_ok(&d.at) {
                return Err(NativeError::GrantPath {
                    guest: d.at.display().to_string(),
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ww-jail-")
            .tempdir()
            .map_err(|e| err("creating the jail directory", e))?;
        let work = dir.path().join("work");
        let staging = dir.path().join("root");
        for d in [&work, &staging] {
            std::fs::create_dir(d).map_err(|e| err("creating the jail directory", e))?;
        }
        for grant in grants.iter().filter(|g| g.pathlink()) {
            let link = work.join(grant.name());
            std::os::unix::fs::symlink(format!("/proc/self/fd/{}", grant.target()), &link)
                .map_err(|e| err("creating a pathlink", e))?;
        }
        let dirs = dirs
            .iter()
            .map(|d| {
                Ok(JailDir {
                    dir: d.dir.try_clone()?,
                    at: d.at.clone(),
                    read_only: d.read_only,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| err("duplicating a directory handle", e))?;
        Ok(Jail {
            _dir: dir,
            work,
            staging,
            dirs,
            allow_weak,
        })
    }

    /// The jail directory: the cell's working directory, at [`GUEST_CWD`] in its root.
    pub fn path(&self) -> &Path {
        &self.work
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
        let bin = self.work.join(".ww-program");
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

    /// Plans the cell's root for `program` (see [`super::root`]).
    fn plan(&self, program: &NativeProgram) -> std::io::Result<Builder> {
        let tty = [0, 1, 2].iter().any(|&fd| {
            rustix::termios::isatty(unsafe {
                // SAFETY: stdio fds of this process, borrowed for the call.
                std::os::fd::BorrowedFd::borrow_raw(fd)
            })
        });
        let mut b = Builder::new(&self.staging, tty)?;
        b.bind(
            root::open_path(&self.work)?,
            Path::new(GUEST_CWD),
            false,
            Access::Write,
        )?;
        // An image's directory first: the program in it needs no bind of its own.
        let mut needed: Vec<PathBuf> = program.root.iter().cloned().collect();
        needed.push(program.path.clone());
        if let Some(interpreter) = &program.interpreter {
            needed.push(prefix_of(interpreter));
            if let Ok(canonical) = interpreter.canonicalize() {
                needed.push(prefix_of(&canonical));
            }
        }
        let mut bound: Vec<PathBuf> = Vec::new();
        for path in needed {
            if b.shows(&path) || bound.iter().any(|dir| path.starts_with(dir)) {
                continue;
            }
            // An interpreter that does not exist fails at exec, with the usual error.
            if let Ok(fd) = root::open_path(&path) {
                b.bind(fd, &path, true, Access::Read)?;
                bound.push(path);
            }
        }
        for d in &self.dirs {
            let access = if d.read_only {
                Access::Read
            } else {
                Access::Write
            };
            b.bind(d.dir.try_clone()?, &d.at, d.read_only, access)?;
        }
        Ok(b)
    }

    /// The command that runs `program` in this jail with `args` and exactly `env`, holding
    /// `socket` at fd 3 and each grant at its target, plus the pipe the child reports its
    /// protections on (read it with [`Report::protections`] after spawning, whether the
    /// spawn worked or not, once the command is dropped or spawned).
    ///
    /// Without `allow_weak`, a protection known to be missing before the fork (no Landlock,
    /// no seccomp filter, a root that cannot be planned) is [`NativeError::WeakJail`] here.
    pub fn command(
        &self,
        program: &NativeProgram,
        args: &[String],
        env: &[(String, String)],
        socket: &OwnedFd,
        grants: &[Grant],
    ) -> Result<(tokio::process::Command, Report), NativeError> {
        let spawn_err = |what, source| NativeError::Spawn {
            path: program.path.clone(),
            what,
            source,
        };
        let mut pre_failures: Vec<Failure> = Vec::new();
        let mut weak = |protection: &str, reason: String| -> Result<(), NativeError> {
            if !self.allow_weak {
                return Err(NativeError::WeakJail {
                    path: program.path.clone(),
                    protection: protection.to_owned(),
                    reason,
                });
            }
            pre_failures.push(Failure {
                protection: protection.to_owned(),
                reason,
            });
            Ok(())
        };
        let (plan, ruleset): (Option<Plan>, Option<Prepared>) = match self.plan(program) {
            Ok(builder) => {
                let ruleset = match ruleset::prepare(builder.bound()) {
                    Ok(r) => Some(r),
                    Err(reason) => {
                        weak("Landlock", reason)?;
                        None
                    }
                };
                match builder.finish() {
                    Ok(plan) => (Some(plan), ruleset),
                    Err(e) => {
                        weak("own root: planning it", e.to_string())?;
                        (None, ruleset)
                    }
                }
            }
            Err(e) => {
                weak("own root: planning it", e.to_string())?;
                (None, None)
            }
        };
        let filter = match seccomp::compile() {
            Ok(f) => Some(f),
            Err(reason) => {
                weak("seccomp", reason)?;
                None
            }
        };
        let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| spawn_err("creating the report pipe", e.into()))?;
        let mut cmd = std::process::Command::new(&program.path);
        cmd.arg0(&program.name)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        // Everything the hook needs, computed here: it may not allocate.
        let mut moves: Vec<(RawFd, RawFd)> = vec![(socket.as_raw_fd(), 3)];
        moves.extend(grants.iter().map(|g| (g.fd().as_raw_fd(), g.target())));
        let mut keep: Vec<RawFd> = moves.iter().map(|&(_, t)| t).collect();
        keep.sort_unstable();
        keep.dedup();
        let floor = keep.last().copied().unwrap_or(3).max(3) + 1;
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                spawn_err(
                    "naming the jail directory",
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })
        };
        let root_steps = plan.as_ref().map(Plan::descriptions).unwrap_or_default();
        let abi = ruleset.as_ref().map(|r| r.abi);
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let mut hook = Hook {
            moved: vec![-1; moves.len()],
            moves,
            keep,
            floor,
            report: report_w.as_raw_fd(),
            uid_map: CString::new(format!("{uid} {uid} 1\n")).unwrap_or_default(),
            gid_map: CString::new(format!("{gid} {gid} 1\n")).unwrap_or_default(),
            root: plan,
            ruleset,
            filter,
            cwd_root: cstr(Path::new(GUEST_CWD))?,
            cwd_host: cstr(&self.work)?,
            allow_weak: self.allow_weak,
            bits: 0,
            step: 0,
            errno: 0,
        };
        // SAFETY: the hook only makes async-signal-safe raw syscalls (see `Hook::run`).
        unsafe {
            cmd.pre_exec(move || hook.run());
        }
        let report = Report {
            read: report_r,
            write: Some(report_w),
            abi,
            root_steps,
            pre_failures,
        };
        Ok((tokio::process::Command::from(cmd), report))
    }
}

/// What to bind for an interpreter: its prefix (`/x/venv` for `/x/venv/bin/python`, where a
/// virtualenv keeps `pyvenv.cfg`), when that is at least two levels deep, else the
/// interpreter alone.
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

/// The read end of a child's protection report: one record of 8 bytes (the bits that held,
/// the first failed step, its errno), written by the program just before exec, or by the
/// process whose step failed.
#[derive(Debug)]
pub struct Report {
    read: OwnedFd,
    write: Option<OwnedFd>,
    abi: Option<i32>,
    root_steps: Vec<String>,
    pre_failures: Vec<Failure>,
}

impl Report {
    /// After the spawn (whether it worked or not): what the child said held (nothing, if it
    /// said nothing).
    pub fn protections(mut self) -> Protections {
        drop(self.write.take());
        let mut file = std::fs::File::from(self.read);
        let mut record = [0u8; 8];
        let mut got = 0;
        while got < record.len() {
            match file.read(&mut record[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got < record.len() {
            record = [0; 8];
        }
        let bits = u16::from_ne_bytes([record[0], record[1]]);
        let step = u16::from_ne_bytes([record[2], record[3]]);
        let errno = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
        let mut protections = Protections::from_bits(bits, self.abi);
        protections.failure = self.pre_failures.into_iter().next().or_else(|| {
            (step != 0).then(|| Failure {
                protection: step_name(step, &self.root_steps),
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            })
        });
        if got < 8 && protections.failure.is_none() {
            protections.failure = Some(Failure {
                protection: "the jail".to_owned(),
                reason: "the child reported nothing".to_owned(),
            });
        }
        protections
    }
}

/// What the `pre_exec` hook holds: all of it made before the fork.
struct Hook {
    moves: Vec<(RawFd, RawFd)>,
    moved: Vec<RawFd>,
    keep: Vec<RawFd>,
    floor: RawFd,
    report: RawFd,
    uid_map: CString,
    gid_map: CString,
    root: Option<Plan>,
    ruleset: Option<Prepared>,
    filter: Option<Filter>,
    cwd_root: CString,
    cwd_host: CString,
    allow_weak: bool,
    bits: u16,
    step: u16,
    errno: i32,
}

/// The errno of the last failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes `bytes` to the file at `path` (open, write, close).
///
/// # Safety
/// Raw syscalls only.
unsafe fn write_file(path: &std::ffi::CStr, bytes: &std::ffi::CStr) -> Result<(), i32> {
    // SAFETY: NUL-terminated path, a buffer of the given length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let len = bytes.to_bytes().len();
        let n = libc::write(fd, bytes.as_ptr().cast(), len);
        let e = errno();
        libc::close(fd);
        if n == len as isize { Ok(()) } else { Err(e) }
    }
}

/// Drops every capability for good: the bounding and ambient sets emptied, `SECBIT_NOROOT`
/// (locked) so uid 0 gains none at exec, then the process's own sets cleared.
///
/// # Safety
/// Raw syscalls only.
unsafe fn drop_capabilities() -> Result<(), i32> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    // SAFETY: prctl and capset with valid arguments.
    unsafe {
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(errno());
        }
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && errno() != libc::EINVAL
            {
                return Err(errno());
            }
        }
        if libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT
                | SECBIT_NOROOT_LOCKED
                | SECBIT_NO_CAP_AMBIENT_RAISE
                | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
            0,
            0,
            0,
        ) != 0
        {
            return Err(errno());
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

impl Hook {
    /// Records a failed step: with `allow_weak`, goes on; else reports and fails the hook.
    fn fail(&mut self, step: u16, errno: i32) -> std::io::Result<()> {
        if self.step == 0 {
            self.step = step;
            self.errno = errno;
        }
        if self.allow_weak {
            return Ok(());
        }
        self.send_report();
        Err(std::io::Error::from_raw_os_error(errno))
    }

    /// Writes the report record (one write of 8 bytes: atomic on a pipe).
    fn send_report(&self) {
        let mut record = [0u8; 8];
        record[..2].copy_from_slice(&self.bits.to_ne_bytes());
        record[2..4].copy_from_slice(&self.step.to_ne_bytes());
        record[4..].copy_from_slice(&self.errno.to_ne_bytes());
        if self.report >= 0 {
            // SAFETY: write(2) of a stack buffer.
            unsafe {
                libc::write(self.report, record.as_ptr().cast(), record.len());
            }
        }
    }

    /// The hook; see the module's docs for the steps.
    fn run(&mut self) -> std::io::Result<()> {
        // SAFETY (for the whole hook): raw syscalls on fds this process holds, with buffers
        // made before the fork; no allocation, no locks: async-signal-safe between fork and
        // exec.
        unsafe {
            // 1. Out of the way of every target.
            for (slot, &(src, _)) in self.moved.iter_mut().zip(&self.moves) {
                *slot = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, self.floor);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let ruleset = self
                .ruleset
                .as_ref()
                .map(|r| libc::fcntl(r.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, self.floor));
            self.report = libc::fcntl(self.report, libc::F_DUPFD_CLOEXEC, self.floor);
            // 2. Dies with ww.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // 3. Namespaces.
            let all =
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWPID;
            if libc::unshare(all) == 0 {
                self.bits |= USER_NS | MOUNT_NS | NET_NS | PID_NS;
            } else {
                self.fail(STEP_UNSHARE, errno())?;
                for (flag, bit) in [
                    (libc::CLONE_NEWUSER, USER_NS),
                    (libc::CLONE_NEWNS, MOUNT_NS),
                    (libc::CLONE_NEWNET, NET_NS),
                    (libc::CLONE_NEWPID, PID_NS),
                ] {
                    if libc::unshare(flag) == 0 {
                        self.bits |= bit;
                    }
                }
            }
            // 4. ww's ids, mapped to themselves.
            if self.bits & USER_NS != 0 {
                // Written in order (gid_map needs setgroups denied first); the first
                // failure is the one reported.
                let results = [
                    (write_file(c"/proc/self/setgroups", c"deny"), STEP_SETGROUPS),
                    (
                        write_file(c"/proc/self/uid_map", &self.uid_map),
                        STEP_UID_MAP,
                    ),
                    (
                        write_file(c"/proc/self/gid_map", &self.gid_map),
                        STEP_GID_MAP,
                    ),
                ];
                for (result, step) in results {
                    if let Err(e) = result {
                        self.fail(step, e)?;
                    }
                }
            }
            // Nothing may read this copy of ww's memory. Only now: a process that is not
            // dumpable has its /proc/self files owned by the host's root, and an unprivileged
            // ww could not have written its maps.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            // 5. Nothing mounted in here propagates out.
            if self.bits & MOUNT_NS != 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                self.fail(STEP_PRIVATE, errno())?;
                self.bits &= !MOUNT_NS;
            }
            // 6. The namespace's init; this process stays outside as the supervisor. Both
            // are forks of ww: its arguments are not theirs to show.
            rename_process(b"ww-jail-init");
            let mut status = None;
            if self.bits & PID_NS != 0 {
                status = fork_init();
                if status.is_none() {
                    self.fail(STEP_FORK_INIT, errno())?;
                    self.bits &= !PID_NS;
                }
            }
            // 7. The root (in init: its /proc is this PID namespace's).
            if self.bits & MOUNT_NS != 0
                && let Some(plan) = self.root.as_mut()
            {
                match plan.build() {
                    Ok(()) => self.bits |= ROOT,
                    Err((i, e)) => {
                        let step = STEP_ROOT.saturating_add(u16::try_from(i).unwrap_or(0xfeff));
                        self.fail(step, e)?;
                    }
                }
            }
            // 8. The program, pid 2.
            if let Some(status) = status
                && !fork_program(status)
            {
                self.fail(STEP_FORK_PROGRAM, errno())?;
            }
            // 9. The program's own restrictions, then its fds.
            let cwd = if self.bits & ROOT != 0 {
                &self.cwd_root
            } else {
                &self.cwd_host
            };
            if libc::chdir(cwd.as_ptr()) != 0 {
                self.fail(STEP_CHDIR, errno())?;
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 {
                self.bits |= NO_NEW_PRIVS;
            } else {
                self.fail(STEP_NO_NEW_PRIVS, errno())?;
            }
            if let (Some(fd), Some(prepared)) = (ruleset, self.ruleset.as_ref()) {
                let late: &Late = &prepared.late;
                if let Err(e) = late.add(fd, self.bits & ROOT != 0) {
                    self.fail(STEP_LANDLOCK_RULE, e)?;
                } else if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) == 0 {
                    self.bits |= LANDLOCK;
                } else {
                    self.fail(STEP_LANDLOCK, errno())?;
                }
                libc::close(fd);
            }
            if let Some(filter) = &self.filter {
                match filter.install() {
                    Ok(()) => self.bits |= SECCOMP,
                    Err(e) => self.fail(STEP_SECCOMP, e)?,
                }
            }
            match drop_capabilities() {
                Ok(()) => self.bits |= NO_CAPS,
                Err(e) => self.fail(STEP_CAPS, e)?,
            }
            self.send_report();
            for (&fd, &(_, target)) in self.moved.iter().zip(&self.moves) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let mut from: RawFd = 3;
            for &k in &self.keep {
                if k > from {
                    cloexec_range(from, k - 1);
                }
                from = from.max(k + 1);
            }
            cloexec_range(from, RawFd::MAX);
        }
        Ok(())
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

    fn all() -> Protections {
        Protections {
            user_ns: true,
            mount_ns: true,
            net_ns: true,
            no_new_privs: true,
            landlock: Some(7),
            pid_ns: true,
            root: true,
            seccomp: true,
            no_caps: true,
            failure: None,
        }
    }

    #[test]
    fn a_full_jail_runs_and_its_summary_names_every_layer() {
        let p = all();
        assert_eq!(
            p.check(false, Path::new("/p")).unwrap(),
            Vec::<String>::new()
        );
        let summary = p.summary();
        for field in [
            "user-ns=yes",
            "pid-ns=yes",
            "landlock=abi7",
            "root=yes",
            "seccomp=yes",
            "caps=none",
        ] {
            assert!(summary.contains(field), "{summary}");
        }
    }

    #[test]
    fn a_missing_protection_fails_closed_naming_it_the_reason_and_the_flag() {
        let p = Protections {
            root: false,
            failure: Some(Failure {
                protection: "own root: mount /proc".to_owned(),
                reason: "Operation not permitted (os error 1)".to_owned(),
            }),
            ..all()
        };
        let err = p.check(false, Path::new("/x/prog")).unwrap_err();
        assert!(matches!(err, NativeError::WeakJail { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("own root: mount /proc"), "{text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(help.contains("--allow-weak-jail"), "{help}");
        assert!(help.contains("WW_ALLOW_WEAK_JAIL"), "{help}");
        // With the flag: warnings, naming what is missing and why.
        let warnings = p.check(true, Path::new("/x/prog")).unwrap();
        assert!(
            warnings.iter().any(|w| w.starts_with("no root of its own")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("Operation not permitted")),
            "{warnings:?}"
        );
        // Each layer alone is enough to fail closed, reported or not.
        for weaken in [
            |p: &mut Protections| p.seccomp = false,
            |p: &mut Protections| p.landlock = None,
            |p: &mut Protections| p.pid_ns = false,
            |p: &mut Protections| p.user_ns = false,
            |p: &mut Protections| p.no_caps = false,
        ] {
            let mut p = all();
            weaken(&mut p);
            assert!(p.check(false, Path::new("/p")).is_err(), "{p:?}");
            assert_eq!(p.check(true, Path::new("/p")).unwrap().len(), 1, "{p:?}");
        }
    }

    #[test]
    fn a_report_decodes_steps_and_errnos() {
        let steps = vec![
            "mount the root's tmpfs".to_owned(),
            "mount /proc".to_owned(),
        ];
        assert_eq!(
            step_name(STEP_ROOT + 1, &steps),
            "own root: mount /proc".to_owned()
        );
        assert!(step_name(STEP_UNSHARE, &steps).starts_with("namespaces"));
        assert!(step_name(STEP_SECCOMP, &steps).starts_with("seccomp"));
    }

    #[test]
    fn grants_cannot_cover_the_root_proc_or_dev() {
        assert!(grant_path_ok(Path::new("/data")));
        assert!(grant_path_ok(Path::new("/tmp/x")));
        for bad in [
            "/", "/proc", "/proc/1", "/dev", "/dev/shm", "data", "/a/../b",
        ] {
            assert!(!grant_path_ok(Path::new(bad)), "{bad}");
        }
    }
}
