//! `cargo xtask fuzz [TARGET] [--seconds N] [--build-only]`: the cargo-fuzz targets in
//! `fuzz/`, one parser of untrusted bytes each.
//!
//! Installs cargo-fuzz when it is missing (`cargo install cargo-fuzz --locked`), then runs
//! `cargo fuzz run TARGET fuzz/corpus/TARGET fuzz/seeds/TARGET -- -max_total_time=N` for one
//! target or all of them: the working corpus grows in `fuzz/corpus/` (git-ignored), the
//! committed seeds in `fuzz/seeds/` are read but never written. `--build-only` builds the
//! targets and runs none.
//!
//! cargo-fuzz passes `-Zsanitizer=address`, which only a nightly rustc accepts:
//! `RUSTC_BOOTSTRAP=1` is set for the cargo-fuzz command alone, never for anything else.
//!
//! Per target it prints the executions libFuzzer ran; a target that crashes (a panic, a
//! sanitizer report, a leak, a timeout) fails the task, with its input in
//! `fuzz/artifacts/TARGET/`.
//!
//! The binary seeds (dag-pb blocks, Cap'n Proto RPC frames) are written by this module's
//! ignored test: `cargo test -p xtask -- --ignored write_binary_seeds`. The key-file seeds
//! are keys `ww keygen` wrote; the text seeds are written by hand.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Seconds each target runs when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// One target, or every target when `None`.
    pub target: Option<String>,
    /// How long each target runs (`-max_total_time`).
    pub seconds: u64,
    /// Build the targets without running them.
    pub build_only: bool,
}

impl Options {
    /// Parses the arguments after `fuzz`: `[TARGET] [--seconds N] [--build-only]`.
    pub fn parse(args: &[&str]) -> Result<Options> {
        let mut options = Options {
            target: None,
            seconds: DEFAULT_SECONDS,
            build_only: false,
        };
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            match arg {
                "--build-only" => options.build_only = true,
                "--seconds" => {
                    let value = args.next().context("--seconds needs a number")?;
                    options.seconds = match value.parse() {
                        Ok(n) if n > 0 => n,
                        _ => bail!("--seconds {value}: expected a positive whole number"),
                    };
                }
                flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
                target if options.target.is_none() => options.target = Some(target.to_owned()),
                extra => bail!("one target at most (also given: {extra})"),
            }
        }
        Ok(options)
    }
}

/// How one target's run ended.
struct Outcome {
    target: String,
    /// Executions libFuzzer reported at the end, if it got that far.
    executions: Option<u64>,
    /// Whether it exited cleanly (no crash found).
    clean: bool,
}

/// Runs the task.
pub fn run(options: &Options) -> Result<()> {
    let root = util::root()?;
    ensure_cargo_fuzz()?;
    let all = targets(&root)?;
    let chosen: Vec<String> = match &options.target {
        Some(target) if all.contains(target) => vec![target.clone()],
        Some(target) => bail!("no fuzz target `{target}` (targets: {})", all.join(", ")),
        None => all,
    };

    if options.build_only {
        let mut build = fuzz_command(&root);
        build.arg("build");
        if let Some(target) = &options.target {
            build.arg(target);
        }
        util::run(&mut build)?;
        println!(
            "xtask: built {} fuzz target(s): {}",
            chosen.len(),
            chosen.join(", ")
        );
        return Ok(());
    }

    let mut outcomes = Vec::new();
    for target in &chosen {
        println!("\n==> fuzz {target} ({} s)", options.seconds);
        outcomes.push(run_target(&root, target, options.seconds)?);
    }

    println!("\nxtask: fuzz results ({} s per target):", options.seconds);
    for o in &outcomes {
        let executions = o
            .executions
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        let verdict = if o.clean {
            "no crash".to_owned()
        } else {
            format!("CRASHED (input in fuzz/artifacts/{}/)", o.target)
        };
        println!("  {:<12} {executions:>12} executions  {verdict}", o.target);
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.clean)
        .map(|o| o.target.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        bail!("fuzz targets crashed: {}", crashed.join(", "))
    }
}

