//! The native cell's own root: planned in ww before the fork, built in the child after it.
//!
//! [`Builder`] turns what the program needs into a list of steps over a staging
//! directory (an empty directory in the jail's private temporary directory): a tmpfs there,
//! then mount points, symlinks and bind mounts under it, then `pivot_root`. Every bind
//! mount's source is a handle (an `O_PATH` or directory fd) opened here, once; the child
//! mounts it and checks that the mount shows the handle's own inode (see [`Plan::build`]).
//! [`Plan::build`] runs the steps with raw syscalls only (no allocation, no locks): it runs
//! between fork and exec, in the PID namespace's init.
//!
//! The root holds, in this order:
//!
//! 1. a tmpfs (`mode=0755`), made read-only once its mount points exist;
//! 2. [`SYSTEM_DIRS`] that exist: a symlink where the host has one (`/lib -> usr/lib`), else
//!    a read-only bind;
//! 3. `/etc` holding only the [`ETC_ALLOWED`] entries that exist, each bound read-only (a
//!    symlink on the host is followed, so `/etc/localtime` is the zone file itself), and
//!    `/etc/mtab -> ../proc/self/mounts`;
//! 4. `/dev`: a tmpfs holding [`DEVICES`] bound from the host's (mknod is refused in a user
//!    namespace), `/dev/tty` only when ww's stdin, stdout or stderr is a terminal (it is the
//!    controlling terminal the cell already writes to; there is no `/dev/pts`, so
//!    `ttyname` finds no name for it), `fd`, `stdin`, `stdout`, `stderr` symlinks into
//!    `/proc/self/fd`, and `/dev/shm`, an empty tmpfs of its own;
//! 5. `/proc`: a new procfs, which shows only the cell's PID namespace;
//! 6. `/tmp`: an empty tmpfs of its own;
//! 7. [`GUEST_CWD`] (`/jail`): the jail directory, read-write, the working directory;
//! 8. the program, an image's directory and a `#!` interpreter (with its prefix, so a
//!    virtualenv and the Python it points at work), read-only at their host paths, unless a
//!    system directory already shows them;
//! 9. the `--dir` grants at their guest paths, read-only when `:ro`.
//!
//! Nothing of the host's `/run`, `/var`, `/tmp`, `/home` or `/sys` is there: a pathname
//! socket of the host cannot be reached, since no path leads to it. Mounts below a bound
//! directory come along (a bind is recursive) and keep their own flags: only the top mount
//! of a read-only bind is read-only; Landlock's read-only rule covers what lies below.
//! `/tmp` and `/dev/shm` hold at most [`TMPFS_SIZE`] each.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// System directories shown read-only in the cell's root (a symlink where the host has one).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
];

/// The `/etc` entries a cell sees: what the loader, libc (users, groups, name service,
/// time zone), TLS and ordinary tools read. Never `shadow`, `gshadow`, `sudoers`, `ssh`
/// or anything with secrets: ww may run as root, and the cell then has root's permissions on
/// what it sees.
pub const ETC_ALLOWED: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "hostname",
    "nsswitch.conf",
    "resolv.conf",
    "gai.conf",
    "services",
    "protocols",
    "networks",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ld.so.preload",
    "localtime",
    "timezone",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "os-release",
    "lsb-release",
    "debian_version",
    "locale.alias",
    "locale.conf",
    "mime.types",
    "magic",
    "inputrc",
    "terminfo",
    "shells",
];

/// The device files bound into the cell's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Where the jail directory appears in the cell's root; its working directory.
pub const GUEST_CWD: &str = "/jail";

/// The size limit of the cell's `/tmp` and `/dev/shm` (each).
pub const TMPFS_SIZE: &str = "64m";

