//! IPFS images and `ww export`, against a real node (js-ipfs, started by `cargo xtask test`
//! and named by WW_TEST_IPFS; the tests that need it skip loudly without it) and against
//! tiny fake daemons that lie.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use cid::Cid;

use crate::support::*;

/// The test node's API multiaddr, or `None` after a loud skip message.
fn node(test: &str) -> Option<String> {
    match std::env::var("WW_TEST_IPFS") {
        Ok(api) if !api.is_empty() => Some(api),
        _ => {
            skip(
                test,
                "WW_TEST_IPFS is not set (no IPFS test node); run `cargo xtask test`, which \
                 installs and starts one",
            );
            None
        }
    }
}

/// `ww` talking to `api`, waiting at most a few seconds per block.
fn ww_at(api: &str) -> Command {
    let mut cmd = ww();
    cmd.env("WW_IPFS", api).env("WW_IPFS_TIMEOUT", "3s");
    cmd
}

fn run_at(api: &str, args: &[&str]) -> Out {
    let mut cmd = ww_at(api);
    cmd.args(args);
    output(cmd, "")
}

/// `ww export PATH`: the printed `/ipfs/<cid>`.
fn export(api: &str, path: &std::path::Path) -> String {
    let out = run_at(api, &["export", s(path)]);
    assert_eq!(out.status, 0, "{out:#?}");
    let line = out.stdout.trim().to_owned();
    assert!(line.starts_with("/ipfs/"), "{out:#?}");
    line
}

fn cid_of(ipfs_path: &str) -> Cid {
    Cid::try_from(ipfs_path.trim_start_matches("/ipfs/")).unwrap()
}

/// The node's base URL (`http://127.0.0.1:PORT`) from its multiaddr.
fn base_url(api: &str) -> String {
    let parts: Vec<&str> = api.split('/').collect();
    format!("http://{}:{}", parts[2], parts[4])
}

/// The node's own `add` of one file (the plain multipart upload every client sends).
fn node_add_file(api: &str, name: &str, bytes: &[u8]) -> Cid {
    let boundary = "test-boundary-1234";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut response = ureq::post(format!("{}/api/v0/add", base_url(api)))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&body[..])
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let hash = text
        .split("\"Hash\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    Cid::try_from(hash).unwrap()
}

