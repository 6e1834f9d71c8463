//! Swaps: a cell that can write the parent of one of its grants (or of the merged image)
//! renames that directory away, puts a symlink to a host directory it was never granted in
//! its place, and then hands the grant to a child. A grant is what was opened when it was
//! made; the child must see that directory, never the symlink's target.
//!
//! Cells cannot make a symlink with an absolute target (cap-std refuses: the `symlink` with
//! an absolute path in each attack is expected to fail), so each attack's symlink climbs
//! with `..` to a victim directory beside the grants. Every test checks that the swap itself
//! succeeded (else it proves nothing), that no child read or wrote the victim, that the host
//! is unchanged outside the grants, and that `ww` and the cell carried on.

use std::path::{Path, PathBuf};

use super::{assert_unchanged, snapshot, step};
use crate::support::*;

/// The secret every victim holds: it must never appear in a cell's output.
const SECRET: &str = "TOPSECRET-swap";

/// Asserts that the step succeeded: the attack was really mounted.
#[track_caller]
fn assert_ok(out: &Out, what: &str) {
    let line = step(out, what);
    assert!(
        line.starts_with("ok "),
        "step {what:?} failed: {line}\n{out:#?}"
    );
}

/// Asserts that no output of any cell holds the victim's secret, and that ww ended normally.
#[track_caller]
fn assert_contained(out: &Out) {
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "a cell read the victim's secret: {out:#?}"
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_no_panic(out);
}

/// `root/victim` with the secret, outside every grant.
fn victim(root: &Path) -> PathBuf {
    let victim = root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("secret"), SECRET).unwrap();
    victim
}

/// `ww run FLAGS IMAGE seq STEP ;; STEP …`, each step's words split at whitespace.
fn seq(flags: &[&str], image: &Path, steps: &[&str]) -> Out {
    let mut cmd = ww();
    cmd.arg("run").args(flags).arg(image);
    add_steps(&mut cmd, steps);
    output(cmd, "")
}

/// `seq STEP ;; STEP …` as arguments of `cmd`.
fn add_steps(cmd: &mut std::process::Command, steps: &[&str]) {
    cmd.arg("seq");
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            cmd.arg(";;");
        }
        cmd.args(step.split_whitespace());
    }
}

/// The testbed image, as a fresh copy of its own under `root/name` (a test that hands a
/// cell its image's files must not risk the shared one).
fn testbed_copy(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(
        image("testbed").join("bin/main.wasm"),
        dir.join("bin/main.wasm"),
    )
    .unwrap();
    dir
}

/// (a) The cell holds `parent` (rw, at /p) and `parent/data` (at /data). It renames
/// /p/data away, puts a symlink to the victim in its place and spawns children with /data:
/// they must see the directory the grant was made of (`own`, and what they write lands
/// there), never the victim; a program read through /data is not read from the victim.
#[test]
fn a_grant_swapped_for_a_symlink_is_still_the_granted_directory() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("parent/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("own"), "mine").unwrap();
    let victim = victim(root);
    let before = snapshot(&victim);
    let abs = format!("{}", victim.display());

    let out = seq(
        &[
            "--dir",
            &format!("{}::/p", s(&root.join("parent"))),
            "--dir",
            &format!("{}::/data", s(&data)),
        ],
        &image("testbed"),
        &[
            "rename /p/data /p/data.moved",
            &format!("symlink {abs} /p/data"),
            "symlink ../victim /p/data",
            "lstat /p/data",
            "spawn --dir /data -- fs read /data/secret",
            "spawn --dir /data -- fs write /data/planted x",
            "spawn --dir /data -- fs ls /data",
            "spawn --dir /data:/d -- fs read /d/own",
            "spawn --path /data/secret -- x",
            "read /data/own",
        ],
    );
    // The swap happened: a symlink to the victim sits where the grant was.
    assert_ok(&out, "rename /p/data /p/data.moved");
    assert_ok(&out, "symlink ../victim /p/data");
    assert!(step(&out, &format!("symlink {abs} /p/data")).starts_with("error:"));
    assert!(
        step(&out, "lstat /p/data").starts_with("ok lstat /p/data = symlink"),
        "{out:#?}"
    );
    assert_contained(&out);
    assert_unchanged(&victim, &before, &out);
    // The children saw the granted directory itself.
    assert!(
        step(&out, "read /data/secret").starts_with("error: NotFound"),
        "{out:#?}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "ok ls /data = own planted"),
        "the child did not see the granted directory: {out:#?}"
    );
    assert_eq!(step(&out, "read /d/own"), "ok read /d/own = mine");
    assert_eq!(
        std::fs::read_to_string(root.join("parent/data.moved/planted")).unwrap(),
        "x"
    );
    // A program is read through the grant too: there is no /data/secret there.
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "refused: not found: /data/secret"),
        "{out:#?}"
    );
    // The cell itself carried on, its own /data untouched by the swap.
    assert_eq!(step(&out, "read /data/own"), "ok read /data/own = mine");
}

