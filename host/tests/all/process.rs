//! Booting, arguments, environment, stdio and exit codes.

use crate::support::*;

#[test]
fn pid0_boots_and_greets() {
    let pid0 = image("pid0");
    let out = run(&["run", s(&pid0)], "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout.contains("pid0"),
        "greeting should name the image: {out:#?}"
    );
    assert_no_panic(&out);
}

#[test]
fn child_echo_copies_stdin() {
    let out = run(&["run", s(&image("child-echo"))], "hi\n");
    assert_eq!((out.status, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
}

#[test]
fn child_echo_copies_a_large_stdin_exactly() {
    let data: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let out = run(&["run", s(&image("child-echo"))], &data);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout == data,
        "stdout differs ({} bytes vs {})",
        out.stdout.len(),
        data.len()
    );
}

#[test]
fn args_after_the_image_reach_the_cell() {
    let out = run(
        &["run", s(&image("child-echo")), "a", "--b", "-e", "c d"],
        "",
    );
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "a --b -e c d\n"),
        "{out:#?}"
    );
}

#[test]
fn only_granted_environment_reaches_the_cell() {
    let mut cmd = ww();
    cmd.env("WW_HOST_SECRET", "leak")
        .env("WW_ENV", "FROM_WW_ENV=1,SHARED=ww-env")
        .args([
            "run",
            "-e",
            "FROM_FLAG=2",
            "-e",
            "SHARED=flag",
            s(&image("shell")),
        ]);
    let out = output(cmd, "env\n");
    assert_eq!(out.status, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["FROM_FLAG=2", "FROM_WW_ENV=1", "SHARED=flag"],
        "{out:#?}"
    );
}

#[test]
fn shell_exit_codes_come_back_exactly() {
    for code in [0u8, 1, 2, 42, 125, 126, 127, 128, 134, 200, 254, 255] {
        let out = run(&["run", s(&image("shell"))], &format!("exit {code}\n"));
        assert_eq!(out.status, i32::from(code), "exit {code}: {out:#?}");
    }
}

#[test]
fn every_exit_code_0_to_255_comes_back() {
    let codes: Vec<u8> = (0..=255).collect();
    std::thread::scope(|scope| {
        for chunk in codes.chunks(64) {
            scope.spawn(move || {
                for &code in chunk {
                    let (_dir, wasm) = wasm_file("exit.wasm", &component_exit(code));
                    let out = run(&["run", s(&wasm)], "");
                    assert_eq!(out.status, i32::from(code), "{out:#?}");
                }
            });
        }
    });
}

#[test]
fn preview1_module_gets_args_env_stdio_and_dirs() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, wasm) = wasm_file("dump.wasm", &p1_dump(7));
    let dir_flag = format!("{}::/data:ro", s(data.path()));
    let out = run(
        &[
            "run",
            "-e",
            "K=V",
            "--dir",
            &dir_flag,
            s(&wasm),
            "one",
            "two",
        ],
        "from stdin",
    );
    assert_eq!(out.status, 7, "{out:#?}");
    assert!(out.stdout.contains("args:dump\0one\0two\0"), "{out:#?}");
    assert!(out.stdout.contains("env:K=V\0\n"), "{out:#?}");
    assert!(out.stdout.contains("dirs:/data\0\n"), "{out:#?}");
    assert!(out.stdout.contains("stdin:from stdin\n"), "{out:#?}");
}

#[test]
fn preview1_module_in_an_image_sees_the_root() {
    let img = tree(&[("bin/main.wasm", &p1_dump(0)), ("etc/motd", b"x")]);
    let out = run(&["run", s(img.path())], "");
    assert_eq!(out.status, 0, "{out:#?}");
    let name = img.path().file_name().unwrap().to_str().unwrap();
    assert!(out.stdout.contains(&format!("args:{name}\0\n")), "{out:#?}");
    assert!(out.stdout.contains("dirs:/\0\n"), "{out:#?}");
}

#[test]
fn a_trap_exits_134_naming_cell_and_trap() {
    let (_dir, wasm) = wasm_file("crash.wasm", &p1_trap());
    let out = run(&["run", s(&wasm)], "");
    assert_eq!(out.status, 134, "{out:#?}");
    assert!(out.stderr.contains("cell `crash` trapped"), "{out:#?}");
    assert!(out.stderr.contains("unreachable"), "{out:#?}");
    assert_no_panic(&out);
}

#[test]
fn verbose_shows_guest_logs_and_quiet_hides_them() {
    let pid0 = image("pid0");
    let loud = run(&["-v", "run", s(&pid0)], "");
    assert_eq!(loud.status, 0, "{loud:#?}");
    assert!(
        loud.stderr.contains("ww::guest"),
        "-v should show pid0's log line: {loud:#?}"
    );
    let quiet = run(&["-q", "run", s(&pid0)], "");
    assert_eq!((quiet.status, quiet.stderr.as_str()), (0, ""), "{quiet:#?}");
}
