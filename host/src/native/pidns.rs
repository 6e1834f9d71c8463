//! The supervisors of a native cell in its own PID namespace, and the fd helpers of the
//! jail's hook: raw async-signal-safe syscalls only (they run between fork and exec).
//!
//! The process ww spawns forks the namespace's init (`fork_init`), which forks the program
//! (`fork_program`): ww -> outer supervisor -> init (pid 1) -> program (pid 2).

use std::os::fd::RawFd;

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
pub(super) unsafe fn close_all_but(keep: RawFd) {
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

/// After `unshare(CLONE_NEWPID)`: forks the namespace's init (pid 1). Returns in init, with
/// the write end of the pipe init passes the program's status on; the calling process
/// becomes the outer supervisor and never returns. `None` (in the caller) if the pipe or the
/// fork failed.
///
/// The outer supervisor (the pid ww knows) closes every fd but that pipe, forwards SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to init, and ends as the program ended (the
/// same signal or code). It dies with ww (`PR_SET_PDEATHSIG`), and init with it.
///
/// # Safety
/// Raw syscalls only; between fork and exec.
pub(super) unsafe fn fork_init() -> Option<RawFd> {
    // SAFETY: raw syscalls only; the supervisor's branch never returns.
    unsafe {
        let mut pipe: [RawFd; 2] = [-1, -1];
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return None;
        }
        let init = libc::fork();
        if init < 0 {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
            return None;
        }
        if init > 0 {
            close_all_but(pipe[0]);
            forward_signals_to(init);
            let init_status = wait_for(init).unwrap_or(0);
            let mut program_status: libc::c_int = 0;
            let n = libc::read(pipe[0], (&raw mut program_status).cast(), 4);
            exit_like(if n == 4 { program_status } else { init_status });
        }
        libc::close(pipe[0]);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        Some(pipe[1])
    }
}

/// In init: forks the program (pid 2) and returns in it (`true`); init never returns. `false`
/// (in init) if the fork failed.
///
/// Init closes every fd but `status` (so no grant or handle stays open in it), forwards the
/// same signals to the program (pid 1 gets only signals it handles, so the program is not
/// pid 1), reaps every process of the namespace, and when the program ends writes its wait
/// status on `status` and exits: the kernel then kills whatever is left in the namespace.
///
/// # Safety
/// Raw syscalls only; between fork and exec.
pub(super) unsafe fn fork_program(status: RawFd) -> bool {
    // SAFETY: raw syscalls only; init's branch never returns.
    unsafe {
        let program = libc::fork();
        if program < 0 {
            return false;
        }
        if program == 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            return true;
        }
        close_all_but(status);
        forward_signals_to(program);
        let mut wait_status: libc::c_int = 0;
        loop {
            let mut reaped: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut reaped, 0);
            if pid == program {
                wait_status = reaped;
                break;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        libc::write(status, (&raw const wait_status).cast(), 4);
        libc::_exit(0);
    }
}

/// Marks fds `first..=last` close-on-exec.
///
/// # Safety
/// Raw syscalls only.
pub(super) unsafe fn cloexec_range(first: RawFd, last: RawFd) {
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

/// Blanks this process's command line (the memory `/proc/PID/cmdline` reads) and writes
/// `name` there: the supervisors are forks of ww, and a cell must not read ww's arguments
/// in `/proc/1/cmdline`. The bounds come from `/proc/self/stat` (fields 48 and 49,
/// `arg_start` and `arg_end`), read into a stack buffer. Best effort: on any surprise it
/// leaves the command line as it is.
///
/// # Safety
/// Raw syscalls only; writes this process's own argument memory, which nothing else reads
/// after the fork.
pub(super) unsafe fn rename_process(name: &[u8]) {
    let mut buf = [0u8; 2048];
    // SAFETY: open/read/close into a stack buffer.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return;
    }
    let stat = &buf[..n as usize];
    // The fields after the command name, which ends at the last ')': field 3 first.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return;
    };
    let (mut start, mut end) = (0usize, 0usize);
    for (i, field) in stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .enumerate()
    {
        let number = || {
            field.iter().try_fold(0usize, |acc, &b| {
                b.is_ascii_digit()
                    .then(|| acc.checked_mul(10)?.checked_add(usize::from(b - b'0')))
                    .flatten()
            })
        };
        match i + 3 {
            48 => start = number().unwrap_or(0),
            49 => end = number().unwrap_or(0),
            _ => {}
        }
    }
    if start == 0 || end <= start || end - start > 1 << 20 {
        return;
    }
    // SAFETY: [start, end) is this process's argument memory (the kernel's own bounds).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        area.fill(0);
        let len = name.len().min(area.len().saturating_sub(1));
        area[..len].copy_from_slice(&name[..len]);
    }
}