/// (b) The same with an ancestor: the cell holds `a` (rw, at /a) and `a/b/data` (at
/// /data); it renames /a/b away and makes /a/b a symlink to a directory beside `a` whose
/// `data` is the victim.
#[test]
fn a_grant_whose_ancestor_was_swapped_is_still_the_granted_directory() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("a/b/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("own"), "mine").unwrap();
    // The victim is victim/data: `a/b` → `../victim` makes `a/b/data` name it.
    let victim_root = root.join("victim");
    std::fs::create_dir_all(victim_root.join("data")).unwrap();
    std::fs::write(victim_root.join("data/secret"), SECRET).unwrap();
    let before = snapshot(&victim_root);

    let out = seq(
        &[
            "--dir",
            &format!("{}::/a", s(&root.join("a"))),
            "--dir",
            &format!("{}::/data", s(&data)),
        ],
        &image("testbed"),
        &[
            "rename /a/b /a/b.moved",
            "symlink ../victim /a/b",
            "spawn --dir /data -- fs read /data/secret",
            "spawn --dir /data -- fs create /data/planted",
            "spawn --dir /data -- fs ls /data",
            "read /data/own",
        ],
    );
    assert_ok(&out, "rename /a/b /a/b.moved");
    assert_ok(&out, "symlink ../victim /a/b");
    assert_contained(&out);
    assert_unchanged(&victim_root, &before, &out);
    assert!(
        step(&out, "read /data/secret").starts_with("error: NotFound"),
        "{out:#?}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "ok ls /data = own planted"),
        "the child did not see the granted directory: {out:#?}"
    );
    assert!(root.join("a/b.moved/data/planted").exists());
    assert_eq!(step(&out, "read /data/own"), "ok read /data/own = mine");
}

/// (c) Nested grants, one generation down: pid0 passes its child /p and the grant nested
/// in it, /data; the child swaps /p/data for a symlink and passes /data on (renamed) to a
/// grandchild, which must still get the directory pid0 was granted.
#[test]
fn a_nested_grant_swapped_by_a_child_is_still_the_granted_directory() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("parent/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("own"), "mine").unwrap();
    let victim = victim(root);
    let before = snapshot(&victim);

    let mut cmd = ww();
    cmd.args(["run", "--dir"])
        .arg(format!("{}::/p", s(&root.join("parent"))))
        .arg("--dir")
        .arg(format!("{}::/data", s(&data)))
        .arg(image("testbed"))
        // pid0 runs `spawn`, so the `;;` are the child's `seq` steps. The child gets `/`
        // too: its children's program is read from there.
        .args("spawn --executor --dir / --dir /p --dir /data --".split(' '));
    add_steps(
        &mut cmd,
        &[
            "rename /p/data /p/data.moved",
            "symlink ../victim /p/data",
            "spawn --dir /data:/d -- fs read /d/secret",
            "spawn --dir /data:/d -- fs write /d/planted x",
            "spawn --dir /data:/d -- fs ls /d",
            "read /data/own",
        ],
    );
    let out = output(cmd, "");
    assert_ok(&out, "rename /p/data /p/data.moved");
    assert_ok(&out, "symlink ../victim /p/data");
    assert_contained(&out);
    assert_unchanged(&victim, &before, &out);
    assert!(
        step(&out, "read /d/secret").starts_with("error: NotFound"),
        "{out:#?}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "ok ls /d = own planted"),
        "the grandchild did not see the granted directory: {out:#?}"
    );
    assert_eq!(step(&out, "read /data/own"), "ok read /data/own = mine");
    // The child and its three grandchildren all ended normally.
    let exits = out.stdout.lines().filter(|l| *l == "child: exited 0");
    assert_eq!(exits.count(), 4, "{out:#?}");
}

/// Two layers under `root`: `base`, a copy of the testbed, and `layer`, with
/// `etc/layer.txt`; and `tmp`, for `TMPDIR`.
fn two_layers(root: &Path) {
    testbed_copy(root, "base");
    std::fs::create_dir_all(root.join("layer/etc")).unwrap();
    std::fs::write(root.join("layer/etc/layer.txt"), "layer-two").unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
}

/// Runs the image [`two_layers`] made with `TMPDIR` set to `root/tmp` and that directory
/// granted to the cell at /tmp: where tempfile, by default, makes the merged image.
fn merged_image_run(root: &Path, steps: &[&str]) -> Out {
    let tmp = root.join("tmp");
    let mut cmd = ww();
    cmd.env("TMPDIR", &tmp)
        .args(["run", "--layer", s(&root.join("layer")), "--dir"])
        .arg(format!("{}::/tmp", s(&tmp)))
        .arg(root.join("base"));
    add_steps(&mut cmd, steps);
    output(cmd, "")
}

