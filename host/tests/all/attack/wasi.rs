//! WASI against the host: every mutating call through a read-only grant and through the
//! image root; symlinks (`..`, absolute, dangling, `/proc/self/…`) made by the host and by
//! the cell; hard links out of read-only places; and a child asking for more than its
//! parent holds. Each test checks that the attack fails, that the host is byte-for-byte and
//! time-for-time unchanged, and that the cell (and `ww`) carried on.
//!
//! The steps are the testbed's `seq` operations: each prints `ok OP ARGS` or
//! `error: KIND (OP ARGS)`, so every step is checked on its own.

use std::path::{Path, PathBuf};

use super::{assert_unchanged, snapshot, step};
use crate::support::*;

/// The secret outside every grant: it must never appear in a cell's output.
const SECRET: &str = "TOPSECRET-wasi";

/// Asserts that every step in `steps` failed.
#[track_caller]
fn assert_all_refused(out: &Out, steps: &[String]) {
    let allowed: Vec<&str> = steps
        .iter()
        .map(|what| step(out, what))
        .filter(|line| !line.starts_with("error: "))
        .collect();
    assert!(allowed.is_empty(), "allowed: {allowed:#?}\n{out:#?}");
}

/// Asserts that the secret never reached any output and that ww ended normally.
#[track_caller]
fn assert_contained(out: &Out) {
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "a cell read the secret: {out:#?}"
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_no_panic(out);
}

/// `ww run FLAGS IMAGE seq STEP ;; STEP …`, each step's words split at whitespace (a
/// step's text is also how its line names it: see [`step`]).
fn seq(flags: &[String], image: &Path, steps: &[String]) -> Out {
    output(seq_command(flags, image, steps), "")
}

fn seq_command(flags: &[String], image: &Path, steps: &[String]) -> std::process::Command {
    let mut cmd = ww();
    cmd.arg("run").args(flags).arg(image).arg("seq");
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            cmd.arg(";;");
        }
        cmd.args(step.split_whitespace());
    }
    cmd
}

/// Owned steps.
fn steps(steps: &[&str]) -> Vec<String> {
    steps.iter().map(|s| (*s).to_owned()).collect()
}

/// `dir/rel` for a guest directory (`/` or `/ro`).
fn at(dir: &str, rel: &str) -> String {
    if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

/// The fixture every mutation test works on, under `dir`: `f`, `sub/g`, `empty/`.
fn fixture(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("f"), "original bytes").unwrap();
    std::fs::write(dir.join("sub/g"), "g").unwrap();
}

/// `--dir HOST::GUEST[:ro]`.
fn grant(host: &Path, guest: &str, read_only: bool) -> [String; 2] {
    let ro = if read_only { ":ro" } else { "" };
    ["--dir".into(), format!("{}::{guest}{ro}", s(host))]
}

