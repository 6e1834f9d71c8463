//! Modes that try to exhaust the node, for the tests of its budget (`--node-memory`,
//! `--max-cells`, `--max-depth`):
//!
//! - `tree WIDTH MIB`: touches MIB MiB of memory, then spawns up to WIDTH children running
//!   `tree WIDTH MIB` themselves (with an executor, the image read-only, no stdio), and
//!   sleeps forever. pid0
//!   (the root, the only one whose stdout is kept) prints `tree: spawned N; refused: WHY`
//!   after its own spawns, where WHY is the first refusal (`none` if there was none);
//! - `args N MIB`: spawns N children that `block`, each given one argument of MIB MiB, and
//!   prints `args: spawned K; refused: WHY`, then exits (its children with it).

use std::time::Duration;

use ww::process::{Child, Command, SpawnError, Stdio};

use super::{SELF, executor, fail, say};

fn number(text: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| fail(&format!("not a number: {text}")))
}

/// Memory that is really resident: every page written.
fn touch(mib: u64) -> Vec<u8> {
    vec![1u8; (mib as usize) << 20]
}

fn refused(first: &Option<SpawnError>) -> String {
    first
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

pub fn tree(width: &str, mib: &str) -> ! {
    let (width_n, mib_n) = (number(width), number(mib));
    let held = touch(mib_n);
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..width_n {
        let spawned = Command::path(SELF)
            .args(["tree", width, mib])
            .dir_read_only("/")
            .executor(true)
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    say(&format!(
        "tree: spawned {}; refused: {}",
        children.len(),
        refused(&first)
    ));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        std::hint::black_box(&held);
    }
}

pub fn args(n: &str, mib: &str) -> ! {
    let (n, mib) = (number(n), number(mib));
    let big = "a".repeat((mib as usize) << 20);
    let executor = executor();
    let mut children: Vec<Child> = Vec::new();
    let mut first = None;
    for _ in 0..n {
        let spawned = Command::path(SELF)
            .args(["block", big.as_str()])
            .stdin(Stdio::Pipe)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
            .spawn(&executor);
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    say(&format!(
        "args: spawned {}; refused: {}",
        children.len(),
        refused(&first)
    ));
    ww::exit(0);
}
