//! Services under svc/ start at boot beside pid0 and stop when it exits.

use std::time::{Duration, Instant};

use crate::support::*;

fn child_echo_wasm() -> Vec<u8> {
    std::fs::read(image("child-echo").join("bin/main.wasm")).unwrap()
}

#[test]
fn services_start_with_prefixed_output_and_their_config() {
    let echo = child_echo_wasm();
    let img = tree(&[
        ("bin/main.wasm", &p1_sleep(1500)),
        ("svc/greeter/bin/main.wasm", &echo),
        (
            "svc/greeter/etc/service.toml",
            b"args = [\"hello\", \"service\"]\n",
        ),
        ("svc/other/bin/main.wasm", &echo),
        (
            "svc/other/etc/service.toml",
            b"args = [\"second\"]\n[limits]\nmax-memory = \"64MiB\"\n",
        ),
    ]);
    let out = run(&["run", s(img.path())], "");
    assert_eq!(out.status, 0, "{out:#?}");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["[greeter] hello service", "[other] second"],
        "{out:#?}"
    );
}

#[test]
fn services_stop_when_pid0_exits() {
    let img = tree(&[
        ("bin/main.wasm", &component_exit(3)),
        ("svc/spinner/bin/main.wasm", &p1_spin()),
    ]);
    let started = Instant::now();
    let out = run(&["run", s(img.path())], "");
    assert_eq!(out.status, 3, "{out:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a spinning service kept ww alive"
    );
}

#[test]
fn a_broken_service_is_reported_and_skipped() {
    let img = tree(&[
        ("bin/main.wasm", &component_exit(0)),
        ("svc/empty/etc/README", b"no program here"),
        ("svc/badconf/bin/main.wasm", &p1_spin()),
        ("svc/badconf/etc/service.toml", b"argz = 1\n"),
        ("svc/greedy/bin/main.wasm", &p1_spin()),
        (
            "svc/greedy/etc/service.toml",
            b"[limits]\nmax-memory = \"8GiB\"\n",
        ),
    ]);
    let out = run(&["run", "--max-memory", "1GiB", s(img.path())], "");
    assert_eq!(out.status, 0, "{out:#?}");
    for name in ["empty", "badconf", "greedy"] {
        assert!(
            out.stderr
                .contains(&format!("service `{name}` not started")),
            "{name}: {out:#?}"
        );
    }
    assert!(out.stderr.contains("unknown field `argz`"), "{out:#?}");
    assert!(out.stderr.contains("max-memory"), "{out:#?}");
}
