//! File descriptors granted to cells, with real fds: pipes, socketpairs, files, systemd
//! socket activation and SCM_RIGHTS.

use std::io::{Read, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Command;

use crate::support::*;

/// `ww ARGS` with each `(fd, target)` installed at `target` in the ww process.
fn ww_with_fds(fds: &[(&OwnedFd, RawFd)], args: &[&str]) -> Command {
    let mut cmd = ww();
    cmd.args(args);
    with_fds(&mut cmd, fds);
    cmd
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn testbed() -> String {
    s(&image("testbed")).to_owned()
}

#[test]
fn a_read_grant_reads_a_pipe() {
    let (r, w) = pipe();
    let mut writer = std::fs::File::from(w);
    writer.write_all(b"from the pipe").unwrap();
    drop(writer);
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&r, 5)],
        &["run", "--fd", "in=5,mode=r", &tb, "fd-read", "in"],
    );
    let out = output(cmd, "");
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "from the pipe"),
        "{out:#?}"
    );
}

#[test]
fn a_write_grant_writes_a_pipe() {
    let (r, w) = pipe();
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&w, 6)],
        &["run", "--with-fd", "out=6", &tb, "fd-write", "out", "hi"],
    );
    let out = output(cmd, "");
    drop(w);
    assert_eq!(out.status, 0, "{out:#?}");
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi");
}

#[test]
fn the_host_enforces_the_mode() {
    let (r, _w) = pipe();
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&r, 5)],
        &["run", "--fd", "in=5,mode=r", &tb, "fd-write", "in", "x"],
    );
    let out = output(cmd, "");
    assert_eq!(out.status, 1, "{out:#?}");
    assert!(out.stdout.contains("error: not permitted"), "{out:#?}");

    let (_r, w) = pipe();
    let cmd = ww_with_fds(&[(&w, 6)], &["run", "--fd", "out=6", &tb, "fd-read", "out"]);
    let out = output(cmd, "");
    assert!(out.stdout.contains("error: not permitted"), "{out:#?}");
}

#[test]
fn a_mode_the_fd_does_not_allow_is_refused_before_start() {
    let (r, _w) = pipe();
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&r, 5)],
        &["run", "--fd", "in=5,mode=rw", &tb, "fd-names"],
    );
    output(cmd, "").assert_ww_error("read-only");
}

#[test]
fn a_file_grant_reads_and_writes_at_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, b"0123456789").unwrap();
    let file: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap()
        .into();
    let tb = testbed();
    let go = |args: &[&str]| {
        let mut all = vec!["run", "--fd", "db=7", &tb];
        all.extend_from_slice(args);
        output(ww_with_fds(&[(&file, 7)], &all), "")
    };
    let out = go(&["fd-write-at", "db", "2", "AB"]);
    assert_eq!((out.status, out.stdout.trim()), (0, "wrote 2"), "{out:#?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"01AB456789");
    let out = go(&["fd-read-at", "db", "1", "4"]);
    assert_eq!(out.stdout.trim(), "1AB4", "{out:#?}");
    let out = go(&["fd-size", "db"]);
    assert_eq!(out.stdout.trim(), "10", "{out:#?}");
    let out = go(&["fd-names"]);
    assert_eq!(out.stdout.trim(), "db rw file 10", "{out:#?}");
}

#[test]
fn a_socketpair_end_is_a_bidirectional_grant() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs: OwnedFd = theirs.into();
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&theirs, 8)],
        &[
            "run",
            "--fd",
            "sock=8,type=socket",
            &tb,
            "fd-write",
            "sock",
            "ping",
        ],
    );
    let out = output(cmd, "");
    drop(theirs);
    assert_eq!(out.status, 0, "{out:#?}");
    let mut got = String::new();
    let mut ours = ours;
    ours.read_to_string(&mut got).unwrap();
    assert_eq!(got, "ping");
}

#[test]
fn the_cell_environment_describes_its_grants() {
    let (r, w) = pipe();
    let shell = s(&image("shell")).to_owned();
    let cmd = ww_with_fds(
        &[(&r, 5), (&w, 6)],
        &["run", "--with-fd", "out=6", "--fd", "in=5", &shell],
    );
    let out = output(cmd, "env\n");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("WW_FD_OUT=4\n"), "{out:#?}");
    assert!(out.stdout.contains("WW_FD_IN=10\n"), "{out:#?}");
    assert!(
        out.stdout
            .contains(r#"WW_FDS=((out (fd 4) (mode "w") (type "stream")) (in (fd 10) (mode "r") (type "stream")))"#),
        "{out:#?}"
    );
}

#[test]
fn fd_verbose_prints_one_line_per_grant() {
    let (r, _w) = pipe();
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&r, 5)],
        &[
            "run",
            "--fd-verbose",
            "--fd",
            "in=5,target=12",
            &tb,
            "fd-names",
        ],
    );
    let out = output(cmd, "");
    assert!(
        out.stderr
            .contains("grant fd name=in num=12 type=stream mode=r move=false cloexec=true"),
        "{out:#?}"
    );
    assert_eq!(out.stdout.trim(), "in r stream 12");
}