/// The node's `ls` of a directory: (name, CID) of each entry.
fn node_ls(api: &str, cid: &Cid) -> Vec<(String, Cid)> {
    let mut response = ureq::post(format!("{}/api/v0/ls", base_url(api)))
        .query("arg", cid.to_string())
        .send_empty()
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["Objects"][0]["Links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["Name"].as_str().unwrap().to_owned(),
                Cid::try_from(l["Hash"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn export_prints_the_same_cids_as_the_node() {
    let Some(api) = node("export_prints_the_same_cids_as_the_node") else {
        return;
    };
    let wasm = image("hello").join("bin/main.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    let file = cid_of(&export(&api, &wasm));
    assert_eq!(file, node_add_file(&api, "main.wasm", &bytes));
    // A directory: the node lists what ww added, and its file is the node's own.
    let dir = cid_of(&export(&api, &image("hello")));
    let entries = node_ls(&api, &dir);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bin", "etc"]);
    let bin = node_ls(&api, &entries[0].1);
    assert_eq!(bin, [("main.wasm".to_owned(), file)]);
}

#[test]
fn runs_an_exported_file_and_an_exported_directory() {
    let Some(api) = node("runs_an_exported_file_and_an_exported_directory") else {
        return;
    };
    let file = export(&api, &image("hello").join("bin/main.wasm"));
    let dir = export(&api, &image("hello"));
    for path in [file.clone(), dir.clone(), format!("{dir}/bin/main.wasm")] {
        let out = run_at(&api, &["run", &path]);
        assert_eq!(out.status, 0, "{path}: {out:#?}");
        assert!(out.stdout.contains("hello from a ww cell"), "{out:#?}");
    }
}

#[test]
fn layers_mix_ipfs_and_local_directories() {
    let Some(api) = node("layers_mix_ipfs_and_local_directories") else {
        return;
    };
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let base = tree(&[
        ("etc/motd", b"ipfs\n"),
        ("etc/keep", format!("kept {stamp}\n").as_bytes()),
    ]);
    let local = tree(&[("etc/motd", b"local\n")]);
    let top = tree(&[("usr/lib/new", b"new\n")]);
    let base = export(&api, base.path());
    let top = export(&api, top.path());
    let mut cmd = ww_at(&api);
    cmd.args([
        "run",
        "-l",
        s(&image("shell")),
        "-l",
        s(local.path()),
        "-l",
        &top,
        &base,
    ]);
    let out = output(cmd, "cat /etc/motd /etc/keep /usr/lib/new\n");
    assert_eq!(
        out.stdout,
        format!("local\nkept {stamp}\nnew\n"),
        "{out:#?}"
    );
}

#[test]
fn a_cached_path_runs_without_the_daemon() {
    let Some(api) = node("a_cached_path_runs_without_the_daemon") else {
        return;
    };
    let dir = export(&api, &image("hello"));
    assert_eq!(run_at(&api, &["run", &dir]).status, 0);
    // Nobody listens on this port now: only the cache can answer.
    let closed = closed_port();
    let mut cmd = ww();
    cmd.env_remove("WW_IPFS")
        .args(["run", "--ipfs", &closed, &dir]);
    let out = output(cmd, "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.contains("hello from a ww cell"), "{out:#?}");
}

#[test]
fn a_missing_cid_is_reported() {
    let Some(api) = node("a_missing_cid_is_reported") else {
        return;
    };
    // Content nobody has: the offline node looks for it until the timeout.
    let cid = fresh_cid("missing");
    let out = run_at(&api, &["run", &format!("/ipfs/{cid}")]);
    out.assert_ww_error("failed to get IPFS path");
    assert!(out.stderr.contains("did not provide"), "{out:#?}");
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A fresh uncached CID (of content nobody has).
fn fresh_cid(tag: &str) -> Cid {
    let digest = sha256(format!("{tag} {:?}", std::time::SystemTime::now()).as_bytes());
    Cid::new_v0(cid::multihash::Multihash::wrap(0x12, &digest).unwrap()).unwrap()
}

/// A multiaddr where nothing listens.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("/ip4/127.0.0.1/tcp/{port}/http")
}

#[test]
fn an_unreachable_daemon_is_reported() {
    let cid = fresh_cid("unreachable");
    let mut cmd = ww();
    cmd.env_remove("WW_IPFS")
        .args(["run", "--ipfs", &closed_port(), &format!("/ipfs/{cid}")]);
    let out = output(cmd, "");
    out.assert_ww_error("failed to get IPFS path");
    assert!(out.stderr.contains("unreachable"), "{out:#?}");
    assert!(out.stderr.contains("--ipfs"), "{out:#?}");
}

/// A fake daemon answering every request with `answer(request line)`; its multiaddr.
fn fake_daemon(answer: fn(&str) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = answer(&request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("/ip4/127.0.0.1/tcp/{port}/http")
}

#[test]
fn content_that_does_not_match_its_cid_is_refused() {
    let api = fake_daemon(|_| b"\x0a\x02\x08\x01 not what you asked for".to_vec());
    let cid = fresh_cid("mismatch");
    let out = run_at(&api, &["run", &format!("/ipfs/{cid}")]);
    out.assert_ww_error("does not match its CID");
    assert!(out.stderr.contains(&cid.to_string()), "{out:#?}");
}

#[test]
fn an_ipns_name_resolves_through_the_daemon() {
    // The empty directory's one block: the name resolves, the block verifies, and there is
    // nothing to run.
    let api = fake_daemon(|request| {
        if request.contains("/api/v0/name/resolve") {
            br#"{"Path":"/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}"#.to_vec()
        } else {
            vec![0x0a, 0x02, 0x08, 0x01]
        }
    });
    let out = run_at(&api, &["run", "/ipns/example.com"]);
    out.assert_ww_error("no executable found in IPFS directory");
    let out = run_at(&api, &["run", "/ipns/example.com/bin/main.wasm"]);
    out.assert_ww_error("failed to resolve path");
}

#[test]
fn a_path_that_is_not_ipfs_is_local() {
    let out = run(&["run", "/ipfs/not-a-cid"], "");
    out.assert_ww_error("image not found");
}

/// The shell on `api`'s node, fed `input`.
fn shell_at(api: &str, input: &str) -> Out {
    let mut cmd = ww_at(api);
    cmd.args(["run", s(&image("shell"))]);
    output(cmd, input)
}

#[test]
fn the_shell_adds_then_cats_through_the_ipfs_capability() {
    let Some(api) = node("the_shell_adds_then_cats_through_the_ipfs_capability") else {
        return;
    };
    let stamp = format!("added {:?}\n", std::time::SystemTime::now());
    let dir = tree(&[("note", stamp.as_bytes())]);
    let mut cmd = ww_at(&api);
    cmd.args([
        "run",
        "--dir",
        &format!("{}::/data", s(dir.path())),
        s(&image("shell")),
    ]);
    let out = output(cmd, "ipfs add /data/note\n");
    assert_eq!(out.status, 0, "{out:#?}");
    let path = out.stdout.trim().to_owned();
    assert!(path.starts_with("/ipfs/"), "{out:#?}");
    // The node's own add of the same bytes names the same content.
    assert_eq!(cid_of(&path), node_add_file(&api, "note", stamp.as_bytes()));
    let out = shell_at(&api, &format!("ipfs cat {path}\necho done\n"));
    assert_eq!(out.stdout, format!("{stamp}done\n"), "{out:#?}");
}

#[test]
fn the_shell_lists_an_exported_directory() {
    let Some(api) = node("the_shell_lists_an_exported_directory") else {
        return;
    };
    let dir = export(&api, &image("hello"));
    let wasm = std::fs::metadata(image("hello").join("bin/main.wasm"))
        .unwrap()
        .len();
    let readme = std::fs::read(image("hello").join("etc/README")).unwrap();
    let out = shell_at(
        &api,
        &format!("ipfs ls {dir}\nipfs ls {dir}/bin\nipfs cat {dir}/etc/README\n"),
    );
    assert_eq!(out.status, 0, "{out:#?}");
    let lines: Vec<String> = out
        .stdout
        .lines()
        .take(3)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("bin/ {wasm}"),
            format!("etc/ {}", readme.len()),
            format!("main.wasm {wasm}"),
        ],
        "{out:#?}"
    );
    assert!(
        out.stdout.ends_with(&*String::from_utf8_lossy(&readme)),
        "{out:#?}"
    );
    // A file is not a directory, nor the reverse.
    let out = shell_at(&api, &format!("ipfs ls {dir}/etc/README\nipfs cat {dir}\n"));
    assert!(out.stderr.contains("shell: ipfs: invalid:"), "{out:#?}");
    let out = shell_at(&api, &format!("ipfs cat {dir}/nothing\n"));
    assert!(out.stderr.contains("shell: ipfs: not found:"), "{out:#?}");
}

#[test]
fn ipfs_is_passed_to_a_child_only_when_asked_for() {
    // pid0 holds IPFS; a child spawned without `ipfs` does not, whatever the daemon.
    let api = closed_port();
    let out = run_at(
        &api,
        &["run", s(&image("testbed")), "spawn", "--", "ipfs-add", "hi"],
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout.contains("error: ipfs-add: not permitted:"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("child: exited 1"), "{out:#?}");
    // Passed on, it reaches the (closed) daemon.
    let out = run_at(
        &api,
        &[
            "run",
            s(&image("testbed")),
            "spawn",
            "--ipfs",
            "--",
            "ipfs-add",
            "hi",
        ],
    );
    assert!(
        out.stdout.contains("error: ipfs-add: unavailable:"),
        "{out:#?}"
    );
    // A child that holds none cannot pass it on.
    let out = run_at(
        &api,
        &[
            "run",
            s(&image("testbed")),
            "spawn",
            "--executor",
            "--dir",
            "/",
            "--",
            "spawn",
            "--ipfs",
            "--",
            "ping",
        ],
    );
    assert!(out.stdout.contains("refused: not permitted:"), "{out:#?}");
}

#[test]
fn an_unreachable_daemon_is_unavailable_and_the_shell_goes_on() {
    let cid = fresh_cid("shell-unreachable");
    let out = shell_at(
        &closed_port(),
        &format!("ipfs cat /ipfs/{cid}\nipfs ls /ipfs/{cid}\necho still here\n"),
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(out.stdout, "still here\n", "{out:#?}");
    assert_eq!(
        out.stderr
            .matches("shell: ipfs: unavailable: failed to get IPFS path")
            .count(),
        2,
        "{out:#?}"
    );
    assert!(out.stderr.contains("unreachable"), "{out:#?}");
}

#[test]
fn a_native_program_from_ipfs_runs_from_a_private_executable_copy() {
    let Some(api) = node("a_native_program_from_ipfs_runs_from_a_private_executable_copy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("where");
    // Prints the path it runs from: the copy in the jail, not the shared cache.
    std::fs::write(&prog, "#!/bin/sh\necho \"$0\"\nexit 6\n").unwrap();
    let path = export(&api, &prog);
    let out = run_at(&api, &["run", &path]);
    assert_eq!(out.status, 6, "{out:#?}");
    let ran = out.stdout.trim();
    assert!(
        ran.contains("ww-jail-") && ran.contains("/.ww-program/"),
        "{out:#?}"
    );
    assert!(
        !std::path::Path::new(ran).exists(),
        "the private copy is removed afterwards"
    );
}