/// (d) The merged image: the cell finds the merged root among its /tmp grant's entries,
/// renames it away, puts a symlink to the victim in its place and spawns its own program
/// (sent as bytes) with `/`: the child must see the image, never the victim. Once merged
/// images live in a private directory of ww's, there is nothing to find in /tmp: the child
/// must still see the real image.
#[test]
fn the_merged_image_swapped_for_a_symlink_is_still_the_image() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let victim = victim(root);
    let before = snapshot(&victim);
    two_layers(root);
    let out = merged_image_run(
        root,
        &[
            "find /tmp bin/main.wasm",
            "rename $FOUND /tmp/moved",
            "symlink ../victim $FOUND",
            "spawn --bytes --dir / -- fs ls /",
            "spawn --bytes --dir / -- fs read /secret",
            "spawn --bytes --dir / -- fs read /etc/layer.txt",
            "spawn --bytes --dir / -- fs write /planted x",
            "read /etc/layer.txt",
        ],
    );
    assert_contained(&out);
    assert_unchanged(&victim, &before, &out);
    let found = step(&out, "find /tmp bin/main.wasm");
    if found.starts_with("ok ") {
        // The merged image is where the cell can reach it: the swap must have happened, and
        // must not matter.
        assert!(
            out.stdout.lines().any(|l| l.starts_with("ok rename /tmp/")),
            "{out:#?}"
        );
    }
    assert!(
        out.stdout.lines().any(|l| l == "ok ls / = bin/ etc/"),
        "the child did not see the image: {out:#?}"
    );
    assert!(
        step(&out, "read /secret").starts_with("error: NotFound"),
        "{out:#?}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "ok read /etc/layer.txt = layer-two"),
        "{out:#?}"
    );
    assert!(
        step(&out, "write /planted x").starts_with("error:"),
        "the image root is read-only: {out:#?}"
    );
    // One read of /etc/layer.txt was a child's; the other, the cell's own.
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| *l == "ok read /etc/layer.txt = layer-two")
            .count(),
        2,
        "{out:#?}"
    );
}

/// (d') The merged image's files come from the layers (hard-linked when they can be): a
/// cell that can reach the merged root through a writable grant must not rewrite a layer's
/// file through it, nor change its times.
#[test]
fn a_layer_cannot_be_rewritten_through_the_merged_image() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    two_layers(root);
    let layers = (snapshot(&root.join("base")), snapshot(&root.join("layer")));
    let out = merged_image_run(
        root,
        &[
            "find /tmp etc/layer.txt",
            "write $FOUND/etc/layer.txt pwned",
            "append $FOUND/etc/layer.txt pwned",
            "set-times $FOUND/etc/layer.txt",
            "set-times-fd $FOUND/etc/layer.txt",
            "open-trunc $FOUND/bin/main.wasm",
            "read /etc/layer.txt",
        ],
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_no_panic(&out);
    // Both layers are as the test made them: bytes and times.
    assert_unchanged(&root.join("base"), &layers.0, &out);
    assert_unchanged(&root.join("layer"), &layers.1, &out);
    assert_eq!(
        step(&out, "read /etc/layer.txt"),
        "ok read /etc/layer.txt = layer-two"
    );
}

/// (d'') An image used in place: a cell that holds its image's parent directory renames
/// the image away and puts a symlink to the victim in its place. A child given `/` sees the
/// image, and a program spawned by its path is read from the image.
#[test]
fn an_image_used_in_place_swapped_for_a_symlink_is_still_the_image() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let victim = victim(root);
    let before = snapshot(&victim);
    let tb = testbed_copy(root, "images/tb");
    let out = seq(
        &["--dir", &format!("{}::/imgs", s(&root.join("images")))],
        &tb,
        &[
            "rename /imgs/tb /imgs/tb.moved",
            "symlink ../victim /imgs/tb",
            "spawn --bytes --dir / -- fs ls /",
            "spawn --bytes --dir / -- fs read /secret",
            "spawn --dir / -- fs ls /bin",
            "ls /",
        ],
    );
    assert_ok(&out, "rename /imgs/tb /imgs/tb.moved");
    assert_ok(&out, "symlink ../victim /imgs/tb");
    assert_contained(&out);
    assert_unchanged(&victim, &before, &out);
    // The children (sent as bytes, or spawned by their path in the image) and the cell all
    // see the image.
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| *l == "ok ls / = bin/")
            .count(),
        2,
        "{out:#?}"
    );
    assert!(
        step(&out, "read /secret").starts_with("error: NotFound"),
        "{out:#?}"
    );
    assert_eq!(step(&out, "ls /bin"), "ok ls /bin = main.wasm");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| *l == "child: exited 0")
            .count(),
        3,
        "{out:#?}"
    );
}