/// The testbed image, copied under `dir` beside a [`fixture`]: a root the test owns.
fn image_copy(dir: &Path) {
    fixture(dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(
        image("testbed").join("bin/main.wasm"),
        dir.join("bin/main.wasm"),
    )
    .unwrap();
}

/// Every mutating call, on the [`fixture`] at guest directory `d`, with `x` a writable
/// grant holding a file `w`, ordered so that in a writable `d` each one succeeds.
fn mutations(d: &str, x: &str) -> Vec<String> {
    let p = |rel: &str| at(d, rel);
    let q = |rel: &str| at(x, rel);
    vec![
        format!("create {}", p("new")),
        format!("open-create {}", p("f")),
        format!("open-trunc {}", p("f")),
        format!("open-write {}", p("f")),
        format!("write {} pwned", p("f")),
        format!("append {} pwned", p("f")),
        format!("truncate {} 0", p("f")),
        format!("set-times {}", p("f")),
        format!("set-times {}", p("sub")),
        format!("set-times {d}"),
        format!("set-times-fd {}", p("f")),
        format!("set-times-fd {}", p("sub")),
        format!("link {} {}", p("f"), p("f3")),
        format!("link {} {}", p("f"), q("f-link")),
        format!("link {} {}", q("w"), p("w-link")),
        format!("symlink f {}", p("s")),
        format!("rename {} {}", p("f3"), p("f4")),
        format!("rename {} {}", p("f4"), q("f4")),
        format!("rename {} {}", q("w"), p("w")),
        format!("mkdir {}", p("newdir")),
        format!("mkdir {}", p("sub/newdir")),
        format!("rmdir {}", p("empty")),
        format!("unlink {}", p("sub/g")),
        format!("rename {} {}", p("sub"), p("sub2")),
        format!("unlink {}", p("f")),
        format!("write {} pwned", p("new2")),
    ]
}

/// Mutations on a read-only `d` left out of [`mutations`]: set-size through a descriptor
/// opened for reading and removing a non-empty directory (a writable grant refuses those
/// too, for reasons of its own), and renaming `f` within `d` (which would take `f` from the
/// steps after it).
fn read_only_extras(d: &str) -> Vec<String> {
    vec![
        format!("set-size-ro {} 0", at(d, "f")),
        format!("rename {} {}", at(d, "f"), at(d, "f2")),
        format!("rmdir {}", at(d, "sub")),
    ]
}

/// A read-only grant refuses every mutating call, and its host directory (and the
/// writable grant beside it, the other end of each rename and link) stays as it was.
#[test]
fn a_read_only_grant_refuses_every_mutation() {
    let root = tempfile::tempdir().unwrap();
    let (ro, rw) = (root.path().join("ro"), root.path().join("rw"));
    fixture(&ro);
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(rw.join("w"), "writable").unwrap();
    let (ro_before, rw_before) = (snapshot(&ro), snapshot(&rw));

    let mut attacks = mutations("/ro", "/rw");
    attacks.extend(read_only_extras("/ro"));
    let mut all = attacks.clone();
    all.extend(steps(&["read /ro/f", "read /rw/w"]));
    let flags = [grant(&ro, "/ro", true), grant(&rw, "/rw", false)].concat();
    let out = seq(&flags, &image("testbed"), &all);

    assert_all_refused(&out, &attacks);
    assert_contained(&out);
    assert_unchanged(&ro, &ro_before, &out);
    assert_unchanged(&rw, &rw_before, &out);
    // The cell carried on: it still reads both.
    assert_eq!(step(&out, "read /ro/f"), "ok read /ro/f = original bytes");
    assert_eq!(step(&out, "read /rw/w"), "ok read /rw/w = writable");
}

/// The image root refuses every mutating call too, and the image (a copy the test owns)
/// stays as it was, its program included: used in place, and merged from two layers (whose
/// files the merged root shares with the layers, hard-linked where it can).
#[test]
fn the_image_root_refuses_every_mutation() {
    for merged in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let (img, extra, rw) = (
            root.path().join("img"),
            root.path().join("extra"),
            root.path().join("rw"),
        );
        image_copy(&img);
        std::fs::create_dir_all(extra.join("etc")).unwrap();
        std::fs::write(extra.join("etc/extra"), "extra layer").unwrap();
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::write(rw.join("w"), "writable").unwrap();
        let before = [snapshot(&img), snapshot(&extra), snapshot(&rw)];

        let mut attacks = mutations("/", "/rw");
        attacks.extend(read_only_extras("/"));
        attacks.extend(steps(&[
            "open-trunc /bin/main.wasm",
            "write /bin/main.wasm pwned",
            "unlink /bin/main.wasm",
            "rename /bin /rw/bin",
            "rename /bin/main.wasm /rw/main.wasm",
            "link /bin/main.wasm /rw/main.wasm",
        ]));
        if merged {
            attacks.extend(steps(&[
                "write /etc/extra pwned",
                "set-times /etc/extra",
                "set-times-fd /etc/extra",
                "unlink /etc/extra",
            ]));
        }
        let mut all = attacks.clone();
        all.extend(steps(&["read /f", "spawn -- exit 0"]));
        let mut flags = grant(&rw, "/rw", false).to_vec();
        if merged {
            flags.extend(["--layer".to_owned(), s(&extra).to_owned()]);
        }
        let out = seq(&flags, &img, &all);

        assert_all_refused(&out, &attacks);
        assert_contained(&out);
        for (dir, before) in [&img, &extra, &rw].into_iter().zip(&before) {
            assert_unchanged(dir, before, &out);
        }
        assert_eq!(step(&out, "read /f"), "ok read /f = original bytes");
        // The image's program still runs.
        assert!(
            out.stdout.lines().any(|l| l == "child: exited 0"),
            "merged: {merged}: {out:#?}"
        );
    }
}

