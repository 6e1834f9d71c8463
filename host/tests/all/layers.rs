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
fn the_merged_root_is_private_and_removed_after_the_run() {
    // A state directory of this test's own, so other tests' merges cannot be mistaken for a
    // leftover; and a TMPDIR of its own, which must stay untouched.
    let (state, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let top = tree(&[("etc/x", b"")]);
    let mut cmd = ww();
    cmd.env("WW_CACHE_DIR", state.path())
        .env("TMPDIR", tmp.path())
        .args(["-v", "run", "-l", s(top.path()), s(&image("pid0"))]);
    let out = output(cmd, "");
    assert_eq!(out.status, 0, "{out:#?}");
    let images = state.path().join("images");
    assert!(
        out.stderr.contains(s(&images)),
        "the merge should happen in ww's private images directory: {out:#?}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&images).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{}", images.display());
    let left: Vec<_> = std::fs::read_dir(&images).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let in_tmp: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(
        in_tmp.is_empty(),
        "the shared temporary directory was used: {in_tmp:?}"
    );
}