/// One thing to do while building the root (paths are absolute, in the staging directory
/// until `Pivot`).
#[derive(Debug)]
enum Op {
    /// Mount a tmpfs at `target` with `data` and `flags`.
    Tmpfs {
        target: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// Make a directory (one that exists already is fine).
    Mkdir { path: CString },
    /// Make an empty file to bind a file onto (one that exists already is fine).
    File { path: CString },
    /// Make a symlink.
    Symlink { target: CString, path: CString },
    /// Bind the object `fd` holds at `target`: its path is read from `link`
    /// (`/proc/self/fd/N`), mounted, and the mount checked to show `dev`/`ino`.
    Bind {
        /// The handle: open in the child until the mount is made and checked.
        _fd: OwnedFd,
        link: CString,
        target: CString,
        read_only: bool,
        dev: u64,
        ino: u64,
    },
    /// Mount a procfs (of the caller's PID namespace) at `target`.
    Proc { target: CString },
    /// Make the staging tmpfs read-only (its mount points exist by now).
    RootReadOnly { target: CString },
    /// `pivot_root` into the staging directory and detach the old root.
    Pivot { staging: CString },
}

/// A step and what it is, for a report.
#[derive(Debug)]
struct Step {
    op: Op,
    what: String,
}

/// The cell's root, ready to build in the child.
#[derive(Debug)]
pub struct Plan {
    steps: Vec<Step>,
    /// Where `readlink` writes a handle's path: allocated here, used after the fork.
    buf: Vec<u8>,
}

/// The read-only or read-write bind a [`Builder`] made, with its handle, for Landlock.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The handle's raw fd (owned by the plan).
    pub fd: RawFd,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// What the cell may do there.
    pub access: Access,
}

/// What a bound object allows, for Landlock's second layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and execute.
    Read,
    /// Read and write (devices).
    Device,
    /// Everything.
    Write,
}

/// Plans a root (see the module's docs).
#[derive(Debug)]
pub struct Builder {
    staging: PathBuf,
    steps: Vec<Step>,
    /// Guest paths that are symlinks in the root, with what they point at (absolute).
    symlinks: Vec<(PathBuf, PathBuf)>,
    /// Guest directories bound from the host at their host path (system directories).
    system: Vec<PathBuf>,
    /// Every bind, for Landlock.
    bound: Vec<Bound>,
}

/// Opens `path` as a handle (`O_PATH`, following symlinks).
pub fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", path.display()),
        )
    })
}