/// The control for the two tests above: in a writable grant every one of those calls
/// succeeds, so each refusal there is the permission's doing, not a broken operation.
#[test]
fn every_mutation_succeeds_in_a_writable_grant() {
    let root = tempfile::tempdir().unwrap();
    let (c, rw) = (root.path().join("c"), root.path().join("rw"));
    fixture(&c);
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(rw.join("w"), "writable").unwrap();
    let all = mutations("/c", "/rw");
    let flags = [grant(&c, "/c", false), grant(&rw, "/rw", false)].concat();
    let out = seq(&flags, &image("testbed"), &all);
    let failed: Vec<&str> = all
        .iter()
        .map(|what| step(&out, what))
        .filter(|line| !line.starts_with("ok "))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}\n{out:#?}");
    assert_eq!(out.status, 0, "{out:#?}");
    // They reached the host.
    assert_eq!(std::fs::read_to_string(c.join("new2")).unwrap(), "pwned");
    assert!(c.join("sub2/newdir").is_dir() && !c.join("f").exists());
    assert!(rw.join("f4").is_file() && c.join("w").is_file());
}

/// A hard link from a read-only grant, or from the image root, into a writable grant is
/// refused, and writing to the name it would have had creates a new file: the read-only
/// file keeps its bytes and times. (A hard link within a writable grant, the control,
/// does share the file.)
#[test]
fn a_hard_link_out_of_a_read_only_place_cannot_write_it() {
    let root = tempfile::tempdir().unwrap();
    let (img, ro, rw) = (
        root.path().join("img"),
        root.path().join("ro"),
        root.path().join("rw"),
    );
    image_copy(&img);
    fixture(&ro);
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(rw.join("w"), "writable").unwrap();
    let (img_before, ro_before) = (snapshot(&img), snapshot(&ro));

    let flags = [grant(&ro, "/ro", true), grant(&rw, "/rw", false)].concat();
    let out = seq(
        &flags,
        &img,
        &steps(&[
            "link /ro/f /rw/ro-link",
            "append /rw/ro-link pwned",
            "write /rw/ro-link pwned",
            "link /f /rw/img-link",
            "append /rw/img-link pwned",
            "write /rw/img-link pwned",
            "link /ro/sub/g /rw/g-link",
            "set-times /rw/g-link",
            "link /rw/w /rw/w-link",
            "write /rw/w-link changed",
        ]),
    );
    for link in [
        "link /ro/f /rw/ro-link",
        "link /f /rw/img-link",
        "link /ro/sub/g /rw/g-link",
    ] {
        assert!(step(&out, link).starts_with("error: "), "{link}: {out:#?}");
    }
    // The link does not exist, so appending to it finds nothing, and writing creates a file
    // of the writable grant's own.
    assert!(step(&out, "append /rw/ro-link pwned").starts_with("error: NotFound"));
    assert_eq!(
        std::fs::read_to_string(rw.join("ro-link")).unwrap(),
        "pwned"
    );
    assert_contained(&out);
    assert_unchanged(&img, &img_before, &out);
    assert_unchanged(&ro, &ro_before, &out);
    // The control: a hard link within the writable grant is the same file.
    assert_eq!(
        step(&out, "link /rw/w /rw/w-link"),
        "ok link /rw/w /rw/w-link"
    );
    assert_eq!(std::fs::read_to_string(rw.join("w")).unwrap(), "changed");
}

/// Host paths under `root`: `outside/secret` and the grant `g` with `sub/file`.
fn outside_and_grant(root: &Path) -> (PathBuf, PathBuf) {
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    let g = root.join("g");
    std::fs::create_dir_all(g.join("sub")).unwrap();
    std::fs::write(g.join("sub/file"), "inside").unwrap();
    (outside, g)
}

