//! A native program against its jail: host files, `:ro` grants, host processes, devices,
//! Unix sockets (by path and abstract), loopback TCP and UDP, mounts and namespaces, ptrace
//! and signals, and outliving ww. Each test asserts that the attack fails, that the host is
//! unchanged, and that ww still serves (its exit status is the program's).
//!
//! A machine whose kernel refuses part of the jail makes ww fail closed (status 125, "cannot
//! jail"): the test is then recorded as skipped with the kernel's reason, never passed.

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Whether the run was jailed: `false` (after recording the skip) when ww refused to start
/// because this kernel lacks a protection. Prints the `-v` jail line when there is one.
fn jailed(test: &str, out: &Out) -> bool {
    if out.status == 125 && out.stderr.contains("cannot jail the native cell") {
        let reason = out
            .stderr
            .lines()
            .find(|l| l.contains("cannot jail"))
            .unwrap_or("the jail was refused");
        skip(
            test,
            &format!("this kernel refuses part of the jail: {reason}"),
        );
        return false;
    }
    if let Some(line) = out.stderr.lines().find(|l| l.contains("jail: user-ns=")) {
        println!("{line}");
    }
    true
}

/// The value after `label ` on a line of the program's stdout.
#[track_caller]
fn result(out: &Out, label: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} line: {out:#?}"))
        .to_owned()
}

/// Runs `prog ARGS` in ww with `-v` (plus `extra` flags before the program).
fn jail_run(extra: &[&str], prog: &Path, args: &[&str]) -> Out {
    let mut all = vec!["-v", "run"];
    all.extend_from_slice(extra);
    all.push(s(prog));
    all.extend_from_slice(args);
    run(&all, "")
}

#[test]
fn a_cell_cannot_read_host_files_outside_its_grants() {
    let test = "a_cell_cannot_read_host_files_outside_its_grants";
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    // Beside the program, in the directory it was started from.
    let sibling = dir.path().join("sibling.txt");
    std::fs::write(&sibling, "sibling secret").unwrap();
    let prog = dir.path().join("reader");
    script(
        &prog,
        "#!/bin/sh\n\
         for f in \"$1\" \"$2\" /etc/shadow /etc/gshadow /etc/sudoers /root/.bash_history; do\n\
           if cat \"$f\" >/dev/null 2>&1; then echo \"read $f: ok $(cat \"$f\")\"; else echo \"read $f: refused\"; fi\n\
         done\n\
         ls /etc > /dev/null && echo etc-listed\n\
         exit 0\n",
    );
    let out = jail_run(&[], &prog, &[s(&secret), s(&sibling)]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        !out.stdout.contains("host secret") && !out.stdout.contains("sibling secret"),
        "a host file leaked: {out:#?}"
    );
    for f in [
        s(&secret),
        s(&sibling),
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
    ] {
        assert_eq!(result(&out, &format!("read {f}:")), "refused", "{out:#?}");
    }
    assert!(out.stdout.contains("etc-listed"), "{out:#?}");
    // The host is unchanged, and ww serves again.
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    assert_eq!(jail_run(&[], &prog, &[s(&secret), s(&sibling)]).status, 0);
}