/// `cargo fuzz …` in the repository root, with `RUSTC_BOOTSTRAP=1` for it alone.
fn fuzz_command(root: &Path) -> Command {
    let mut cmd = Command::new(util::cargo());
    cmd.current_dir(root)
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(util::cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    util::run(Command::new(util::cargo()).args(["install", "cargo-fuzz", "--locked"]))
}

/// The targets `fuzz/Cargo.toml` declares (`cargo fuzz list`).
fn targets(root: &Path) -> Result<Vec<String>> {
    let mut list = fuzz_command(root);
    list.arg("list");
    let line = util::display(&list);
    let output = list
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`{line}` lists no targets");
    }
    Ok(targets)
}

/// Runs one target for `seconds`, echoing its output, and reads its final execution count.
fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = Path::new("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(root.join(&corpus))
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = Path::new("fuzz").join("seeds").join(target);

    let mut cmd = fuzz_command(root);
    cmd.args(["run", target]).arg(&corpus);
    if root.join(&seeds).is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let line = util::display(&cmd);
    println!("$ RUSTC_BOOTSTRAP=1 {line}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;

    // libFuzzer reports on stderr: echo it, and keep the last execution count it gives.
    let mut executions = None;
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for text in BufReader::new(stderr).lines() {
            let text = text.with_context(|| format!("reading the output of `{line}`"))?;
            if let Some(n) = executions_in(&text) {
                executions = Some(n);
            }
            let _ = writeln!(out, "{text}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    Ok(Outcome {
        target: target.to_owned(),
        executions,
        clean: status.success(),
    })
}

/// The execution count in one line of libFuzzer's output: its final `#N\tDONE …` line or
/// `stat::number_of_executed_units: N`.
fn executions_in(line: &str) -> Option<u64> {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        return n.trim().parse().ok();
    }
    let rest = line.strip_prefix('#')?;
    let (n, rest) = rest.split_once(char::is_whitespace)?;
    if rest.trim_start().starts_with("DONE") {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            o,
            Options {
                target: None,
                seconds: DEFAULT_SECONDS,
                build_only: false
            }
        );
        let o = Options::parse(&["unixfs", "--seconds", "5"]).unwrap();
        assert_eq!(o.target.as_deref(), Some("unixfs"));
        assert_eq!(o.seconds, 5);
        assert!(Options::parse(&["--build-only"]).unwrap().build_only);
        assert!(Options::parse(&["--seconds"]).is_err());
        assert!(Options::parse(&["--seconds", "0"]).is_err());
        assert!(Options::parse(&["a", "b"]).is_err());
        assert!(Options::parse(&["--nope"]).is_err());
    }

    #[test]
    fn execution_counts() {
        assert_eq!(
            executions_in("#1234567\tDONE   cov: 812 ft: 3401 corp: 410/22Kb exec/s: 20576"),
            Some(1_234_567)
        );
        assert_eq!(
            executions_in("stat::number_of_executed_units: 42"),
            Some(42)
        );
        assert_eq!(executions_in("#1024\tpulse  cov: 10 ft: 10"), None);
        assert_eq!(executions_in("Done 42 runs in 5 second(s)"), None);
    }

    /// The seeds of the `unixfs` and `rpc_frame` targets, written into `fuzz/seeds/`: real
    /// dag-pb blocks (UnixFS files and a directory, as Kubo writes them) and Cap'n Proto RPC
    /// frames (a Bootstrap, a Call on the membrane, a Finish), plus a few broken ones.
    #[test]
    #[ignore = "writes fuzz/seeds/; run by hand when the seeds change"]
    fn write_binary_seeds() {
        use capnp_rpc::rpc_capnp::message;

        let seeds = util::root().unwrap().join("fuzz").join("seeds");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = seeds.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };

        // unixfs: a selector byte, then (even) a block hashed by the target itself, dag-pb
        // for 0 and raw for 2, or (odd) a CID and a block.
        let leaf = identity_cid(b"chunk one");
        let other = identity_cid(b"chunk two");
        let file = dag_pb(2, b"hello, fuzzer\n", Some(14), None, &[]);
        let chunked = dag_pb(2, b"", Some(18), Some(0o644), &[(&leaf, ""), (&other, "")]);
        let dir = dag_pb(
            1,
            b"",
            None,
            Some(0o755),
            &[(&leaf, "a.txt"), (&other, "b")],
        );
        let hamt = dag_pb(5, b"", None, None, &[(&leaf, "00a.txt")]);
        for (name, selector, block) in [
            ("file-small", 0, &file),
            ("file-chunked", 0, &chunked),
            ("directory", 0, &dir),
            ("hamt-directory", 0, &hamt),
        ] {
            write("unixfs", name, &[&[selector][..], block].concat());
        }
        write("unixfs", "raw-leaf", b"\x02raw leaf bytes");
        // A CID with an identity hash of the block: verifies.
        let mut inline = vec![1];
        inline.extend(cid_bytes(0x70, 0x00, &file));
        inline.extend(&file);
        write("unixfs", "identity-cid-file", &inline);
        // A CIDv0 whose digest is not the block's: a mismatch.
        let mut v0 = vec![1, 0x12, 0x20];
        v0.extend([0xab; 32]);
        v0.extend(&dir);
        write("unixfs", "cidv0-mismatch", &v0);
        write(
            "unixfs",
            "truncated",
            &[&[0][..], &file[..file.len() - 3]].concat(),
        );
        write("unixfs", "bad-wire-type", b"\x00\x0b\x01\x02");

        // rpc_frame: whole frames, as `capnp::serialize` writes them.
        let frame = |build: &dyn Fn(message::Builder<'_>)| {
            let mut m = capnp::message::Builder::new_default();
            build(m.init_root());
            capnp::serialize::write_message_to_words(&m)
        };
        let bootstrap = frame(&|m| m.init_bootstrap().set_question_id(0));
        write("rpc_frame", "bootstrap", &bootstrap);
        let call = frame(&|m| {
            let mut call = m.init_call();
            call.set_question_id(1);
            // Membrane.graft @0 on the bootstrap capability's answer.
            call.set_interface_id(0xd6da_c2f2_d090_76c1);
            call.set_method_id(0);
            call.reborrow()
                .init_target()
                .init_promised_answer()
                .set_question_id(0);
            let mut params = call.init_params();
            params
                .reborrow()
                .get_content()
                .set_as("params as text")
                .unwrap();
            params.init_cap_table(1).get(0).set_sender_hosted(7);
        });
        write("rpc_frame", "call-graft", &call);
        let finish = frame(&|m| {
            let mut f = m.init_finish();
            f.set_question_id(1);
            f.set_release_result_caps(true);
        });
        write("rpc_frame", "finish", &finish);
        let abort = frame(&|m| m.init_abort().set_reason("going away"));
        write("rpc_frame", "abort", &abort);
        // Two frames back to back, as a stream carries them.
        write(
            "rpc_frame",
            "bootstrap-then-call",
            &[&bootstrap[..], &call].concat(),
        );
        write("rpc_frame", "truncated", &call[..call.len() - 9]);
        // A segment table that claims far more words than follow.
        write(
            "rpc_frame",
            "huge-segment",
            &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f],
        );
    }

    /// A CID's bytes: version 1, `codec`, a `hash` multihash of `digest` (varints < 128).
    fn cid_bytes(codec: u8, hash: u8, digest: &[u8]) -> Vec<u8> {
        let mut out = vec![1, codec, hash];
        put_varint(&mut out, digest.len() as u64);
        out.extend(digest);
        out
    }

    /// A raw-codec CID that inlines `bytes` (identity hash).
    fn identity_cid(bytes: &[u8]) -> Vec<u8> {
        cid_bytes(0x55, 0x00, bytes)
    }

    /// A dag-pb node in canonical order (links, then data) whose data is a UnixFS message.
    fn dag_pb(
        kind: u64,
        content: &[u8],
        size: Option<u64>,
        mode: Option<u64>,
        links: &[(&[u8], &str)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (cid, name) in links {
            let mut link = Vec::new();
            field(&mut link, 1, cid);
            field(&mut link, 2, name.as_bytes());
            varint_field(&mut link, 3, cid.len() as u64);
            field(&mut out, 2, &link);
        }
        let mut data = Vec::new();
        varint_field(&mut data, 1, kind);
        if !content.is_empty() {
            field(&mut data, 2, content);
        }
        if let Some(size) = size {
            varint_field(&mut data, 3, size);
        }
        for (cid, _) in links {
            varint_field(&mut data, 4, cid.len() as u64);
        }
        if let Some(mode) = mode {
            varint_field(&mut data, 7, mode);
        }
        field(&mut out, 1, &data);
        out
    }

    fn field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
        put_varint(out, (number << 3) | 2);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    fn varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
        put_varint(out, number << 3);
        put_varint(out, value);
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
}