/// Symlinks the host put in a grant: climbing with `..`, absolute, dangling (to be created
/// through), looping, and into `/proc/self` (root, cwd, fd/N: ww's own view of the host).
/// None leads out, to read, write, create, rename into or set times; the ones that stay
/// inside work.
#[test]
fn symlinks_planted_in_a_grant_lead_nowhere_outside() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (outside, g) = outside_and_grant(root);
    let abs = |rel: &str| format!("{}/{rel}", s(root));
    let links: Vec<(String, String)> = [
        ("up", "..".to_owned()),
        ("up2", "../outside".to_owned()),
        ("deep", "sub/../../outside".to_owned()),
        ("abs_dir", abs("outside")),
        ("abs_file", abs("outside/secret")),
        ("etc", "/etc".to_owned()),
        ("dangling_rel", "../outside/created-rel".to_owned()),
        ("dangling_abs", abs("outside/created-abs")),
        ("dangling_dir", "../outside/newdir".to_owned()),
        ("proc_root", "/proc/self/root".to_owned()),
        ("proc_cwd", "/proc/self/cwd".to_owned()),
        ("proc_fd", "/proc/self/fd".to_owned()),
        ("rel_proc", format!("{}proc/self/root", "../".repeat(24))),
        ("loop", "loop".to_owned()),
        ("inside", "sub/file".to_owned()),
        ("inside_dir", "sub".to_owned()),
    ]
    .into_iter()
    .map(|(name, target)| (name.to_owned(), target))
    .chain((0..16).map(|n| (format!("fd{n}"), format!("/proc/self/fd/{n}"))))
    .collect();
    for (name, target) in &links {
        symlink(target, g.join(name)).unwrap();
    }
    let (outside_before, g_before) = (snapshot(&outside), snapshot(&g));

    let mut attacks = steps(&[
        "read /g/up/outside/secret",
        "ls /g/up",
        "read /g/up2/secret",
        "ls /g/up2",
        "read /g/deep/secret",
        "read /g/abs_dir/secret",
        "ls /g/abs_dir",
        "read /g/abs_file",
        "stat /g/abs_file",
        "read /g/etc/hostname",
        "ls /g/etc",
        "write /g/dangling_rel x",
        "create /g/dangling_rel",
        "open-create /g/dangling_rel",
        "write /g/dangling_abs x",
        "open-create /g/dangling_abs",
        "mkdir /g/dangling_dir/x",
        "write /g/up2/created x",
        "write /g/abs_dir/created x",
        "set-times /g/abs_file",
        "set-times /g/up2/secret",
        "set-times /g/up2",
        "truncate /g/abs_file 0",
        "append /g/abs_file x",
        "rename /g/sub/file /g/up2/moved",
        "rename /g/sub/file /g/abs_dir/moved",
        "link /g/sub/file /g/up2/linked",
        &format!("read /g/proc_root{}/outside/secret", s(root)),
        "ls /g/proc_root",
        "ls /g/proc_cwd",
        "ls /g/proc_fd",
        "read /g/rel_proc/etc/hostname",
        "ls /g/rel_proc",
        "read /g/loop",
        "write /g/loop x",
    ]);
    for n in 0..16 {
        attacks.push(format!("read /g/fd{n}"));
        attacks.push(format!("ls /g/fd{n}"));
        attacks.push(format!("write /g/fd{n} x"));
    }
    let mut all = attacks.clone();
    all.extend(steps(&["read /g/inside", "ls /g/inside_dir"]));
    let out = seq(&grant(&g, "/g", false), &image("testbed"), &all);

    assert_all_refused(&out, &attacks);
    assert_contained(&out);
    assert_unchanged(&outside, &outside_before, &out);
    assert_unchanged(&g, &g_before, &out);
    assert_eq!(step(&out, "read /g/inside"), "ok read /g/inside = inside");
    assert_eq!(step(&out, "ls /g/inside_dir"), "ok ls /g/inside_dir = file");
}

