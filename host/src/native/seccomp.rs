//! The native cell's seccomp filter: the system calls the other layers leave open.
//!
//! Compiled with `seccompiler` in ww, before the fork; installed last in the jail's hook
//! (after Landlock, with `no_new_privs` set), by one raw `seccomp(2)` call. A refused call
//! fails with EPERM, never kills: a program that probes (libc trying `clone3`, a tool trying
//! `unshare`) sees an ordinary error.
//!
//! Refused ([`REFUSED`]): new namespaces (`unshare`, and `clone` with any `CLONE_NEW*` flag;
//! the cell is root in its user namespace, and a nested one would give it new mount and
//! network powers), `setns`, `ptrace`, `process_vm_readv`/`writev`, the kernel keyring
//! (`keyctl`, `add_key`, `request_key`), `bpf`, `perf_event_open`, `userfaultfd`, every
//! mount call (`mount`, `umount2`, `pivot_root`, `move_mount`, `open_tree`, `fsopen`,
//! `fsmount`, `fsconfig`, `fspick`, `mount_setattr`; the cell must not undo its root),
//! `chroot`, `open_by_handle_at`, `kexec_load`/`kexec_file_load`, module loading and
//! `io_uring` (its operations bypass this filter). `clone3` fails with ENOSYS instead: its
//! flags are behind a pointer a filter cannot read, and ENOSYS makes libc fall back to
//! `clone`, which the filter checks.
//!
//! Only the host's native architecture passes: a call through another ABI (32-bit x86 on
//! x86_64) kills the process (seccompiler's architecture check), and on x86_64 every x32
//! call (number with bit 30 set) fails with EPERM, so no second syscall table goes around
//! the filter. 32-bit programs therefore do not run in the jail.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// The system calls refused outright (besides `clone` and `unshare` with namespace flags,
/// and `clone3`).
pub const REFUSED: &[(&str, libc::c_long)] = &[
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("fsconfig", libc::SYS_fsconfig),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("chroot", libc::SYS_chroot),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// The namespace flags `clone` and `unshare` may not carry.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

/// The compiled filters, in the order they are installed.
#[derive(Debug)]
pub struct Filter {
    programs: Vec<BpfProgram>,
}

/// `CLONE_NEWTIME`: only `unshare` can carry it (in `clone`, its bit is the exit signal's).
const CLONE_NEWTIME: libc::c_int = 0x80;

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| format!("seccompiler has no filter for {}", std::env::consts::ARCH))
}

/// One rule per flag: the call matches when its first argument has that flag.
fn any_flag(flags: &[libc::c_int]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    flags
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect()
}

/// Compiles the filter for this host; the reason when it cannot.
pub fn compile() -> Result<Filter, String> {
    let arch = arch()?;
    let fail = |e: seccompiler::BackendError| format!("compiling the seccomp filter: {e}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
        .iter()
        .map(|&(_, nr)| (number(nr), Vec::new()))
        .collect();
    rules.insert(
        number(libc::SYS_clone),
        any_flag(NAMESPACE_FLAGS).map_err(fail)?,
    );
    let mut unshare_flags = NAMESPACE_FLAGS.to_vec();
    unshare_flags.push(CLONE_NEWTIME);
    rules.insert(
        number(libc::SYS_unshare),
        any_flag(&unshare_flags).map_err(fail)?,
    );
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(fail)?;
    let mut refuse: BpfProgram = refuse.try_into().map_err(fail)?;
    if arch == TargetArch::x86_64 {
        // Before the architecture check: every x32 call is refused (seccompiler matches
        // syscall numbers exactly, and x32's are the x86_64 ones with bit 30 set).
        let x32 = [
            bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
            bpf(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                0,
                1,
                0x4000_0000,
            ),
            bpf(
                libc::BPF_RET | libc::BPF_K,
                0,
                0,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ),
        ];
        refuse.splice(0..0, x32);
    }
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(number(libc::SYS_clone3), Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(fail)?;
    let clone3: BpfProgram = clone3.try_into().map_err(fail)?;
    Ok(Filter {
        programs: vec![refuse, clone3],
    })
}

/// A syscall number as seccompiler keys it (`c_long` is `i64` on every architecture it
/// supports; the conversion keeps 32-bit hosts compiling).
#[allow(clippy::useless_conversion)]
fn number(nr: libc::c_long) -> i64 {
    i64::from(nr)
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

impl Filter {
    /// Installs the filters on the calling thread (`no_new_privs` must be set).
    ///
    /// # Safety
    /// Between fork and exec: raw syscalls only.
    pub unsafe fn install(&self) -> Result<(), i32> {
        for program in &self.programs {
            let prog = libc::sock_fprog {
                len: program.len() as libc::c_ushort,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: a valid program the kernel copies; seccompiler's `sock_filter` has
            // the kernel's layout (#[repr(C)], u16, u8, u8, u32).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &raw const prog,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (raw syscalls only): installs the filter and reports what a
    /// refused call, clone3 and an ordinary call return.
    #[test]
    fn the_filter_refuses_namespaces_and_mounts_with_eperm_and_clone3_with_enosys() {
        let Ok(filter) = compile() else {
            eprintln!("SKIPPED: no seccomp filter for this architecture");
            return;
        };
        let (r, w) = rustix::pipe::pipe().unwrap();
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls in the child.
            unsafe {
                let mut out = [0i32; 5];
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                out[0] = filter.install().err().unwrap_or(0);
                let err = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                out[1] = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    0
                } else {
                    err()
                };
                out[2] = if libc::syscall(libc::SYS_clone3, 0, 0) == 0 {
                    0
                } else {
                    err()
                };
                out[3] = if libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) == 0
                {
                    0
                } else {
                    err()
                };
                out[4] = if libc::getpid() > 0 { 0 } else { err() };
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(&w),
                    out.as_ptr().cast(),
                    std::mem::size_of_val(&out),
                );
                libc::_exit(0);
            }
        }
        drop(w);
        let mut bytes = [0u8; 20];
        std::io::Read::read_exact(&mut std::fs::File::from(r), &mut bytes).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let out: Vec<i32> = bytes
            .chunks(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            out,
            [0, libc::EPERM, libc::ENOSYS, libc::EPERM, 0],
            "install, unshare, clone3, mount, getpid"
        );
    }
}
