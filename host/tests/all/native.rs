//! Native cells: programs that are not WebAssembly, run in a jail (see `ww::native`).
//!
//! The jail's protections depend on the kernel: each test reads which held from ww's `-v`
//! log line `jail: user-ns=… net-ns=… landlock=…`, prints it, and asserts a refusal only
//! where the protection that gives it held.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::Stdio;

use crate::support::*;

/// The `jail: …` summary from a `-v` run, printed for the test's log.
fn protections(out: &Out) -> String {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("jail: user-ns="))
        .unwrap_or_else(|| panic!("no jail line: {out:#?}"))
        .to_owned();
    println!("protections on this machine: {line}");
    line
}

#[test]
fn a_shell_cell_gets_its_args_only_the_granted_env_and_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("hello");
    script(
        &prog,
        "#!/bin/sh\necho \"args:$*\"\necho \"cwd:$(pwd)\"\nenv | sort\nexit 7\n",
    );
    let out = run(&["-v", "run", "-e", "GREETING=hi", s(&prog), "a", "-b"], "");
    protections(&out);
    assert_eq!(out.status, 7, "{out:#?}");
    assert!(out.stdout.contains("args:a -b"), "{out:#?}");
    // The jail directory, at /jail in the cell's own root.
    assert!(out.stdout.contains("cwd:/jail\n"), "{out:#?}");
    assert!(out.stdout.contains("GREETING=hi"), "{out:#?}");
    assert!(
        out.stdout.contains("WW_FDS=()") || !out.stdout.contains("HOME="),
        "{out:#?}"
    );
    for leaked in ["HOME=", "PATH=", "WW_CACHE_DIR=", "CARGO"] {
        assert!(!out.stdout.contains(leaked), "{leaked} leaked: {out:#?}");
    }
    // The jail directory (its host path is in the `-v` log) is gone afterwards.
    let work = out
        .stderr
        .split("jail=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no jail= field: {out:#?}"));
    assert!(work.contains("ww-jail-"), "{out:#?}");
    assert!(!Path::new(work).exists(), "{work} outlived the cell");
}

#[test]
fn a_signal_death_is_128_plus_the_signal_with_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("die");
    script(&prog, "#!/bin/sh\nkill -SEGV $$\nsleep 5\n");
    let out = run(&["run", s(&prog)], "");
    assert_eq!(out.status, 128 + 11, "{out:#?}");
    assert!(
        out.stderr.contains("SIGSEGV") && out.stderr.contains("`die`"),
        "{out:#?}"
    );
    assert_no_panic(&out);
}

#[test]
fn sigterm_to_ww_is_forwarded_to_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("waits");
    script(
        &prog,
        "#!/bin/sh\ntrap 'echo got-term; exit 42' TERM\necho ready\nwhile :; do sleep 0.05; done\n",
    );
    let mut child = ww()
        .args(["run", s(&prog)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}

#[test]
fn go_style_bin_directories_pick_the_host_program_and_honour_ww_os_and_ww_arch() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("multi");
    script(&img.join("bin/linux_amd64/prog"), "#!/bin/sh\necho amd64\n");
    script(&img.join("bin/linux_arm64/prog"), "#!/bin/sh\necho arm64\n");
    let host_arch = ww::native::select::go_arch(std::env::consts::ARCH);
    let out = output(
        {
            let mut cmd = ww();
            cmd.env_remove("WW_OS")
                .env_remove("WW_ARCH")
                .args(["run", s(&img)]);
            cmd
        },
        "",
    );
    if matches!(host_arch, "amd64" | "arm64") && std::env::consts::OS == "linux" {
        assert_eq!((out.status, out.stdout.trim()), (0, host_arch), "{out:#?}");
    }
    for arch in ["amd64", "arm64"] {
        let mut cmd = ww();
        cmd.env("WW_OS", "linux")
            .env("WW_ARCH", arch)
            .args(["run", s(&img)]);
        let out = output(cmd, "");
        assert_eq!((out.status, out.stdout.trim()), (0, arch), "{out:#?}");
    }
    let mut cmd = ww();
    cmd.env("WW_OS", "plan9")
        .env("WW_ARCH", "arm64")
        .args(["run", s(&img)]);
    let out = output(cmd, "");
    out.assert_ww_error("no executable found in IMAGE directory");
    assert!(out.stderr.contains("plan9_arm64"), "{out:#?}");
    // The single program directly in bin/ is the fallback.
    script(&img.join("bin/only"), "#!/bin/sh\necho fallback\n");
    let mut cmd = ww();
    cmd.env("WW_OS", "plan9").args(["run", s(&img)]);
    let out = output(cmd, "");
    assert_eq!((out.status, out.stdout.trim()), (0, "fallback"), "{out:#?}");
}