#[test]
fn a_cell_cannot_write_a_read_only_grant_and_sees_grants_at_their_guest_path() {
    let test = "a_cell_cannot_write_a_read_only_grant_and_sees_grants_at_their_guest_path";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("existing"), "original").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let prog = dir.path().join("writer");
    script(
        &prog,
        "#!/bin/sh\n\
         try() { label=$1; shift; if \"$@\" 2>/dev/null; then echo \"$label ok\"; else echo \"$label refused\"; fi; }\n\
         try create sh -c 'echo x > /data/new'\n\
         try append sh -c 'echo x >> /data/existing'\n\
         try remove rm /data/existing\n\
         try mkdir mkdir /data/d\n\
         try chmod chmod 777 /data/existing\n\
         try rename mv /data/existing /data/moved\n\
         try read grep -q original /data/existing\n\
         try write-rw sh -c 'echo granted > /out/made'\n\
         exit 0\n",
    );
    let ro = format!("{}::/data:ro", data.display());
    let rw = format!("{}::/out", out_dir.display());
    let out = jail_run(&["--dir", &ro, "--dir", &rw], &prog, &[]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    for label in ["create", "append", "remove", "mkdir", "chmod", "rename"] {
        assert_eq!(result(&out, label), "refused", "{label}: {out:#?}");
    }
    // The grants are there, at their guest paths.
    assert_eq!(result(&out, "read"), "ok", "{out:#?}");
    assert_eq!(result(&out, "write-rw"), "ok", "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("made")).unwrap(),
        "granted\n"
    );
    // The read-only grant is unchanged.
    let mut names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["existing"]);
    assert_eq!(
        std::fs::read_to_string(data.join("existing")).unwrap(),
        "original"
    );
    let mode = std::fs::metadata(data.join("existing"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o777, 0o777);
}

