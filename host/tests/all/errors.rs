//! Every bad input gets a diagnostic with a help line and status 125, never a panic.

use crate::support::*;

#[test]
fn missing_image() {
    run(&["run", "/no/such/image"], "").assert_ww_error("image not found: /no/such/image");
}

#[test]
fn image_without_entrypoint() {
    let img = tree(&[("etc/motd", b"")]);
    run(&["run", s(img.path())], "").assert_ww_error("no bin/main.wasm");
}

#[test]
fn not_wasm() {
    for (name, bytes) in [
        ("bad.wasm", &b"#!/bin/sh\necho hi\n"[..]),
        ("empty.wasm", b""),
    ] {
        let (_dir, path) = wasm_file(name, bytes);
        run(&["run", s(&path)], "").assert_ww_error("is not a WebAssembly binary");
    }
}

#[test]
fn truncated_wasm() {
    let mut bytes = component_exit(0);
    bytes.truncate(bytes.len() / 2);
    let (_dir, path) = wasm_file("cut.wasm", &bytes);
    run(&["run", s(&path)], "").assert_ww_error("cannot compile");
}

#[test]
fn component_imports_are_listed() {
    let (_dir, path) = wasm_file("rockets.wasm", &component_with_unknown_imports());
    let out = run(&["run", s(&path)], "");
    out.assert_ww_error("imports what ww does not provide");
    assert!(out.stderr.contains("acme:rockets/launch@1.0.0"), "{out:#?}");
    assert!(out.stderr.contains("acme:rockets/fuel@1.0.0"), "{out:#?}");
    assert!(
        !out.stderr.contains("ww:host/cell"),
        "ww:host/cell is provided: {out:#?}"
    );
}

#[test]
fn module_imports_are_listed() {
    let wasm = wat::parse_str(
        r#"(module (import "env" "launch" (func)) (import "env" "fuel" (func))
            (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let (_dir, path) = wasm_file("rockets.wasm", &wasm);
    let out = run(&["run", s(&path)], "");
    out.assert_ww_error("env::launch, env::fuel");
}

#[test]
fn not_a_command() {
    let (_dir, path) = wasm_file("lib.wasm", &wat::parse_str("(component)").unwrap());
    run(&["run", s(&path)], "").assert_ww_error("not a command");
    let (_dir, path) = wasm_file("lib.wasm", &wat::parse_str("(module)").unwrap());
    run(&["run", s(&path)], "").assert_ww_error("not a command");
}

#[test]
fn bad_flag_values() {
    let pid0 = image("pid0");
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let missing_flag = format!("{}::/x", s(&missing));
    let cases: &[(&[&str], &str)] = &[
        (&["--dir", ""], "host path is empty"),
        (&["--dir", "/tmp::relative"], "must be absolute"),
        (&["--dir", &missing_flag], "--dir"),
        (
            &["--dir", "/tmp::/x", "--dir", "/tmp::/x"],
            "both mounted at `/x`",
        ),
        (&["--dir", "/tmp:/x"], "a single `:` is not a separator"),
        (&["--dir", "/tmp::/x:ro:ro"], "the mode is given twice"),
        (&["--dir", "/tmp::/x:rx"], "unknown suffix `:rx`"),
        (
            &["--dir", "/tmp::/x::/y"],
            "a single `:` is not a separator",
        ),
        (&["-e", "NOVALUE"], "bad --env value `NOVALUE`"),
        (&["-e", "=x"], "bad --env value `=x`"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.push(s(&pid0));
        run(&args, "").assert_ww_error(needle);
    }
}

#[test]
fn a_single_colon_hints_at_two() {
    let out = run(&["run", "--dir", "/tmp:/x", s(&image("pid0"))], "");
    out.assert_ww_error("a single `:` is not a separator");
    assert!(out.stderr.contains("HOST::GUEST"), "{out:#?}");
}

#[test]
fn a_writable_grant_of_ww_state_is_refused() {
    // ww's compiled code lives in its state directory: a cell that could write it could
    // make ww map native code of its choosing. The tests' state is target/test-cache.
    let state = repo().join("target");
    let flag = format!("{}::/t", s(&state));
    let out = run(&["run", "--dir", &flag, s(&image("pid0"))], "");
    out.assert_ww_error("it holds ww's own state");
    // Read-only it cannot change anything, and is allowed.
    let flag = format!("{}::/t:ro", s(&state));
    let out = run(&["run", "--dir", &flag, s(&image("pid0"))], "");
    assert_eq!(out.status, 0, "{out:#?}");
}

#[test]
fn an_empty_ww_cache_dir_still_protects_the_default_state() {
    // WW_CACHE_DIR="" is unset: the state is then ~/.cache/ww, and a writable grant of HOME
    // holds it.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = ww();
    cmd.env("WW_CACHE_DIR", "")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home.path())
        .args(["run", "--dir", &format!("{}::/h", s(home.path()))])
        .arg(image("pid0"));
    output(cmd, "").assert_ww_error("it holds ww's own state");
}

#[test]
fn bad_ww_env() {
    let mut cmd = ww();
    cmd.env("WW_ENV", "A=1,oops")
        .args(["run", s(&image("pid0"))]);
    output(cmd, "").assert_ww_error("bad WW_ENV value `oops`");
}

#[test]
fn usage_errors_exit_125_without_panic() {
    for args in [
        &["run"][..],
        &["run", "--no-such-flag", "x"],
        &["frobnicate"],
    ] {
        let out = run(args, "");
        assert_eq!(out.status, 125, "{out:#?}");
        assert!(
            out.stderr.contains("Usage") || out.stderr.contains("usage"),
            "{out:#?}"
        );
        assert_no_panic(&out);
    }
}

#[test]
fn a_pid0_the_node_has_no_room_for_is_refused_once_with_help() {
    for (flag, value, why) in [
        ("--max-cells", "0", "maximum of 0 cells"),
        ("--node-memory", "1KiB", "memory budget is exhausted"),
    ] {
        let out = run(&["run", flag, value, s(&image("hello"))], "");
        out.assert_ww_error(why);
        assert_eq!(out.stderr.matches(why).count(), 1, "said twice: {out:#?}");
    }
}
