//! Landlock, the jail's second layer under its own root: built with the `landlock` crate in
//! ww, before the fork, from the same handles the root's bind mounts come from.
//!
//! The ruleset handles every filesystem right of ABI 7 (the kernel's own ABI when older:
//! the crate's best effort), TCP bind and connect (ABI 4), and scopes abstract Unix sockets
//! and signals to the cell (ABI 6). Allowed, beneath each object (a Landlock rule follows
//! the object, whatever path or mount shows it):
//!
//! - read and execute: the system directories, the `/etc` entries, the program, an image's
//!   directory, the interpreter and its prefix, the `:ro` grants;
//! - read and write: the bound device files;
//! - everything: the jail directory and the read-write grants.
//!
//! No TCP port is allowed. Four objects exist only after the fork (the cell's root, its
//! `/proc`, `/tmp` and `/dev/shm`, mounted in its namespaces), so their rules are added in the hook
//! by [`Late::add`]: one `open(O_PATH)` and one raw `landlock_add_rule` each, with masks
//! computed here. The crate's `add_rule` is not used there: it takes the ruleset by value
//! and builds error values, which the hook (no allocation) cannot afford. `/proc` is
//! readable only, the root's directories listable (the root shows only what the cell may
//! see), `/tmp` and `/dev/shm` allow everything. Landlock does not cover Unix
//! sockets by path (connect(2) to a pathname socket is not a filesystem right it knows), nor
//! what a process already holds: the mount layer does, since no path to a host socket
//! exists in the cell's root.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, PathBeneath, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _, Scope,
};

use super::root::{Access, Bound};

/// The ABI whose rights the ruleset asks for.
const TARGET: ABI = ABI::V7;

/// A ruleset ready to restrict the cell with, and the late rules to add first.
#[derive(Debug)]
pub struct Prepared {
    /// The ruleset fd, for a raw `landlock_restrict_self` in the hook.
    pub fd: OwnedFd,
    /// The kernel's Landlock ABI.
    pub abi: i32,
    /// Rules for objects made after the fork.
    pub late: Late,
}

/// Rules the hook adds once the cell's root exists: paths in that root and access masks.
#[derive(Debug)]
pub struct Late {
    rules: Vec<(CString, u64)>,
}

/// The kernel's Landlock ABI version, if it has Landlock enabled (one raw version query:
/// the crate keeps its own view private).
pub fn kernel_abi() -> Option<i32> {
    // SAFETY: the documented version query: null attr, size 0, flag VERSION.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    (v > 0).then_some(v as i32)
}

/// The ruleset for `bound` (the root's handles and what each allows); the reason when the
/// kernel has no Landlock or refuses the ruleset.
pub fn prepare(bound: &[Bound]) -> Result<Prepared, String> {
    let abi = kernel_abi().ok_or_else(|| {
        "this kernel has no Landlock (not built in, or not in the lsm= list)".to_owned()
    })?;
    let fail = |e: landlock::RulesetError| format!("making the Landlock ruleset: {e}");
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET))
        .map_err(fail)?
        .handle_access(AccessNet::from_all(TARGET))
        .map_err(fail)?
        .scope(Scope::from_all(TARGET))
        .map_err(fail)?
        .create()
        .map_err(fail)?;
    let read = AccessFs::from_read(TARGET);
    let all = AccessFs::from_all(TARGET);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
    for b in bound {
        let mut access = match b.access {
            Access::Read => read,
            Access::Device => device,
            Access::Write => all,
        };
        if !b.is_dir {
            access &= AccessFs::from_file(TARGET);
        }
        // SAFETY: the fd is owned by the root's plan, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(b.fd) };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(fail)?;
    }
    let fd: Option<OwnedFd> = ruleset.into();
    let fd = fd.ok_or_else(|| "the kernel refused to make a Landlock ruleset".to_owned())?;
    // The late rules' masks must lie within what the kernel handles for this ruleset.
    let handled = AccessFs::from_all(ABI::from(abi)) & all;
    let mask = |a: BitFlags<AccessFs>| (a & handled).bits();
    // /proc first: it is the only one a weak jail without its own root gets.
    let rules = vec![
        (
            c"/proc".to_owned(),
            mask(AccessFs::ReadFile | AccessFs::ReadDir),
        ),
        // Listing any directory of the root: it shows only what the cell may see.
        (c"/".to_owned(), mask(AccessFs::ReadDir.into())),
        (c"/tmp".to_owned(), mask(all)),
        (c"/dev/shm".to_owned(), mask(all)),
    ];
    Ok(Prepared {
        fd,
        abi,
        late: Late { rules },
    })
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

impl Late {
    /// Adds the late rules to `ruleset`, in the cell's root; `with_root` is false when the
    /// root could not be made (a weak jail): then `/`, `/tmp` and `/dev/shm` are the host's,
    /// and get no rule.
    ///
    /// # Safety
    /// Between fork and exec: raw syscalls only.
    pub unsafe fn add(&self, ruleset: RawFd, with_root: bool) -> Result<(), i32> {
        for (i, (path, access)) in self.rules.iter().enumerate() {
            if i > 0 && !with_root {
                break;
            }
            // SAFETY: raw syscalls with a NUL-terminated path and a valid attr.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO));
                }
                let attr = PathBeneathAttr {
                    allowed_access: *access,
                    parent_fd: fd,
                };
                let r = libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    1 as libc::c_int, // LANDLOCK_RULE_PATH_BENEATH
                    &raw const attr,
                    0u32,
                );
                let e = std::io::Error::last_os_error().raw_os_error();
                libc::close(fd);
                if r != 0 {
                    return Err(e.unwrap_or(libc::EIO));
                }
            }
        }
        Ok(())
    }
}