/// Kills and reaps a child on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_cell_sees_only_its_own_pid_namespace_in_proc() {
    let test = "a_cell_sees_only_its_own_pid_namespace_in_proc";
    // A host process with a command line no other has.
    let marker = format!("{}", 50_000 + std::process::id() % 10_000);
    let host = Reaped(
        std::process::Command::new("sleep")
            .arg(&marker)
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("lister");
    script(
        &prog,
        "#!/bin/sh\n\
         echo \"pids $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\"\n\
         echo \"init $(tr '\\0' ' ' < /proc/1/cmdline)\"\n\
         found=no\n\
         for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$c\" | grep -q \"sleep $1\" && found=yes; done\n\
         echo \"host-sleep $found\"\n\
         if [ -e /proc/$2 ]; then echo \"host-pid visible\"; else echo \"host-pid absent\"; fi\n",
    );
    let host_pid = host.0.id().to_string();
    let out = jail_run(&[], &prog, &[&marker, &host_pid]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(result(&out, "host-sleep"), "no", "{out:#?}");
    assert_eq!(result(&out, "host-pid"), "absent", "{out:#?}");
    // Init (1), the program (2), and what it runs (ls, grep, tr...): a handful, all small.
    let pids: Vec<u32> = result(&out, "pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.contains(&2), "{out:#?}");
    assert!(pids.iter().all(|&p| p < 100), "host pids visible: {out:#?}");
    // The jail's init, not ww's command line.
    let init = result(&out, "init");
    assert!(init.starts_with("ww-jail-init"), "{out:#?}");
    assert!(!init.contains(s(&prog)), "ww's arguments leaked: {out:#?}");
}

#[test]
fn a_cell_cannot_reach_host_devices_or_the_host_dev_shm() {
    let test = "a_cell_cannot_reach_host_devices_or_the_host_dev_shm";
    let name = format!("ww-attack-{}", std::process::id());
    let host_shm = Path::new("/dev/shm").join(format!("{name}-host"));
    let have_shm = std::fs::write(&host_shm, "host shm").is_ok();
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("devices");
    script(
        &prog,
        &format!(
            "#!/bin/sh\n\
             echo \"dev $(ls /dev | tr '\\n' ' ')\"\n\
             echo \"shm $(ls /dev/shm | tr '\\n' ' ')\"\n\
             echo cell > /dev/shm/{name}-cell && echo shm-write ok\n\
             echo x > /dev/null && echo null ok\n\
             head -c 4 /dev/urandom | wc -c | sed 's/^/urandom /'\n\
             for d in /dev/vda /dev/sda /dev/mem /dev/kmsg /dev/ptmx; do\n\
               if echo x > $d 2>/dev/null; then echo \"$d written\"; fi\n\
             done\n\
             echo done\n"
        ),
    );
    let out = jail_run(&[], &prog, &[]);
    let cell_shm = Path::new("/dev/shm").join(format!("{name}-cell"));
    let leaked = cell_shm.exists();
    let _ = std::fs::remove_file(&cell_shm);
    if have_shm {
        assert_eq!(std::fs::read_to_string(&host_shm).unwrap(), "host shm");
        std::fs::remove_file(&host_shm).unwrap();
    }
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(!leaked, "the cell wrote the host's /dev/shm: {out:#?}");
    // Its own /dev/shm works, and is empty of the host's.
    assert_eq!(result(&out, "shm-write"), "ok", "{out:#?}");
    assert!(!result(&out, "shm").contains("host"), "{out:#?}");
    assert_eq!(result(&out, "null"), "ok", "{out:#?}");
    assert_eq!(result(&out, "urandom"), "4", "{out:#?}");
    assert!(!out.stdout.contains("written"), "{out:#?}");
    let allowed = [
        "fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom",
        "zero",
    ];
    for entry in result(&out, "dev").split_whitespace() {
        assert!(
            allowed.contains(&entry),
            "/dev/{entry} in the jail: {out:#?}"
        );
    }
}

/// Connects to each target; `unix:PATH`, `abstract:NAME`, `tcp:PORT`, `udp:PORT`.
const SOCKETS: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    kind, _, where = target.partition(":")
    try:
        if kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"escaped", ("127.0.0.1", int(where)))
        elif kind == "tcp":
            s = socket.create_connection(("127.0.0.1", int(where)), timeout=2)
            s.sendall(b"escaped")
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(("\0" + where) if kind == "abstract" else where)
            s.sendall(b"escaped")
        print(kind, "connected", flush=True)
    except OSError as e:
        print(kind, "refused", e.errno, flush=True)
"#;

/// Runs the socket probe against `targets`; `None` (skipped) without Python or a jail.
fn probe_sockets(test: &str, targets: &[String]) -> Option<Out> {
    let Some(python) = venv_python() else {
        skip(test, "no target/pyenv (cargo xtask test makes it)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("sockets");
    script(&prog, &format!("#!{}\n{SOCKETS}", python.display()));
    let args: Vec<&str> = targets.iter().map(String::as_str).collect();
    let out = jail_run(&[], &prog, &args);
    if !jailed(test, &out) {
        return None;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    Some(out)
}

#[test]
fn a_cell_cannot_connect_to_host_unix_sockets() {
    use std::os::linux::net::SocketAddrExt as _;
    let test = "a_cell_cannot_connect_to_host_unix_sockets";
    let dir = tempfile::tempdir().unwrap();
    let in_tempdir = dir.path().join("service.sock");
    let in_tmp = PathBuf::from(format!("/tmp/ww-attack-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&in_tmp);
    let abstract_name = format!("ww-attack-{}", std::process::id());
    let listeners = [
        std::os::unix::net::UnixListener::bind(&in_tempdir).unwrap(),
        std::os::unix::net::UnixListener::bind(&in_tmp).unwrap(),
        std::os::unix::net::UnixListener::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap(),
        )
        .unwrap(),
    ];
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }
    let out = probe_sockets(
        test,
        &[
            format!("unix:{}", in_tempdir.display()),
            format!("unix:{}", in_tmp.display()),
            format!("abstract:{abstract_name}"),
        ],
    );
    let _ = std::fs::remove_file(&in_tmp);
    let Some(out) = out else { return };
    let refused = out
        .stdout
        .lines()
        .filter(|l| l.contains(" refused "))
        .count();
    assert_eq!(refused, 3, "{out:#?}");
    assert!(!out.stdout.contains("connected"), "{out:#?}");
    for l in &listeners {
        assert!(l.accept().is_err(), "a connection arrived: {out:#?}");
    }
}

#[test]
fn a_cell_cannot_reach_loopback_tcp_or_udp() {
    let test = "a_cell_cannot_reach_loopback_tcp_or_udp";
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let Some(out) = probe_sockets(
        test,
        &[
            format!("tcp:{}", tcp.local_addr().unwrap().port()),
            format!("udp:{}", udp.local_addr().unwrap().port()),
        ],
    ) else {
        return;
    };
    assert!(result(&out, "tcp").starts_with("refused"), "{out:#?}");
    assert!(result(&out, "udp").starts_with("refused"), "{out:#?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(tcp.accept().is_err(), "a TCP connection arrived");
    let mut buf = [0u8; 64];
    assert!(udp.recv(&mut buf).is_err(), "a datagram arrived");
}

#[test]
fn a_cell_cannot_mount_or_make_namespaces() {
    let test = "a_cell_cannot_mount_or_make_namespaces";
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("escaper");
    script(
        &prog,
        "#!/bin/sh\n\
         try() { label=$1; shift; if \"$@\" >/dev/null 2>&1; then echo \"$label ok\"; else echo \"$label refused\"; fi; }\n\
         try mount-tmpfs mount -t tmpfs none /tmp\n\
         try umount-proc umount -l /proc\n\
         try remount-rw mount -o remount,rw /usr\n\
         try unshare-user unshare -U true\n\
         try unshare-mount unshare -m true\n\
         try unshare-net unshare -n true\n\
         try chroot chroot / true\n\
         try cat-still cat /proc/self/status\n",
    );
    let out = jail_run(&[], &prog, &[]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    let have = |tool: &str| Path::new("/usr/bin").join(tool).exists();
    for (label, tool) in [
        ("mount-tmpfs", "mount"),
        ("umount-proc", "umount"),
        ("remount-rw", "mount"),
        ("unshare-user", "unshare"),
        ("unshare-mount", "unshare"),
        ("unshare-net", "unshare"),
        ("chroot", "chroot"),
    ] {
        if have(tool) || Path::new("/usr/sbin").join(tool).exists() {
            assert_eq!(result(&out, label), "refused", "{label}: {out:#?}");
        }
    }
    assert_eq!(result(&out, "cat-still"), "ok", "{out:#?}");
}

#[test]
fn a_cell_cannot_trace_signal_or_read_ww_and_its_supervisors() {
    let test = "a_cell_cannot_trace_signal_or_read_ww_and_its_supervisors";
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("tracer");
    // $1: the test's pid (ww's parent), a host process.
    script(
        &prog,
        "#!/bin/sh\n\
         try() { label=$1; shift; if \"$@\" >/dev/null 2>&1; then echo \"$label ok\"; else echo \"$label refused\"; fi; }\n\
         try kill-host kill -0 \"$1\"\n\
         try mem-host head -c 1 /proc/\"$1\"/mem\n\
         try mem-init head -c 1 /proc/1/mem\n\
         try environ-init head -c 1 /proc/1/environ\n\
         try kill-init kill -TERM 1\n\
         echo \"environ $(tr '\\0' ' ' < /proc/1/environ 2>/dev/null)\"\n\
         echo alive\n",
    );
    let me = std::process::id().to_string();
    let out = jail_run(&[], &prog, &[&me]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    for label in ["kill-host", "mem-host", "mem-init", "environ-init"] {
        assert_eq!(result(&out, label), "refused", "{label}: {out:#?}");
    }
    // Init is a fork of ww: ww's environment (the test set WW_CACHE_DIR) stays unread.
    assert!(!out.stdout.contains("WW_CACHE_DIR"), "{out:#?}");
    assert!(out.stdout.contains("alive"), "{out:#?}");
}

#[test]
fn a_cell_does_not_outlive_ww() {
    let test = "a_cell_does_not_outlive_ww";
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let marker = format!("{}", 60_000 + std::process::id() % 10_000);
    let prog = dir.path().join("lingerer");
    script(
        &prog,
        &format!(
            "#!/bin/sh\n\
             (sleep 2; echo late > /out/marker) &\n\
             setsid sleep {marker} &\n\
             echo ready\n\
             sleep 1000\n"
        ),
    );
    let rw = format!("{}::/out", out_dir.display());
    let mut child = ww()
        .args(["-v", "run", "--dir", &rw, s(&prog)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    if first.as_deref() != Some("ready") {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let out = Out {
            status: 125,
            stdout: first.unwrap_or_default(),
            stderr,
        };
        if !jailed(test, &out) {
            return;
        }
        panic!("the cell did not start: {out:#?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lingering = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == format!("sleep\0{marker}\0").as_bytes())
            })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while lingering() {
        assert!(
            Instant::now() < deadline,
            "the cell's `sleep {marker}` outlived ww"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !out_dir.join("marker").exists(),
        "a process of the cell ran on after ww was killed"
    );
}

#[test]
fn allow_weak_jail_is_accepted_and_changes_nothing_where_the_jail_holds() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("hello");
    script(&prog, "#!/bin/sh\necho hello\n");
    let out = jail_run(&["--allow-weak-jail"], &prog, &[]);
    assert_eq!((out.status, out.stdout.trim()), (0, "hello"), "{out:#?}");
    let mut cmd = ww();
    cmd.env("WW_ALLOW_WEAK_JAIL", "true")
        .args(["-v", "run", s(&prog)]);
    let out = output(cmd, "");
    assert_eq!((out.status, out.stdout.trim()), (0, "hello"), "{out:#?}");
    // Without the flag a run either has every layer (the `-v` line says so) or fails
    // closed; with it, where every layer holds, no warning names a missing one.
    let out = jail_run(&[], &prog, &[]);
    if jailed(
        "allow_weak_jail_is_accepted_and_changes_nothing_where_the_jail_holds",
        &out,
    ) {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("jail: user-ns="))
            .unwrap_or_else(|| panic!("no jail line: {out:#?}"));
        for layer in [
            "root=yes",
            "seccomp=yes",
            "pid-ns=yes",
            "net-ns=yes",
            "landlock=abi",
        ] {
            assert!(line.contains(layer), "{layer}: {out:#?}");
        }
        let weak = jail_run(&["--allow-weak-jail"], &prog, &[]);
        assert!(!weak.stderr.contains("WARN"), "{weak:#?}");
    }
}

#[test]
fn a_grant_at_proc_dev_or_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("hello");
    script(&prog, "#!/bin/sh\necho hello\n");
    for guest in ["/proc", "/dev/shm", "/"] {
        let grant = format!("{}::{guest}", dir.path().display());
        let out = run(&["run", "--dir", &grant, s(&prog)], "");
        out.assert_ww_error("a native cell cannot have a grant there");
        assert!(!out.stdout.contains("hello"), "{out:#?}");
    }
}

/// `ww ARGS` inside a user namespace without an id map (util-linux `unshare -U`), where the
/// kernel refuses the jail's own user namespace: `None` when `unshare` cannot run here.
fn ww_in_unmapped_userns(args: &[&str]) -> Option<Out> {
    let probe = std::process::Command::new("unshare")
        .args(["-U", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let plain = ww();
    let mut cmd = std::process::Command::new("unshare");
    cmd.arg("-U").arg(plain.get_program()).args(args);
    for (key, value) in plain.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    Some(output(cmd, ""))
}

#[test]
fn a_jail_the_kernel_refuses_fails_closed_unless_the_operator_allows_it() {
    let test = "a_jail_the_kernel_refuses_fails_closed_unless_the_operator_allows_it";
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("hello");
    script(&prog, "#!/bin/sh\necho ran\n");
    let Some(out) = ww_in_unmapped_userns(&["run", s(&prog)]) else {
        skip(test, "util-linux `unshare -U` cannot run here");
        return;
    };
    // Refused: ww's own error, naming the protection, the kernel's reason and the flag.
    out.assert_ww_error("cannot jail the native cell");
    assert!(out.stderr.contains("namespaces"), "{out:#?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
    assert!(out.stderr.contains("--allow-weak-jail"), "{out:#?}");
    assert!(!out.stdout.contains("ran"), "the program ran: {out:#?}");
    // Accepted by the operator: it runs, and what did not hold is a warning.
    let out = ww_in_unmapped_userns(&["run", "--allow-weak-jail", s(&prog)]).unwrap();
    assert_eq!((out.status, out.stdout.trim()), (0, "ran"), "{out:#?}");
    assert!(out.stderr.contains("no user namespace"), "{out:#?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:#?}");
}

/// Traces its own child (which Landlock and the user namespace would allow), reads its
/// memory, and makes namespaces and keyrings: only seccomp refuses these.
const SYSCALLS: &str = r#"
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
child = subprocess.Popen(["sleep", "30"])
def attempt(label, result):
    print(label, "ok" if result >= 0 else "refused %d" % ctypes.get_errno(), flush=True)
attempt("ptrace-attach", libc.ptrace(16, child.pid, None, None))
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.cast(buf, ctypes.c_void_p), 8), iovec(0x400000, 8)
attempt("process-vm-readv", libc.process_vm_readv(child.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
attempt("unshare-user", libc.unshare(0x10000000))
attempt("keyctl", libc.syscall(250 if os.uname().machine == "x86_64" else 219, 0, -3, 0, 0, 0))
attempt("io-uring", libc.syscall(425, 1, ctypes.create_string_buffer(120)))
attempt("getpid", os.getpid())
child.kill()
"#;

#[test]
fn a_cell_cannot_ptrace_read_memory_or_use_refused_syscalls_even_on_its_own_children() {
    let test = "a_cell_cannot_ptrace_read_memory_or_use_refused_syscalls_even_on_its_own_children";
    let Some(python) = venv_python() else {
        skip(test, "no target/pyenv (cargo xtask test makes it)");
        return;
    };
    if !matches!(std::env::consts::ARCH, "x86_64" | "aarch64") {
        skip(
            test,
            "the probe's syscall numbers are x86_64's and aarch64's",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("syscalls");
    script(&prog, &format!("#!{}\n{SYSCALLS}", python.display()));
    let out = jail_run(&[], &prog, &[]);
    if !jailed(test, &out) {
        return;
    }
    assert_eq!(out.status, 0, "{out:#?}");
    let eperm = format!("refused {}", libc::EPERM);
    for label in [
        "ptrace-attach",
        "process-vm-readv",
        "unshare-user",
        "keyctl",
        "io-uring",
    ] {
        assert_eq!(result(&out, label), eperm, "{label}: {out:#?}");
    }
    assert_eq!(result(&out, "getpid"), "ok", "{out:#?}");
}

#[test]
fn an_unprivileged_ww_jails_a_cell_with_every_layer() {
    let test = "an_unprivileged_ww_jails_a_cell_with_every_layer";
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        skip(
            test,
            "needs root and setpriv to run ww as an unprivileged user",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let prog = dir.path().join("hello");
    script(
        &prog,
        "#!/bin/sh\necho \"uid $(id -u) cwd $(pwd)\"\nhead -c1 /proc/1/environ >/dev/null 2>&1 || echo environ-refused\n",
    );
    let plain = ww();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(plain.get_program())
        .args(["-v", "run", s(&prog)])
        .env_remove("RUST_LOG")
        .env_remove("WW_ENV")
        .env("HOME", dir.path())
        .env("WW_CACHE_DIR", dir.path().join("cache"));
    let out = output(cmd, "");
    if out.status == 125 {
        // Refused for ww as root too: this kernel lacks a layer. Else a regression.
        let as_root = jail_run(&[], &prog, &[]);
        if !jailed(test, &as_root) {
            return;
        }
        panic!("the jail holds for root but fails unprivileged: {out:#?}");
    }
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(result(&out, "uid"), "65534 cwd /jail", "{out:#?}");
    assert!(out.stdout.contains("environ-refused"), "{out:#?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("jail: user-ns="))
        .unwrap_or_else(|| panic!("no jail line: {out:#?}"));
    for layer in [
        "root=yes",
        "seccomp=yes",
        "pid-ns=yes",
        "landlock=abi",
        "caps=none",
    ] {
        assert!(line.contains(layer), "{layer}: {out:#?}");
    }
}
