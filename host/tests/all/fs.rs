//! The filesystem a cell holds: its image read-only at `/`, and `--dir` grants.

use crate::support::*;

#[test]
fn the_image_root_is_read_only() {
    let shell = image("shell");
    let out = run(
        &["run", s(&shell)],
        "echo x > /etc/planted\ncat /etc/planted\nexit 3\n",
    );
    assert_eq!(
        out.status, 3,
        "the shell should go on after the refusal: {out:#?}"
    );
    assert!(out.stderr.contains("shell: /etc/planted"), "{out:#?}");
    assert!(
        !shell.join("etc/planted").exists(),
        "the write reached the image"
    );
}

#[test]
fn the_cell_reads_its_image() {
    let img = tree(&[("etc/motd", b"hello from the image\n")]);
    let out = run(
        &["run", "-l", s(img.path()), s(&image("shell"))],
        "cat /etc/motd\n",
    );
    assert_eq!(out.stdout, "hello from the image\n", "{out:#?}");
}

#[test]
fn a_read_write_dir_grant_can_be_written() {
    let data = tempfile::tempdir().unwrap();
    let flag = format!("{}::/data", s(data.path()));
    let out = run(
        &["run", "--dir", &flag, s(&image("shell"))],
        "echo written > /data/f\nls /data\n",
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("f")).unwrap(),
        "written\n"
    );
    assert!(out.stdout.contains('f'), "{out:#?}");
}

#[test]
fn a_read_only_dir_grant_cannot_be_written() {
    let data = tree(&[("existing", b"keep me")]);
    let flag = format!("{}::/data:ro", s(data.path()));
    let script = "cat /data/existing\necho overwritten > /data/existing\necho new > /data/new\n";
    let out = run(&["run", "--dir", &flag, s(&image("shell"))], script);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("keep me"), "reads work: {out:#?}");
    assert_eq!(out.stderr.matches("shell: /data/").count(), 2, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("existing")).unwrap(),
        "keep me"
    );
    assert!(!data.path().join("new").exists());
}

#[test]
fn a_grant_at_root_replaces_the_image_root() {
    let data = tree(&[("mine", b"")]);
    let flag = format!("{}::/", s(data.path()));
    let out = run(&["run", "--dir", &flag, s(&image("shell"))], "ls /\n");
    assert_eq!(out.stdout.trim(), "mine", "{out:#?}");
}

#[test]
fn nothing_outside_the_grants_is_visible() {
    let out = run(
        &["run", s(&image("shell"))],
        "cat /../../../../etc/hostname\nls /proc\n",
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(out.stdout, "", "{out:#?}");
    assert_eq!(out.stderr.matches("shell:").count(), 2, "{out:#?}");
}