/// `path` without `.` and `..` (lexically), absolute.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl Builder {
    /// A builder over `staging` (an empty directory), with the tmpfs, the system
    /// directories, `/etc`, `/dev`, `/proc` and `/tmp` planned; `tty` adds `/dev/tty`.
    pub fn new(staging: &Path, tty: bool) -> std::io::Result<Builder> {
        let mut b = Builder {
            staging: staging.to_owned(),
            steps: Vec::new(),
            symlinks: Vec::new(),
            system: Vec::new(),
            bound: Vec::new(),
        };
        let staging_c = cstring(staging)?;
        b.push(
            Op::Tmpfs {
                target: staging_c,
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: c"mode=0755".to_owned(),
            },
            "mount the root's tmpfs".to_owned(),
        );
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(path)?;
                let resolved = normal(&path.parent().unwrap_or(Path::new("/")).join(&target));
                b.symlink(&target, path)?;
                b.symlinks.push((path.to_owned(), resolved));
            } else if meta.is_dir() {
                let fd = open_path(path)?;
                b.bind(fd, path, true, Access::Read)?;
                b.system.push(path.to_owned());
            }
        }
        b.mkdir(Path::new("/etc"))?;
        for name in ETC_ALLOWED {
            let path = Path::new("/etc").join(name);
            // Followed: a symlink into /run or elsewhere would dangle in the cell.
            if let Ok(fd) = open_path(&path) {
                b.bind(fd, &path, true, Access::Read)?;
            }
        }
        b.symlink(Path::new("../proc/self/mounts"), Path::new("/etc/mtab"))?;
        b.mkdir(Path::new("/dev"))?;
        b.tmpfs(
            Path::new("/dev"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=0755",
        )?;
        let tty_device: &[&str] = if tty { &["tty"] } else { &[] };
        for name in DEVICES.iter().chain(tty_device) {
            let path = Path::new("/dev").join(name);
            let fd = open_path(&path)?;
            b.bind(fd, &path, false, Access::Device)?;
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            b.symlink(Path::new(target), &Path::new("/dev").join(name))?;
        }
        b.tmpfs(
            Path::new("/dev/shm"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            &format!("mode=1777,size={TMPFS_SIZE}"),
        )?;
        b.mkdir(Path::new("/proc"))?;
        let target = cstring(&b.host(Path::new("/proc")))?;
        b.push(Op::Proc { target }, "mount /proc".to_owned());
        b.tmpfs(
            Path::new("/tmp"),
            libc::MS_NOSUID | libc::MS_NODEV,
            &format!("mode=1777,size={TMPFS_SIZE}"),
        )?;
        Ok(b)
    }

    fn push(&mut self, op: Op, what: String) {
        self.steps.push(Step { op, what });
    }

    /// Where `guest` is in the staging directory, through the root's own symlinks.
    fn host(&self, guest: &Path) -> PathBuf {
        let guest = self.resolve(guest);
        let rel = guest.strip_prefix("/").unwrap_or(&guest);
        self.staging.join(rel)
    }

    /// `guest` with a leading symlink of the root replaced by what it points at, so no step
    /// follows a symlink out of the staging directory.
    fn resolve(&self, guest: &Path) -> PathBuf {
        let guest = normal(guest);
        for (link, to) in &self.symlinks {
            if let Ok(rest) = guest.strip_prefix(link) {
                return to.join(rest);
            }
        }
        guest
    }

    /// Whether a system directory already shows `host_path` at the same path.
    pub fn shows(&self, host_path: &Path) -> bool {
        let path = self.resolve(host_path);
        self.system.iter().any(|dir| path.starts_with(dir))
    }

    /// Plans `guest` and its missing ancestors as directories.
    pub fn mkdir(&mut self, guest: &Path) -> std::io::Result<()> {
        let guest = self.resolve(guest);
        let mut at = PathBuf::from("/");
        for c in guest.components().skip(1) {
            at.push(c);
            let path = cstring(&self.host(&at))?;
            self.push(
                Op::Mkdir { path },
                format!("make the directory {}", at.display()),
            );
        }
        Ok(())
    }

    fn tmpfs(&mut self, guest: &Path, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
        self.mkdir(guest)?;
        let target = cstring(&self.host(guest))?;
        let data = CString::new(data).unwrap_or_default();
        self.push(
            Op::Tmpfs {
                target,
                flags,
                data,
            },
            format!("mount a tmpfs at {}", guest.display()),
        );
        Ok(())
    }

    fn symlink(&mut self, target: &Path, guest: &Path) -> std::io::Result<()> {
        if let Some(parent) = guest.parent() {
            self.mkdir(parent)?;
        }
        let path = cstring(&self.host(guest))?;
        self.push(
            Op::Symlink {
                target: cstring(target)?,
                path,
            },
            format!("make the symlink {}", guest.display()),
        );
        Ok(())
    }

    /// Plans a bind of the object `fd` holds at `guest`.
    pub fn bind(
        &mut self,
        fd: OwnedFd,
        guest: &Path,
        read_only: bool,
        access: Access,
    ) -> std::io::Result<()> {
        let stat = rustix::fs::fstat(&fd)?;
        let is_dir = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir();
        if is_dir {
            self.mkdir(guest)?;
        } else {
            if let Some(parent) = guest.parent() {
                self.mkdir(parent)?;
            }
            let path = cstring(&self.host(guest))?;
            self.push(
                Op::File { path },
                format!("make the mount point {}", guest.display()),
            );
        }
        let target = cstring(&self.host(guest))?;
        let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.bound.push(Bound {
            fd: fd.as_raw_fd(),
            is_dir,
            access,
        });
        self.push(
            Op::Bind {
                _fd: fd,
                link,
                target,
                read_only,
                dev: stat.st_dev,
                ino: stat.st_ino,
            },
            format!(
                "bind {}{}",
                guest.display(),
                if read_only { " (read-only)" } else { "" }
            ),
        );
        Ok(())
    }

    /// What was bound, for Landlock (the fds stay owned by the plan).
    pub fn bound(&self) -> &[Bound] {
        &self.bound
    }

    /// The plan, ending with the root made read-only and `pivot_root`.
    pub fn finish(mut self) -> std::io::Result<Plan> {
        let staging = cstring(&self.staging)?;
        self.push(
            Op::RootReadOnly {
                target: staging.clone(),
            },
            "make the root read-only".to_owned(),
        );
        self.push(Op::Pivot { staging }, "pivot_root into the root".to_owned());
        Ok(Plan {
            steps: self.steps,
            buf: vec![0; libc::PATH_MAX as usize + 1],
        })
    }
}

