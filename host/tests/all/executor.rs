//! Children: spawning, exit statuses, limits, attenuation, and the shell's job control.

use std::time::{Duration, Instant};

use crate::support::*;

fn testbed(args: &[&str]) -> Out {
    let tb = image("testbed");
    let mut all = vec!["run", s(&tb)];
    all.extend_from_slice(args);
    run(&all, "")
}

#[track_caller]
fn assert_line(out: &Out, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l == line),
        "no line {line:?} in {out:#?}"
    );
}

#[test]
fn pid0_spawns_child_echo_through_a_pipe() {
    let out = run(&["run", s(&image("pid0"))], "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout
            .contains("child-echo said \"hello from pid0\" and exited 0"),
        "{out:#?}"
    );
}

#[test]
fn child_exit_codes_come_back_exactly() {
    for code in ["0", "1", "7", "128", "255"] {
        let out = testbed(&["spawn", "--", "exit", code]);
        assert_eq!(out.status, 0, "{out:#?}");
        assert_line(&out, &format!("child: exited {code}"));
    }
}

#[test]
fn trap_kill_and_each_limit_are_told_apart() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["spawn", "--", "trap"],
            "child: trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (&["kill"], "child: killed"),
        (
            &["spawn", "--timeout-ms", "100", "--", "spin"],
            "child: limit exceeded: time",
        ),
        (
            &["spawn", "--max-memory", "33554432", "--", "hog"],
            "child: limit exceeded: memory",
        ),
    ];
    for (args, line) in cases {
        let out = testbed(args);
        assert_eq!(out.status, 0, "the parent must survive: {out:#?}");
        assert_line(&out, line);
    }
    let tb = image("testbed");
    let mut all = vec!["run", "--fuel", "100000000", s(&tb)];
    all.extend_from_slice(&["spawn", "--fuel", "100000", "--", "spin"]);
    let out = run(&all, "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert_line(&out, "child: limit exceeded: fuel");
}

#[test]
fn a_child_timeout_is_enforced_promptly() {
    let started = Instant::now();
    let out = testbed(&["spawn", "--timeout-ms", "200", "--", "spin"]);
    assert_line(&out, "child: limit exceeded: time");
    // Generous: the point is that it is not the old 600 ms granularity times many.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_child_never_gets_more_than_its_parent() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["spawn", "--dir", "/nope", "--", "exit", "0"],
            "refused: not permitted: `/nope` is not a directory this cell holds",
        ),
        (
            &["spawn", "--max-memory", "99999999999", "--", "exit", "0"],
            "refused: not permitted: max-memory: asked for 99999999999, but the spawner is limited to 1073741824",
        ),
        (
            &["spawn", "--fuel", "10", "--", "exit", "0"],
            "refused: not permitted: fuel: asked for metered fuel, but the spawner is limited to no fuel metering (start ww with --fuel)",
        ),
        (
            &["spawn", "--max-children", "100000", "--", "exit", "0"],
            "refused: not permitted: max-children: asked for 100000, but the spawner is limited to 256",
        ),
        (
            &["spawn", "--path", "/usr/lib/nothing.wasm", "--", "x"],
            "refused: not found: /usr/lib/nothing.wasm",
        ),
        (
            &["spawn", "--path", "/etc/README", "--", "x"],
            "refused: invalid: /etc/README is not a WebAssembly binary",
        ),
    ];
    for (args, line) in cases {
        let out = testbed(args);
        assert_eq!(out.status, 0, "{out:#?}");
        assert_line(&out, line);
    }
}

#[test]
fn a_child_with_no_executor_cannot_spawn() {
    let out = testbed(&["spawn", "--dir", "/", "--", "spawn", "--", "exit", "0"]);
    assert_line(&out, "child: exited 1");
    assert!(
        out.stderr.contains("this cell holds no executor"),
        "{out:#?}"
    );
}

#[test]
fn directories_are_passed_as_held_or_narrowed() {
    let data = tempfile::tempdir().unwrap();
    let flag = format!("{}::/data", s(data.path()));
    let tb = image("testbed");
    let go = |args: &[&str]| {
        let mut all = vec!["run", "--dir", &flag, s(&tb)];
        all.extend_from_slice(args);
        run(&all, "")
    };
    let out = go(&["spawn", "--ro-dir", "/data", "--", "write", "/data/ro", "x"]);
    assert!(out.stdout.contains("error:"), "{out:#?}");
    assert!(!data.path().join("ro").exists());
    let out = go(&["spawn", "--dir", "/data", "--", "write", "/data/rw", "x"]);
    assert_line(&out, "wrote");
    assert!(data.path().join("rw").exists());
    let out = go(&[
        "spawn",
        "--dir",
        "/data:/elsewhere",
        "--dir",
        "/",
        "--",
        "dirs",
    ]);
    assert_eq!(
        out.stdout.lines().take(2).collect::<Vec<_>>(),
        ["/ ro", "/elsewhere rw"],
        "the root comes first: {out:#?}"
    );
}

#[test]
fn a_spawn_storm_hits_the_child_cap() {
    let out = testbed(&["storm"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert_line(&out, "spawned 256; refused: too many children: 256");
    let tb = image("testbed");
    let out = run(&["run", "--max-children", "5", s(&tb), "storm"], "");
    assert_line(&out, "spawned 5; refused: too many children: 5");
}

#[test]
fn children_end_with_their_parent() {
    // The child storms (256 spinning grandchildren), then exits: the grandchildren must be
    // killed with it, or ww would never exit.
    let started = Instant::now();
    let out = testbed(&["spawn", "--executor", "--dir", "/", "--", "storm"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert_line(&out, "child: exited 0");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn the_shell_runs_jobs_and_pipes() {
    let script = "\
run /usr/lib/child-echo.wasm hi
/usr/lib/child-echo.wasm one two | /usr/lib/child-echo.wasm
run /usr/lib/child-echo.wasm bg &
wait
ps
run /nope.wasm
";
    let out = run(&["run", s(&image("shell"))], script);
    assert_eq!(out.status, 0, "{out:#?}");
    assert_line(&out, "hi");
    assert_line(&out, "one two");
    assert!(out.stdout.contains("started"), "{out:#?}");
    assert!(out.stderr.contains("not found: /nope.wasm"), "{out:#?}");
}
