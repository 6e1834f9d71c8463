//! Small helpers shared by the tasks: where the repository is, how to find cargo, and
//! running commands with errors that say what failed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The repository root (the parent of this crate's directory).
pub fn root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))
}

/// The cargo that runs us (`$CARGO`), or `cargo` from `PATH`.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A command line as the user would type it, for messages.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Whether `program` can be started (it is on `PATH`): runs `program ARG` quietly.
pub fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Paths relative to the repository root, for messages.
pub fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

/// Writes `bytes` to `path` unless it already holds exactly them, through a temporary file
/// renamed into place. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    match std::fs::read(path) {
        Ok(existing) if existing == bytes => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(true)
}

/// Totals of `cargo test` result lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
}

impl TestCounts {
    /// The counts of one cargo `test result: ok. 3 passed; 0 failed; 1 ignored; …` line;
    /// `None` for any other line.
    pub fn of_cargo_line(line: &str) -> Option<TestCounts> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let mut counts = TestCounts::default();
        counts.add_parts(rest);
        Some(counts)
    }

    fn add_parts(&mut self, rest: &str) {
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    /// Moves the tests recorded in `skips` (one `name<TAB>reason` line each, written by the
    /// tests' `support::skip`) from passed to skipped, printing each with its reason.
    pub fn move_skips(&mut self, skips: &std::path::Path) {
        let Ok(text) = std::fs::read_to_string(skips) else {
            return;
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return;
        }
        println!("\nskipped here ({}), each with its reason:", lines.len());
        for line in &lines {
            let (name, reason) = line.split_once('\t').unwrap_or((line, ""));
            println!("  skipped: {name}: {reason}");
        }
        let n = lines.len() as u64;
        self.passed = self.passed.saturating_sub(n);
        self.ignored += n;
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Runs a test command like [`run`], echoing its stdout while adding up the counts that
/// `parse` finds in its lines (e.g. [`TestCounts::of_cargo_line`]).
pub fn run_tests(
    cmd: &mut Command,
    parse: impl Fn(&str) -> Option<TestCounts>,
) -> (TestCounts, Result<()>) {
    use std::io::{BufRead as _, Write as _};
    let line = display(cmd);
    let mut counts = TestCounts::default();
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                counts,
                Err(e).with_context(|| format!("cannot start `{line}`")),
            );
        }
    };
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout().lock();
        for text in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(found) = parse(&text) {
                counts.merge(found);
            }
            let _ = writeln!(out, "{text}");
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow::anyhow!("`{line}` failed ({status})")),
        Err(e) => Err(e).with_context(|| format!("cannot wait for `{line}`")),
    };
    (counts, result)
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_result_lines() {
        let lines = [
            "test result: ok. 19 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "running 3 tests",
        ];
        let mut c = TestCounts::default();
        for found in lines.into_iter().filter_map(TestCounts::of_cargo_line) {
            c.merge(found);
        }
        assert_eq!((c.passed, c.failed, c.ignored), (22, 1, 2));
    }
}
