//! Layers stack per file: directories merge, files replace, nothing is deleted.

use crate::support::*;

#[test]
fn a_layer_replaces_a_file_and_adds_others() {
    let base = tree(&[("etc/motd", b"base\n"), ("etc/keep", b"kept\n")]);
    let top = tree(&[("etc/motd", b"top\n"), ("usr/lib/new", b"new\n")]);
    let shell = s(&image("shell")).to_owned();
    let out = run(
        &["run", "-l", &shell, "-l", s(top.path()), s(base.path())],
        "cat /etc/motd /etc/keep /usr/lib/new\n",
    );
    assert_eq!(out.stdout, "top\nkept\nnew\n", "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(base.path().join("etc/motd")).unwrap(),
        "base\n"
    );
}

#[test]
fn later_layers_win_for_the_entrypoint() {
    let out = run(
        &["run", "-l", s(&image("child-echo")), s(&image("pid0"))],
        "echoed\n",
    );
    assert_eq!(out.stdout, "echoed\n", "{out:#?}");
}

#[test]
fn a_wasm_file_layer_is_the_entrypoint() {
    let base = tree(&[("etc/motd", b"")]);
    let (_dir, wasm) = wasm_file("seven.wasm", &component_exit(7));
    let out = run(&["run", "-l", s(&wasm), s(base.path())], "");
    assert_eq!(out.status, 7, "{out:#?}");
}

#[test]
fn only_the_union_needs_an_entrypoint() {
    let a = tree(&[("etc/a", b"")]);
    let b = tree(&[("etc/b", b"")]);
    let out = run(&["run", "-l", s(b.path()), s(a.path())], "");
    out.assert_ww_error("no bin/main.wasm");
    assert!(
        out.stderr.contains(s(a.path())) && out.stderr.contains(s(b.path())),
        "{out:#?}"
    );
}

#[test]
fn the_merged_root_is_removed_after_the_run() {
    // A private TMPDIR, so other tests' merges cannot be mistaken for a leftover.
    let tmp = tempfile::tempdir().unwrap();
    let top = tree(&[("etc/x", b"")]);
    let mut cmd = ww();
    cmd.env("TMPDIR", tmp.path())
        .args(["-v", "run", "-l", s(top.path()), s(&image("pid0"))]);
    let out = output(cmd, "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stderr.contains(s(tmp.path())),
        "the merge should happen in TMPDIR: {out:#?}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