/// The errno of the last failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Plan {
    /// What each step is, by index, for the report.
    pub fn descriptions(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.what.clone()).collect()
    }

    /// Builds the root and enters it: on failure, the index of the step and its errno.
    ///
    /// A bind reads the handle's current path from `/proc/self/fd/N` and mounts that path:
    /// a mount source must lie in the caller's mount namespace, and a handle opened before
    /// `unshare(CLONE_NEWNS)` lies in the host's (the kernel refuses it with EINVAL). The
    /// path follows a rename of the object; the mount is then checked to show the handle's
    /// own inode (device and inode number), and a mismatch (the path was swapped for
    /// another object meanwhile) fails the step with ESTALE. So the cell sees exactly the
    /// object ww opened, or does not run.
    ///
    /// # Safety
    /// Between fork and exec: raw syscalls only, no allocation.
    pub unsafe fn build(&mut self) -> Result<(), (usize, i32)> {
        let buf = &mut self.buf;
        for (i, step) in self.steps.iter().enumerate() {
            // SAFETY: raw syscalls on NUL-terminated strings and buffers owned by the plan.
            let ok = unsafe { run(&step.op, buf) };
            if let Err(e) = ok {
                return Err((i, e));
            }
        }
        Ok(())
    }
}

/// Runs one step.
///
/// # Safety
/// Raw syscalls only.
unsafe fn run(op: &Op, buf: &mut [u8]) -> Result<(), i32> {
    let null = std::ptr::null::<libc::c_char>();
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(errno()) };
    // SAFETY: every pointer is a NUL-terminated string or a buffer of the given length.
    unsafe {
        match op {
            Op::Tmpfs {
                target,
                flags,
                data,
            } => check(libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                *flags,
                data.as_ptr().cast(),
            )),
            Op::Mkdir { path } => {
                if libc::mkdir(path.as_ptr(), 0o755) == 0 || errno() == libc::EEXIST {
                    Ok(())
                } else {
                    Err(errno())
                }
            }
            Op::File { path } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                    Ok(())
                } else if errno() == libc::EEXIST || errno() == libc::EISDIR {
                    Ok(())
                } else {
                    Err(errno())
                }
            }
            Op::Symlink { target, path } => {
                if libc::symlink(target.as_ptr(), path.as_ptr()) == 0 || errno() == libc::EEXIST {
                    Ok(())
                } else {
                    Err(errno())
                }
            }
            Op::Bind {
                _fd: _,
                link,
                target,
                read_only,
                dev,
                ino,
            } => {
                let n = libc::readlink(link.as_ptr(), buf.as_mut_ptr().cast(), buf.len() - 1);
                if n < 0 {
                    return Err(errno());
                }
                buf[n as usize] = 0;
                check(libc::mount(
                    buf.as_ptr().cast(),
                    target.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                let mut st: libc::stat = std::mem::zeroed();
                check(libc::stat(target.as_ptr(), &mut st))?;
                if st.st_dev != *dev || st.st_ino != *ino {
                    return Err(libc::ESTALE);
                }
                // Always nosuid; a remount in a user namespace must keep the flags the
                // kernel locked on the source mount (nodev, noexec, atime), so they are
                // read and kept.
                let mut fs: libc::statvfs = std::mem::zeroed();
                check(libc::statvfs(target.as_ptr(), &mut fs))?;
                // ST_* flags have the MS_* values.
                let kept = (fs.f_flag as libc::c_ulong)
                    & (libc::MS_NODEV
                        | libc::MS_NOEXEC
                        | libc::MS_NOATIME
                        | libc::MS_NODIRATIME
                        | libc::MS_RELATIME
                        | libc::MS_RDONLY);
                let ro = if *read_only { libc::MS_RDONLY } else { 0 };
                check(libc::mount(
                    null,
                    target.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | kept | ro,
                    std::ptr::null(),
                ))
            }
            Op::Proc { target } => check(libc::mount(
                c"proc".as_ptr(),
                target.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )),
            Op::RootReadOnly { target } => check(libc::mount(
                null,
                target.as_ptr(),
                null,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                std::ptr::null(),
            )),
            Op::Pivot { staging } => {
                // pivot_root(".", "."): the old root is stacked on the new one and then
                // detached, with no directory for it in the new root.
                check(libc::chdir(staging.as_ptr()))?;
                let r = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
                if r != 0 {
                    return Err(errno());
                }
                check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
                check(libc::chdir(c"/".as_ptr()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Builder {
        /// Only the root's tmpfs: for tests that cannot mount a procfs (no PID namespace).
        fn bare(staging: &Path) -> Builder {
            let mut b = Builder {
                staging: staging.to_owned(),
                steps: Vec::new(),
                symlinks: Vec::new(),
                system: Vec::new(),
                bound: Vec::new(),
            };
            b.push(
                Op::Tmpfs {
                    target: cstring(staging).unwrap(),
                    flags: 0,
                    data: c"mode=0755".to_owned(),
                },
                "mount the root's tmpfs".to_owned(),
            );
            b
        }
    }

    /// A grant is the directory ww opened: renamed afterwards, and its old path made a
    /// symlink to somewhere else, the cell still sees the opened directory at its guest
    /// path (built in a forked child, in a user and mount namespace of its own).
    #[test]
    fn a_bind_shows_the_opened_directory_whatever_happens_to_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let granted = dir.path().join("granted");
        std::fs::create_dir(&granted).unwrap();
        std::fs::write(granted.join("f"), "the opened one").unwrap();
        let decoy = dir.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::fs::write(decoy.join("f"), "the decoy").unwrap();
        let staging = dir.path().join("root");
        std::fs::create_dir(&staging).unwrap();
        let mut b = Builder::bare(&staging);
        b.bind(
            open_path(&granted).unwrap(),
            Path::new("/data"),
            true,
            Access::Read,
        )
        .unwrap();
        let mut plan = b.finish().unwrap();
        // The swap, after ww opened the grant.
        std::fs::rename(&granted, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&decoy, &granted).unwrap();
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let uid_map = CString::new(format!("{uid} {uid} 1")).unwrap();
        let gid_map = CString::new(format!("{gid} {gid} 1")).unwrap();
        let (r, w_owned) = rustix::pipe::pipe().unwrap();
        let w = w_owned.as_raw_fd();
        // SAFETY: the child makes raw syscalls only, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls in the child.
            unsafe {
                let say = |msg: &[u8]| {
                    libc::write(w, msg.as_ptr().cast(), msg.len());
                };
                let put = |path: &std::ffi::CStr, data: &std::ffi::CStr| {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    libc::write(fd, data.as_ptr().cast(), data.to_bytes().len());
                    libc::close(fd);
                };
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                    say(b"skip: no user namespace");
                    libc::_exit(0);
                }
                put(c"/proc/self/setgroups", c"deny");
                put(c"/proc/self/uid_map", &uid_map);
                put(c"/proc/self/gid_map", &gid_map);
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
                if plan.build().is_err() {
                    say(b"build failed");
                    libc::_exit(1);
                }
                let fd = libc::open(c"/data/f".as_ptr(), libc::O_RDONLY);
                let mut buf = [0u8; 64];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n > 0 {
                    say(&buf[..n as usize]);
                }
                let ro = libc::open(c"/data/g".as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                say(if ro < 0 {
                    b" | read-only"
                } else {
                    b" | writable"
                });
                libc::_exit(0);
            }
        }
        drop(w_owned);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if got.starts_with("skip") {
            eprintln!("SKIPPED: {got}");
            return;
        }
        assert_eq!(got, "the opened one | read-only");
    }

    #[test]
    fn symlinked_system_paths_resolve_inside_the_root() {
        let staging = tempfile::tempdir().unwrap();
        let b = Builder::new(staging.path(), false).unwrap();
        // Whatever this host's layout, /usr/bin is a system directory and /bin shows it
        // (directly, or through a symlink the root repeats).
        assert!(b.shows(Path::new("/usr/bin/env")));
        assert!(b.shows(Path::new("/bin/sh")));
        assert!(!b.shows(Path::new("/home/someone/prog")));
        assert!(!b.shows(Path::new("/tmp/x")));
        // A step never goes through a symlink: /bin/x is planned at usr/bin/x when /bin is
        // a symlink to usr/bin.
        if std::fs::symlink_metadata("/bin").is_ok_and(|m| m.file_type().is_symlink()) {
            let to = normal(&Path::new("/").join(std::fs::read_link("/bin").unwrap()));
            assert_eq!(
                b.host(Path::new("/bin/x")),
                staging.path().join(to.strip_prefix("/").unwrap()).join("x")
            );
        }
    }

    #[test]
    fn the_etc_allow_list_has_no_secrets() {
        for secret in [
            "shadow",
            "gshadow",
            "sudoers",
            "ssh",
            "sudoers.d",
            "shadow-",
        ] {
            assert!(!ETC_ALLOWED.contains(&secret), "{secret}");
        }
        let staging = tempfile::tempdir().unwrap();
        let plan = Builder::new(staging.path(), false)
            .unwrap()
            .finish()
            .unwrap();
        let steps = plan.descriptions();
        assert!(steps.iter().any(|s| s == "mount /proc"), "{steps:?}");
        assert!(!steps.iter().any(|s| s.contains("shadow")), "{steps:?}");
        assert!(!steps.iter().any(|s| s.contains("/run")), "{steps:?}");
        assert_eq!(steps.last().unwrap(), "pivot_root into the root");
    }
}