#[test]
fn a_capability_table_in_both_shapes() {
    let (r, w) = pipe();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("caps.sexp");
    std::fs::write(
        &table,
        "(\n  (fd :name \"in\" :fd 5 :mode \"r\")\n  (fd (name \"out\") (fd 6) (mode \"w\") (target 20))\n)\n",
    )
    .unwrap();
    let from = format!("@{}", s(&table));
    let tb = testbed();
    let cmd = ww_with_fds(
        &[(&r, 5), (&w, 6)],
        &["run", "--fd-from", &from, &tb, "fd-names"],
    );
    let out = output(cmd, "");
    assert_eq!(out.stdout, "in r stream 10\nout w stream 20\n", "{out:#?}");
}

#[test]
fn table_errors_point_at_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("caps.sexp");
    std::fs::write(&table, "(\n  (fd :name \"in\" :fd 5 :colour \"r\")\n)\n").unwrap();
    let from = format!("@{}", s(&table));
    let out = run(&["run", "--fd-from", &from, &testbed(), "fd-names"], "");
    out.assert_ww_error("colour");
    assert!(
        out.stderr.contains(":2:"),
        "the diagnostic should name line 2: {out:#?}"
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let (r, _w) = pipe();
    let tb = testbed();
    let cases: &[(&[&str], &str)] = &[
        (&["--fd", "a=5", "--fd", "a=5"], "a"),
        (&["--fd", "a=5,colour=red"], "colour"),
        (&["--fd", "a=5,mode=x"], "mode"),
        (&["--fd", "a=5,type=pipe"], "type"),
        (
            &[
                "--fd",
                "a=5,target=12",
                "--with-fd",
                "b=5",
                "--fd-map",
                "b=12",
            ],
            "12",
        ),
        (&["--fd", "a=40"], "fd 40"),
        (&["--fd-map", "nope=12"], "nope"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&tb, "fd-names"]);
        let out = output(ww_with_fds(&[(&r, 5)], &args), "");
        out.assert_ww_error(needle);
    }
}

#[test]
fn systemd_socket_activation() {
    let (r, _w) = pipe();
    let (_r2, w2) = pipe();
    let tb = testbed();
    // systemd sets LISTEN_PID to the pid of the process it execs: `sh` execs ww in place.
    let mut cmd = Command::new("sh");
    cmd.env_remove("RUST_LOG")
        .env("WW_CACHE_DIR", repo().join("target").join("test-cache"))
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=events:log exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_ww"),
            "run",
            "--use-systemd-fds",
            &tb,
            "fd-names",
        ]);
    with_fds(&mut cmd, &[(&r, 3), (&w2, 4)]);
    let out = output(cmd, "");
    assert_eq!(
        out.stdout, "events r stream 10\nlog w stream 11\n",
        "{out:#?}"
    );
}

#[test]
fn fds_received_over_a_unix_socket() {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fdctl.sock");
    let (r, w) = pipe();
    let mut writer = std::fs::File::from(w);
    writer.write_all(b"passed over SCM_RIGHTS").unwrap();
    drop(writer);

    let tb = testbed();
    let mut cmd = ww();
    cmd.args(["run", "--fdctl", s(&socket), &tb, "fd-read", "got"]);
    let path = socket.clone();
    let sender = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(stream) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("cannot connect to --fdctl socket: {e}"),
            }
        };
        let fds = [std::os::fd::AsFd::as_fd(&r)];
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        sendmsg(
            &stream,
            &[std::io::IoSlice::new(b"got,mode=r\n")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    });
    let out = output(cmd, "");
    sender.join().unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "passed over SCM_RIGHTS"),
        "{out:#?}"
    );
}

#[test]
fn the_fdctl_socket_is_removed_when_ww_ends_by_a_signal() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fdctl.sock");
        let mut child = ww()
            .args(["run", "--fdctl", s(&socket), &testbed(), "ping"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "no socket appeared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(signal),
            "ww should end by the signal: {status:?}"
        );
        assert!(!socket.exists(), "{} outlived ww", socket.display());
    }
}

#[test]
fn a_cell_passes_a_grant_on_as_held_or_narrowed() {
    let (r, w) = pipe();
    let mut writer = std::fs::File::from(w);
    writer.write_all(b"for the child").unwrap();
    drop(writer);
    let tb = testbed();
    let go = |args: &[&str]| {
        let mut all = vec!["run", "--fd", "in=5", &tb, "spawn"];
        all.extend_from_slice(args);
        output(ww_with_fds(&[(&r, 5)], &all), "")
    };
    let out = go(&["--fd", "in:data", "--", "fd-read", "data"]);
    assert!(out.stdout.starts_with("for the child"), "{out:#?}");
    let out = go(&["--fd", "in::rw", "--", "fd-names"]);
    assert!(out.stdout.contains("refused: not permitted"), "{out:#?}");
    let out = go(&["--fd", "nope", "--", "fd-names"]);
    assert!(out.stdout.contains("refused: not permitted"), "{out:#?}");
    let out = go(&["--", "fd-names"]);
    assert_eq!(
        out.stdout.trim(),
        "child: exited 0",
        "a child gets no grant unless passed: {out:#?}"
    );
}