/// Found while writing this suite: with WW_CACHE_DIR, XDG_CACHE_HOME and HOME all unset,
/// ww's state (and so its merged images) fell back to `$TMPDIR/ww-cache-<uid>`, where a
/// cell of another `ww` granted `$TMPDIR` (same user, so mode 0700 keeps it out of nothing)
/// could write through the merged image and, since merged files are hard links of the
/// layers' files, rewrite a layer on the host. There is no such fallback any more: a run
/// that must merge layers and has no state directory refuses to start, naming what to set,
/// and leaves nothing in the shared temporary directory.
#[test]
fn without_a_state_directory_layers_are_not_merged_in_the_shared_temp_dir() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    two_layers(root);
    let layers = (snapshot(&root.join("base")), snapshot(&root.join("layer")));
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = ww();
    cmd.env_remove("WW_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME")
        .env("TMPDIR", &tmp)
        .args(["run", "--no-cache", "--layer", s(&root.join("layer"))])
        .arg(root.join("base"))
        .arg("ping");
    let out = output(cmd, "");
    out.assert_ww_error("no state directory");
    assert!(out.stderr.contains("WW_CACHE_DIR"), "{out:#?}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "the shared temporary directory was used: {left:?}"
    );
    assert_unchanged(&root.join("base"), &layers.0, &out);
    assert_unchanged(&root.join("layer"), &layers.1, &out);
}

/// (e) A swap racing the spawns: a background child flips /p/data between the directory and
/// a symlink to the victim for a second while the cell spawns child after child with /data.
/// No child ever reads the victim or is refused, and every child that runs sees the
/// granted directory.
#[test]
fn a_swap_racing_spawns_never_hands_a_child_the_victim() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let data = root.join("parent/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("own"), "mine").unwrap();
    let victim = victim(root);
    let before = snapshot(&victim);

    let out = seq(
        &[
            "--dir",
            &format!("{}::/p", s(&root.join("parent"))),
            "--dir",
            &format!("{}::/data", s(&data)),
        ],
        &image("testbed"),
        &[
            "spawn --bg --dir /p -- fs flip /p/data ../victim 1000",
            "spawn --while-bg --dir /data -- fs read /data/secret",
        ],
    );
    // Thousands of lines: the messages below show a summary and the lines that matter.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let count = |pred: &dyn Fn(&str) -> bool| lines.iter().filter(|l| pred(l)).count();
    let leaked = count(&|l| l.contains(SECRET));
    let refused = count(&|l| l.starts_with("refused:"));
    let read_own =
        count(&|l| l.starts_with("error: NotFound") && l.ends_with("(read /data/secret)"));
    let ran =
        count(&|l| l.ends_with("(read /data/secret)") || l.starts_with("ok read /data/secret"));
    let flips = lines
        .iter()
        .find(|l| l.starts_with("ok flip /p/data ../victim 1000 = "))
        .copied();
    let repeated = lines.iter().find(|l| l.starts_with("repeated ")).copied();
    let summary = format!(
        "status {}, {} lines: {ran} children ran, {read_own} saw the granted directory, \
         {leaked} read the victim, {refused} spawns refused; flipper: {flips:?}; {repeated:?}; \
         first refusal: {:?}; stderr: {}",
        out.status,
        lines.len(),
        lines.iter().find(|l| l.starts_with("refused:")),
        out.stderr
    );
    assert_eq!(leaked, 0, "a child read the victim: {summary}");
    assert!(!out.stderr.contains(SECRET), "{summary}");
    assert_eq!(out.status, 0, "{summary}");
    assert!(!out.stderr.contains("panicked"), "ww panicked: {summary}");
    let after = snapshot(&victim);
    assert!(
        after == before,
        "the victim changed: {before:#?} {after:#?}; {summary}"
    );
    // The flipper really flipped, and ended on its own, the directory back in place.
    assert!(
        flips.is_some_and(|l| !l.ends_with("= 0 swaps")),
        "the flipper failed: {summary}"
    );
    assert!(
        std::fs::metadata(root.join("parent/data"))
            .unwrap()
            .is_dir()
    );
    // Every child that ran looked in the granted directory; none was refused.
    assert!(ran > 0, "no child ran: {summary}");
    assert_eq!(read_own, ran, "{summary}");
    assert_eq!(
        refused, 0,
        "a grant is a handle: a swap cannot make a spawn fail either: {summary}"
    );
}