/// Symlinks the cell makes: absolute targets (a host path, `/proc/self/root`) are refused
/// outright; relative ones climbing out (to the secret, to `/proc`, to a read-only grant's
/// host directory, dangling) are made, but lead nowhere, for the cell or for a child given
/// the grant.
#[test]
fn symlinks_a_cell_makes_lead_nowhere_outside() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (outside, g) = outside_and_grant(root);
    let ro = root.join("ro");
    fixture(&ro);
    let (outside_before, ro_before) = (snapshot(&outside), snapshot(&ro));

    let made = steps(&[
        "symlink ../outside /g/c_up",
        "symlink ../outside/created /g/c_dangling",
        "symlink ../../../../../../../../../../../../proc/self/root /g/c_relproc",
        "symlink ../ro/f /g/c_ro",
        "symlink ../ro /g/c_ro_dir",
    ]);
    let refused_outright = steps(&[
        &format!("symlink {}/outside /g/c_abs", s(root)),
        "symlink /proc/self/root /g/c_proc",
        "symlink / /g/c_root",
    ]);
    let attacks = steps(&[
        "read /g/c_up/secret",
        "ls /g/c_up",
        "write /g/c_up/created x",
        "write /g/c_dangling x",
        "create /g/c_dangling",
        "read /g/c_relproc/etc/hostname",
        "ls /g/c_relproc",
        "set-times /g/c_up/secret",
        "rename /g/sub/file /g/c_up/moved",
        "write /g/c_ro pwned",
        "append /g/c_ro pwned",
        "set-times /g/c_ro",
        "write /g/c_ro_dir/f pwned",
        "mkdir /g/c_ro_dir/new",
    ]);
    let mut all = [made.clone(), refused_outright.clone(), attacks.clone()].concat();
    all.extend(steps(&[
        "spawn --dir /g -- fs read /g/c_up/secret",
        "spawn --dir /g -- fs write /g/c_dangling x",
        "read /g/sub/file",
    ]));
    let flags = [grant(&g, "/g", false), grant(&ro, "/ro", true)].concat();
    let out = seq(&flags, &image("testbed"), &all);

    // The relative symlinks were made (the attack was mounted): they are on the host.
    for what in &made {
        assert!(step(&out, what).starts_with("ok "), "{what}: {out:#?}");
    }
    assert!(
        std::fs::symlink_metadata(g.join("c_up"))
            .unwrap()
            .is_symlink()
    );
    assert_all_refused(&out, &refused_outright);
    assert_all_refused(&out, &attacks);
    assert!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("child: exited 0"))
            .count()
            == 2,
        "{out:#?}"
    );
    assert!(
        step(&out, "read /g/c_up/secret").starts_with("error: "),
        "{out:#?}"
    );
    assert_contained(&out);
    assert_unchanged(&outside, &outside_before, &out);
    assert_unchanged(&ro, &ro_before, &out);
    assert_eq!(
        step(&out, "read /g/sub/file"),
        "ok read /g/sub/file = inside"
    );
}

/// The lines `seq` printed after the marker `echo NAME`, up to the next marker.
fn section<'a>(out: &'a Out, name: &str) -> Vec<&'a str> {
    let marker = format!("ok echo {name}");
    out.stdout
        .lines()
        .skip_while(|l| *l != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("ok echo "))
        .collect()
}