/// The cell: reads a host file outside its grants, a granted pipe (by fd and by pathlink),
/// an fd ww holds but did not grant, and connects to a port the test listens on.
const PROBE: &str = r#"
import os, socket, sys
def attempt(label, f):
    try:
        print(label, "ok", repr(f()), flush=True)
    except OSError as e:
        print(label, "refused", e.errno, flush=True)
attempt("secret", lambda: open(sys.argv[1]).read())
attempt("granted-fd", lambda: os.read(int(os.environ["WW_FD_IN"]), 100))
attempt("pathlink", lambda: open("logs", "w").write("via the link"))
attempt("ungranted-fd", lambda: os.read(7, 100))
def connect():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2)
    s.sendall(b"escaped")
    return "connected"
attempt("network", connect)
"#;

#[test]
fn the_jail_refuses_host_files_ungranted_fds_and_the_network() {
    let Some(python) = venv_python() else {
        skip(
            "the_jail_refuses_host_files_ungranted_fds_and_the_network",
            "no target/pyenv (cargo xtask test makes it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let prog = dir.path().join("probe");
    script(&prog, &format!("#!{}\n{PROBE}", python.display()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();

    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (in_r, in_w) = pipe();
    std::fs::File::from(in_w)
        .write_all(b"granted bytes")
        .unwrap();
    let (logs_r, logs_w) = pipe();
    let (hidden_r, hidden_w) = pipe();
    std::fs::File::from(hidden_w)
        .write_all(b"not for the cell")
        .unwrap();
    let mut cmd = ww();
    cmd.args([
        "-v",
        "run",
        "--fd",
        "in=5,mode=r",
        "--fd",
        "logs=6,mode=w,pathlink=true",
        s(&prog),
        s(&secret),
        &port,
    ]);
    with_fds(&mut cmd, &[(&in_r, 5), (&logs_w, 6), (&hidden_r, 7)]);
    let out = output(cmd, "");
    drop(logs_w);
    let line = protections(&out);
    assert_eq!(out.status, 0, "{out:#?}");
    let result = |label: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no {label} line: {out:#?}"))
            .to_owned()
    };
    // What is granted works.
    assert_eq!(result("granted-fd"), "ok b'granted bytes'", "{out:#?}");
    assert_eq!(result("pathlink"), "ok 12", "{out:#?}");
    let mut logged = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(logs_r), &mut logged).unwrap();
    assert_eq!(logged, "via the link");
    // An fd ww holds but did not grant is never there (not a protection: always).
    assert!(result("ungranted-fd").starts_with("refused"), "{out:#?}");
    if line.contains("landlock=abi") {
        assert!(result("secret").starts_with("refused"), "{out:#?}");
    } else {
        println!(
            "no Landlock here: the host file is readable ({})",
            result("secret")
        );
    }
    let landlock_net = line
        .split("landlock=abi")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|abi| abi >= 4);
    if line.contains("net-ns=yes") || landlock_net {
        assert!(result("network").starts_with("refused"), "{out:#?}");
        assert!(
            listener.accept().is_err(),
            "the cell reached the test's port"
        );
    } else {
        println!("no network isolation here: {}", result("network"));
    }
}

#[test]
fn a_script_without_the_executable_bit_is_a_ww_error() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("plain");
    std::fs::write(&prog, "#!/bin/sh\necho no\n").unwrap();
    let out = run(&["run", s(&prog)], "");
    out.assert_ww_error("not executable");
}

#[test]
fn in_a_pid_namespace_what_the_cell_leaves_behind_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("leaver");
    // A marker no other process has, to find the orphan by its command line.
    let marker = format!("{}", 40_000 + std::process::id() % 20_000);
    script(
        &prog,
        &format!("#!/bin/sh\necho \"pid $$\"\nsleep {marker} &\nexit 0\n"),
    );
    let out = run(&["-v", "run", s(&prog)], "");
    assert_eq!(out.status, 0, "{out:#?}");
    if !protections(&out).contains("pid-ns=yes") {
        skip(
            "in_a_pid_namespace_what_the_cell_leaves_behind_dies_with_it",
            "no PID namespace on this machine: reaping cannot be checked",
        );
        return;
    }
    assert_eq!(
        out.stdout.lines().next(),
        Some("pid 2"),
        "the program is pid 2: {out:#?}"
    );
    let orphan = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == format!("sleep\0{marker}\0").as_bytes())
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while orphan() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cell's `sleep {marker}` outlived it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
