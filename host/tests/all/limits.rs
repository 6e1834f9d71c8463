//! Limits on pid0 from the command line, and the compile cache.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn timeout_stops_an_infinite_loop() {
    let (_dir, wasm) = wasm_file("spin.wasm", &p1_spin());
    let out = run(&["run", "--timeout", "300ms", s(&wasm)], "");
    assert_eq!(out.status, 124, "{out:#?}");
    assert!(
        out.stderr.contains("cell `spin` ran past its time limit"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("--timeout"), "{out:#?}");
}

#[test]
fn timeout_stops_a_cell_blocked_on_stdin() {
    let mut child = ww()
        .args(["run", "--timeout", "300ms", s(&image("child-echo"))])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdin stays open: the cell waits forever unless the host ends it.
    let _stdin = child.stdin.take();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(124));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "--timeout did not end the cell"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_memory_stops_a_memory_hog() {
    let (_dir, wasm) = wasm_file("hog.wasm", &p1_hog());
    let out = run(&["run", "--max-memory", "32MiB", s(&wasm)], "");
    assert_eq!(out.status, 135, "{out:#?}");
    assert!(
        out.stderr
            .contains("exceeded its memory limit (33554432 bytes)"),
        "{out:#?}"
    );
}

#[test]
fn fuel_stops_a_busy_cell() {
    let (_dir, wasm) = wasm_file("spin.wasm", &p1_spin());
    let out = run(&["run", "--fuel", "1000000", s(&wasm)], "");
    assert_eq!(out.status, 136, "{out:#?}");
    assert!(out.stderr.contains("ran out of fuel"), "{out:#?}");
}

#[test]
fn a_cell_within_its_limits_is_unaffected() {
    let out = run(
        &[
            "run",
            "--fuel",
            "100000000",
            "--max-memory",
            "64MiB",
            "--timeout",
            "30s",
            s(&image("child-echo")),
        ],
        "fine\n",
    );
    assert_eq!((out.status, out.stdout.as_str()), (0, "fine\n"), "{out:#?}");
}

#[test]
fn bad_limit_values_are_usage_errors() {
    for args in [
        ["--max-memory", "lots"],
        ["--timeout", "soon"],
        ["--fuel", "many"],
    ] {
        let out = run(&["run", args[0], args[1], s(&image("pid0"))], "");
        assert_eq!(out.status, 125, "{out:#?}");
        assert!(out.stderr.contains(args[0]), "{out:#?}");
        assert_no_panic(&out);
    }
}

#[test]
fn a_second_run_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let run_once = || {
        let mut cmd = ww();
        cmd.env("WW_CACHE_DIR", cache.path())
            .args(["-v", "run", s(&image("child-echo"))]);
        output(cmd, "x")
    };
    let first = run_once();
    assert_eq!(first.status, 0, "{first:#?}");
    assert!(first.stderr.contains("ww::wasm: compiled"), "{first:#?}");
    let second = run_once();
    assert_eq!(
        (second.status, second.stdout.as_str()),
        (0, "x"),
        "{second:#?}"
    );
    assert!(!second.stderr.contains("ww::wasm: compiled"), "{second:#?}");
    assert!(
        second.stderr.contains("loaded compiled program from cache"),
        "{second:#?}"
    );
}

#[test]
fn no_cache_compiles_every_time() {
    let cache = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let mut cmd = ww();
        cmd.env("WW_CACHE_DIR", cache.path()).args([
            "-v",
            "run",
            "--no-cache",
            s(&image("child-echo")),
        ]);
        let out = output(cmd, "");
        assert!(out.stderr.contains("ww::wasm: compiled"), "{out:#?}");
    }
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}