/// A child asking for more than its parent holds: a directory it does not hold (outright,
/// a subdirectory of one, through `..`, relative), a malformed place to put one, an fd it
/// lacks or a wider mode of one, looser limits, and, one generation down, the executor,
/// IPFS, network, limits and directories its parent was not given. Each is refused with a
/// typed refusal (or, for writing a read-only directory, narrowed: the child cannot write
/// it), and the parent carries on. (Each middle child is given `/`, its program's image,
/// so that what refuses its own spawn is what it asks for, not a missing program.)
#[test]
fn a_child_never_gets_more_than_its_parent_holds() {
    let root = tempfile::tempdir().unwrap();
    let (data, ro) = (root.path().join("data"), root.path().join("ro"));
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("own"), "mine").unwrap();
    fixture(&ro);
    let held = root.path().join("held");
    std::fs::write(&held, "held bytes").unwrap();
    let (data_before, ro_before, held_before) = (snapshot(&data), snapshot(&ro), {
        let meta = std::fs::metadata(&held).unwrap();
        (std::fs::read(&held).unwrap(), meta.modified().unwrap())
    });

    const NOT_PERMITTED: &str = "refused: not permitted: ";
    const INVALID: &str = "refused: invalid: ";
    let cases: &[(&str, &str, &str)] = &[
        ("not-held", "--dir /nothere -- ping", NOT_PERMITTED),
        ("subdir", "--dir /data/sub -- ping", NOT_PERMITTED),
        ("dotdot", "--dir /data/.. -- ping", NOT_PERMITTED),
        ("dotdot-ro", "--dir /data/../ro -- ping", NOT_PERMITTED),
        ("ro-dotdot", "--dir /ro/.. -- ping", NOT_PERMITTED),
        ("relative", "--dir data -- ping", NOT_PERMITTED),
        ("at-dotdot", "--dir /data:/x/../y -- ping", INVALID),
        ("at-relative", "--dir /data:y -- ping", INVALID),
        ("fd-missing", "--fd nope -- fd-names", NOT_PERMITTED),
        ("fd-wider", "--fd held::rw -- fd-names", NOT_PERMITTED),
        ("fd-write", "--fd held::w -- fd-names", NOT_PERMITTED),
        ("memory", "--max-memory 134217728 -- ping", NOT_PERMITTED),
        ("timeout", "--timeout-ms 3600000 -- ping", NOT_PERMITTED),
        ("fuel", "--fuel 100000000000000 -- ping", NOT_PERMITTED),
        ("children", "--max-children 9 -- ping", NOT_PERMITTED),
        // One generation down: the child (with an executor) asks for its own child.
        (
            "nested-ipfs",
            "--executor --dir / -- spawn --ipfs -- ping",
            "refused: not permitted: this cell holds no IPFS capability to pass on",
        ),
        (
            "nested-network",
            "--executor --dir / -- spawn --network -- ping",
            "refused: not permitted: this cell holds no network capability to pass on",
        ),
        (
            "nested-memory",
            "--executor --dir / --max-memory 33554432 -- spawn --max-memory 67108864 -- ping",
            "refused: not permitted: max-memory",
        ),
        (
            "nested-dir",
            "--executor --dir / --dir /ro -- spawn --dir /data -- ping",
            "refused: not permitted: `/data` is not a directory this cell holds",
        ),
        (
            "nested-fd",
            "--executor --dir / -- spawn --fd held -- fd-names",
            "refused: not permitted: `held` is not a file descriptor this cell holds",
        ),
    ];
    let mut all: Vec<String> = Vec::new();
    for (name, args, _) in cases {
        all.push(format!("echo {name}"));
        all.push(format!("spawn {args}"));
    }
    all.extend(steps(&[
        // Writing a read-only directory: the child gets it read-only.
        "echo rw-of-ro",
        "spawn --dir /ro -- fs write /ro/f pwned",
        "spawn --dir /ro -- dirs",
        "echo nested-rw-of-ro",
        "spawn --executor --dir / --ro-dir /data -- spawn --dir /data -- fs create /data/planted",
        // No executor: nothing to spawn with.
        "echo no-executor",
        "spawn -- spawn -- ping",
        "echo end",
        "read /data/own",
    ]));

    let held_file = std::fs::File::open(&held).unwrap();
    let flags: Vec<String> = [
        "--max-memory",
        "64MiB",
        "--timeout",
        "50s",
        "--fuel",
        "50000000000",
        "--max-children",
        "8",
        "--fd",
        "held=5,mode=r",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain(grant(&data, "/data", false))
    .chain(grant(&ro, "/ro", true))
    .collect();
    let mut cmd = seq_command(&flags, &image("testbed"), &all);
    crate::support::with_fds(&mut cmd, &[(&held_file, 5)]);
    let out = output(cmd, "");
    drop(held_file);

    for (name, _, expected) in cases {
        let lines = section(&out, name);
        let refusal = lines.iter().find(|l| l.starts_with("refused: "));
        assert!(
            refusal.is_some_and(|l| l.starts_with(expected)),
            "{name}: expected {expected:?}, got {lines:#?}\n{out:#?}"
        );
        // Nothing ran: no child, or only the middle one, which exited normally.
        let ran = lines.iter().filter(|l| l.starts_with("child: ")).count();
        let expected_children = usize::from(name.starts_with("nested-"));
        assert_eq!(ran, expected_children, "{name}: {lines:#?}");
    }
    let rw_of_ro = section(&out, "rw-of-ro");
    assert!(
        rw_of_ro
            .iter()
            .any(|l| l.starts_with("refused: not permitted: "))
            || (rw_of_ro.iter().any(|l| l.ends_with("(write /ro/f pwned)"))
                && rw_of_ro.contains(&"/ro ro")),
        "{rw_of_ro:#?}\n{out:#?}"
    );
    assert!(
        section(&out, "nested-rw-of-ro")
            .iter()
            .any(|l| l.starts_with("error: ") && l.ends_with("(create /data/planted)")),
        "{out:#?}"
    );
    let no_executor = section(&out, "no-executor");
    assert_eq!(no_executor, ["child: exited 1"], "{out:#?}");
    assert!(
        out.stderr.contains("this cell holds no executor"),
        "{out:#?}"
    );
    // The host is unchanged, and the parent carried on to its last step.
    assert_unchanged(&data, &data_before, &out);
    assert_unchanged(&ro, &ro_before, &out);
    let meta = std::fs::metadata(&held).unwrap();
    assert_eq!(
        (std::fs::read(&held).unwrap(), meta.modified().unwrap()),
        held_before
    );
    assert_eq!(step(&out, "read /data/own"), "ok read /data/own = mine");
    assert_contained(&out);
}
