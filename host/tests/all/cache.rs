//! ww's caches are bounded: a cell spawning many distinct programs from bytes cannot grow
//! the node's memory or its disk cache without limit (issue 13), and `ww cache` shows,
//! prunes and clears them.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// How many distinct modules the attack spawns: the number the issue measured with. A
/// debug `ww` takes about 45 s.
const ATTACK_MODULES: u64 = 30_000;

/// The disk cap the attack runs under (`WW_CACHE_MAX`): far below the ~540 MB the attack
/// writes, so that only eviction can keep to it.
const ATTACK_DISK_MAX: u64 = 64 << 20;

/// How far past its cap the disk cache may be seen: an artifact is written before the
/// eviction it triggers, so for the moment of an eviction the cache holds one artifact
/// (~18 KiB here) more than its cap, and the test may sample it then.
const ATTACK_DISK_SLACK: u64 = 1 << 20;

/// The most resident memory ww may reach during the attack. With the caches bounded (512
/// programs, 256 MiB) a debug `ww` peaks at ~75 MiB; unbounded, it reached 519 MiB by the
/// 20,000th module, and then failed the cell's spawns: each cached module held a memfd, and
/// ww ran out of file descriptors.
const ATTACK_RSS_CEILING: u64 = 160 << 20;

/// The total size of the regular files under `dir`, recursively, and how many there are.
fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            let (bytes, files) = disk_usage(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else if meta.is_file() {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

/// The compiled-code cache's size under a state directory: its `wasmtime-*` directories.
fn code_cache_usage(state: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(state).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("wasmtime-") {
            let (bytes, files) = disk_usage(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        }
    }
    total
}

#[test]
fn distinct_modules_from_bytes_stay_within_the_memory_and_disk_caps() {
    let state = tempfile::tempdir().unwrap();
    let tb = image("testbed");
    let n = ATTACK_MODULES.to_string();
    let mut child = ww()
        .args(["run", s(&tb), "churn", &n])
        .env("WW_CACHE_DIR", state.path())
        .env("WW_CACHE_MAX", ATTACK_DISK_MAX.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out_pipe = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let mut err_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let (mut peak_rss, mut peak_disk) = (0u64, 0u64);
    let mut last_disk_sample = Instant::now();
    let status = loop {
        // VmHWM is the peak so far, so a late sample covers what happened between samples.
        for field in ["VmRSS:", "VmHWM:"] {
            if let Some(bytes) = status_kib(pid, field).map(|kib| kib * 1024) {
                peak_rss = peak_rss.max(bytes);
            }
        }
        if last_disk_sample.elapsed() > Duration::from_secs(2) {
            peak_disk = peak_disk.max(code_cache_usage(state.path()).0);
            last_disk_sample = Instant::now();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            panic!("the attack did not finish within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let (disk, files) = code_cache_usage(state.path());
    peak_disk = peak_disk.max(disk);
    let out = Out {
        status: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    eprintln!(
        "attack: {ATTACK_MODULES} modules in {:.1}s; peak RSS {} MiB; disk cache {} MiB in \
         {files} files at the end, peak {} MiB seen",
        elapsed.as_secs_f64(),
        peak_rss >> 20,
        disk >> 20,
        peak_disk >> 20,
    );
    assert!(
        peak_rss < ATTACK_RSS_CEILING,
        "ww reached {} MiB resident (ceiling {} MiB)",
        peak_rss >> 20,
        ATTACK_RSS_CEILING >> 20
    );
    assert!(
        peak_disk <= ATTACK_DISK_MAX + ATTACK_DISK_SLACK,
        "the disk cache reached {} bytes (cap {ATTACK_DISK_MAX})",
        peak_disk,
    );
    assert!(
        disk <= ATTACK_DISK_MAX,
        "the disk cache ended at {disk} bytes (cap {ATTACK_DISK_MAX})"
    );
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        out.stdout.contains(&format!("churned {ATTACK_MODULES}")),
        "{out:#?}"
    );
}

/// `ww` with its state in `state`.
fn ww_in(state: &Path) -> std::process::Command {
    let mut cmd = ww();
    cmd.env("WW_CACHE_DIR", state)
        .env_remove("WW_CACHE_MAX")
        .env_remove("WW_IPFS_CACHE_MAX");
    cmd
}

fn run_in(state: &Path, args: &[&str]) -> Out {
    let mut cmd = ww_in(state);
    cmd.args(args);
    output(cmd, "")
}

/// The line of `ww cache` output starting with `label`.
#[track_caller]
fn line<'a>(out: &'a Out, label: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line: {out:#?}"))
}

/// Makes `dir` (and its parents) mode 0700, as ww makes its own.
fn private_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
}

/// A raw-codec CIDv1 of `bytes`, as text.
fn raw_cid(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
    let hash = cid::multihash::Multihash::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, hash).to_string()
}

#[test]
fn cache_show_prune_and_clear() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path();

    // Nothing yet: where the state is, and zeros.
    let out = run_in(st, &["cache"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert_eq!(
        line(&out, "state directory:"),
        format!("state directory: {}", st.display())
    );
    assert!(line(&out, "compiled code:").contains("0 B in 0 programs (cap 1.0 GiB, WW_CACHE_MAX)"));
    assert!(line(&out, "IPFS content:").contains("0 B in 0 entries (cap 2.0 GiB"));
    assert!(line(&out, "merged images:").contains("0 images"));

    // A run compiles its program; an IPFS entry (named by its CID) and a merged image left
    // by a killed ww are planted, next to files ww did not write.
    assert_eq!(run_in(st, &["run", s(&image("hello"))]).status, 0);
    let ipfs = st.join("ipfs");
    private_dir(&ipfs);
    std::fs::write(ipfs.join(raw_cid(b"entry")), b"entry").unwrap();
    std::fs::write(ipfs.join("notes"), b"not ww's").unwrap();
    let stray = st.join("images/ww-image-stray");
    private_dir(&stray);
    std::fs::write(stray.join("file"), b"12345").unwrap();
    std::fs::write(st.join("identity.key"), b"not a cache").unwrap();

    let out = run_in(st, &["cache", "show"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        line(&out, "compiled code:").contains("in 1 program "),
        "{out:#?}"
    );
    assert!(
        line(&out, "IPFS content:").contains("5 B in 1 entry "),
        "{out:#?}"
    );
    assert!(
        line(&out, "merged images:").contains("5 B in 1 image "),
        "{out:#?}"
    );

    // Under a generous cap, prune evicts nothing but the leftover image.
    let out = run_in(st, &["cache", "prune", "--max", "1GiB"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        line(&out, "compiled code:").contains("evicted 0 programs"),
        "{out:#?}"
    );
    assert!(
        line(&out, "merged images:").contains("removed 1 image "),
        "{out:#?}"
    );
    assert!(!stray.exists());

    // Without --max, prune keeps to the caps from the environment.
    let mut cmd = ww_in(st);
    cmd.args(["cache", "prune"]).env("WW_CACHE_MAX", "1");
    let out = output(cmd, "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        line(&out, "compiled code:").contains("evicted 1 program "),
        "{out:#?}"
    );
    assert!(
        line(&out, "IPFS content:").contains("evicted 0 entries"),
        "{out:#?}"
    );

    // Clear removes the rest of what ww can rebuild, and nothing else.
    assert_eq!(run_in(st, &["run", s(&image("hello"))]).status, 0);
    let out = run_in(st, &["cache", "clear"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        line(&out, "compiled code:").contains("removed 1 program "),
        "{out:#?}"
    );
    assert!(
        line(&out, "IPFS content:").contains("removed 1 entry "),
        "{out:#?}"
    );
    let (bytes, files) = code_cache_usage(st);
    assert_eq!((bytes, files), (0, 0));
    assert!(ipfs.join("notes").is_file() && st.join("identity.key").is_file());
    let out = run_in(st, &["cache"]);
    assert!(
        line(&out, "compiled code:").contains("0 B in 0 programs"),
        "{out:#?}"
    );
    assert!(
        line(&out, "IPFS content:").contains("0 B in 0 entries"),
        "{out:#?}"
    );
}

#[test]
fn cache_sizes_that_do_not_parse_are_refused_with_help() {
    let state = tempfile::tempdir().unwrap();
    let out = run_in(state.path(), &["cache", "prune", "--max", "lots"]);
    out.assert_ww_error("bad --max `lots`");
    for var in ["WW_CACHE_MAX", "WW_IPFS_CACHE_MAX"] {
        let mut cmd = ww_in(state.path());
        cmd.args(["cache", "prune"]).env(var, "1.5G");
        out_of(cmd).assert_ww_error(&format!("bad {var} value `1.5G`"));
    }
    let mut cmd = ww_in(state.path());
    cmd.args(["run", s(&image("hello"))])
        .env("WW_CACHE_MAX", "-1");
    out_of(cmd).assert_ww_error("bad WW_CACHE_MAX value `-1`");
    let out = run_in(state.path(), &["cache", "shrink"]);
    assert_eq!(out.status, 125, "{out:#?}");
    assert_no_panic(&out);
}

fn out_of(cmd: std::process::Command) -> Out {
    output(cmd, "")
}

/// A preview 1 command of about `pad` bytes (a data segment holding `tag` and padding)
/// that sleeps `ms` milliseconds.
fn padded_module(tag: &str, pad: usize, ms: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{tag}{padding}")
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {ns}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
        padding = "x".repeat(pad),
        ns = ms * 1_000_000,
    ))
    .unwrap()
}

/// A fake IPFS daemon answering `block/get` with `blocks` (by CID text); its multiaddr.
fn block_server(blocks: std::collections::HashMap<String, Vec<u8>>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let arg = request
                .split(['?', '&', ' '])
                .find_map(|part| part.strip_prefix("arg="))
                .unwrap_or_default();
            let (status, body) = match blocks.get(arg) {
                Some(block) => ("200 OK", block.clone()),
                None => (
                    "500 Internal Server Error",
                    b"{\"Message\":\"not found\"}".to_vec(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("/ip4/127.0.0.1/tcp/{port}/http")
}

#[test]
fn the_ipfs_cache_evicts_least_recently_used_but_never_what_a_run_uses() {
    const PAD: usize = 20_000;
    const MAX: u64 = 50_000;
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    let modules: Vec<Vec<u8>> = ["a", "b", "c", "d"]
        .iter()
        .map(|tag| padded_module(tag, PAD, if *tag == "a" { 60_000 } else { 0 }))
        .collect();
    let cids: Vec<String> = modules.iter().map(|m| raw_cid(m)).collect();
    let api = block_server(cids.iter().cloned().zip(modules).collect());
    let entry = |i: usize| st.join("ipfs").join(&cids[i]);
    let ww_ipfs = |i: usize| {
        let mut cmd = ww_in(st);
        cmd.env("WW_IPFS", &api)
            .env("WW_IPFS_TIMEOUT", "3s")
            .env("WW_IPFS_CACHE_MAX", MAX.to_string())
            .args(["run", &format!("/ipfs/{}", cids[i])]);
        cmd
    };

    // `a` runs on (it sleeps a minute) while `b`, `c` and `d` are fetched and run.
    let mut running = ww_ipfs(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !entry(0).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a was never fetched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 1..3 {
        let out = output(ww_ipfs(i), "");
        assert_eq!(out.status, 0, "{out:#?}");
    }
    // Three entries of ~20 KB passed the 50 KB cap when `c` came: `b`, the least recently
    // used that nobody runs, went; `a` stays while it runs, and `c` was just fetched.
    assert!(entry(0).exists(), "the running image was evicted");
    assert!(!entry(1).exists(), "b was not evicted");
    assert!(entry(2).exists());
    let out = run_in(st, &["cache", "prune", "--max", "0"]);
    assert!(
        line(&out, "IPFS content:").contains("1 kept: in use by a running ww"),
        "{out:#?}"
    );
    assert!(entry(0).exists() && !entry(2).exists());

    // Once `a` is no longer run, it is evicted like any other.
    running.kill().unwrap();
    running.wait().unwrap();
    let out = output(ww_ipfs(2), "");
    assert_eq!(out.status, 0, "{out:#?}");
    let out = output(ww_ipfs(3), "");
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(!entry(0).exists(), "a outlived its run");
    assert!(entry(2).exists() && entry(3).exists());
    let out = run_in(st, &["cache"]);
    assert!(
        line(&out, "IPFS content:").contains("in 2 entries"),
        "{out:#?}"
    );
}

#[test]
fn clear_leaves_the_merged_image_of_a_running_ww() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    let base = tree(&[("bin/main.wasm", &padded_module("base", 0, 60_000))]);
    let layer = tree(&[("etc/motd", b"hello")]);
    let mut running = ww_in(st)
        .args(["run", "--layer", s(layer.path()), s(base.path())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let images = st.join("images");
    let merged = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&images)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let started = Instant::now();
    while merged().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no merged image appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the run get past merging into its running state.
    std::thread::sleep(Duration::from_millis(500));
    let out = run_in(st, &["cache", "clear"]);
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(
        line(&out, "merged images:").contains("removed 0 images (0 B); 1 kept: in use"),
        "{out:#?}"
    );
    let dirs = merged();
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("etc/motd").is_file());
    running.kill().unwrap();
    running.wait().unwrap();
    // Killed, it left its image behind: now clear takes it.
    let out = run_in(st, &["cache", "clear"]);
    assert!(
        line(&out, "merged images:").contains("removed 1 image "),
        "{out:#?}"
    );
    assert!(merged().is_empty());
}
