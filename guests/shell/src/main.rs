//! `shell`: an interactive shell cell.
//!
//! It reads commands line by line from stdin and runs them against the cell's own
//! filesystem and environment. When stdin is a terminal it prints the prompt `ww> ` first.
//! Words are split at whitespace; double quotes keep whitespace (and the operators `>`, `&`
//! and `|`) inside one word, and within them `\"` and `\\` stand for `"` and `\`.
//!
//! Commands: `help`, `echo ARGS... [> FILE]`, `ls [PATH]`, `cat PATH...`, `env`,
//! `exit [N]`, and for child cells `run PATH [ARGS...] [&]`, `A ARGS... | B ARGS...`, `ps`,
//! `kill ID` and `wait [ID]`, and for IPFS `ipfs cat PATH`, `ipfs ls PATH` and
//! `ipfs add FILE` (see [`HELP`]). A failing command prints `shell: ...` on stderr
//! and the shell goes on; at end of input it exits 0. It exits 1 only when it cannot write
//! its stdout.
//!
//! A child runs the binary at PATH in the shell's own filesystem, with the shell's stdio,
//! its environment and every directory it holds (read-only ones stay read-only), and no
//! executor. Its ID is the host's process id. A foreground child is waited for, and its
//! status printed as `[ID] STATUS` unless it exited 0; a background child (`&`) becomes a
//! job, which `ps` lists, `kill` ends and `wait` reaps. Jobs end with the shell.

use std::fs;
use std::io::{self, BufRead, Read, Write};

use ww::process::{Child, Command, DirGrant, Executor, ExitStatus, Stdio};

/// What `help` prints.
const HELP: &str = "\
commands:
  help                    show this list
  echo ARGS... [> FILE]   print ARGS joined by spaces, or write them to FILE
  ls [PATH]               list a directory (default: the current one), directories end in /
  cat PATH...             print files
  env                     print the environment, sorted
  exit [N]                leave the shell with status N (0..=255, default 0)
  run PATH [ARGS...]      run the program at PATH with this shell's stdio, environment and
                          directories; print its status unless it exited 0
  run PATH [ARGS...] &    the same in the background: a job
  A [ARGS...] | B [ARGS...]
                          run programs A and B, A's stdout into B's stdin
  ps                      list jobs: ID, status (running, or how it ended), name
  kill ID                 end job ID
  wait [ID]               wait for job ID (default: every job), print its status, forget it
  ipfs cat PATH           print the IPFS file at PATH (/ipfs/<cid>[/path], /ipns/<name>[/path])
  ipfs ls PATH            list the IPFS directory at PATH: name (directories end in /), size
  ipfs add FILE           add FILE (from this shell's filesystem) to IPFS, print /ipfs/<cid>
Words are split at spaces; \"double quotes\" keep spaces (and > & |) together.
";

/// The prompt, printed only when stdin is a terminal.
const PROMPT: &str = "ww> ";

fn main() {
    let interactive = ww::stdin_is_terminal();
    let mut shell = Shell {
        executor: ww::executor(),
        jobs: Vec::new(),
    };
    let mut input = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut line = Vec::new();
    loop {
        if interactive {
            check_stdout(out.write_all(PROMPT.as_bytes()).and_then(|()| out.flush()));
        }
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                report(format_args!("reading stdin: {e}"));
                ww::exit(1);
            }
        }
        let line = String::from_utf8_lossy(&line);
        let words = match split(&line) {
            Ok(words) => words,
            Err(msg) => {
                report(format_args!("{msg}"));
                continue;
            }
        };
        let result = shell.run(&words, &mut out);
        check_stdout(result.and_then(|()| out.flush()));
    }
    if interactive {
        // End the prompt's line, so that the caller's next output starts on a fresh one.
        check_stdout(out.write_all(b"\n").and_then(|()| out.flush()));
    }
    ww::exit(0);
}

/// Prints `shell: MESSAGE` on stderr.
fn report(message: std::fmt::Arguments<'_>) {
    // Nothing better to do when stderr itself is gone.
    let _ = writeln!(io::stderr(), "shell: {message}");
}

/// Ends the shell with status 1 when writing its stdout failed: nobody hears it any more.
fn check_stdout(result: io::Result<()>) {
    if let Err(e) = result {
        report(format_args!("writing stdout: {e}"));
        ww::exit(1);
    }
}

/// One word of a command line.
#[derive(Debug, PartialEq, Eq)]
struct Word {
    /// The word with quotes removed.
    text: String,
    /// Whether any part of it was quoted (a quoted `">"` is not a redirection).
    quoted: bool,
}

impl Word {
    /// Whether this is the redirection operator `>`.
    fn is_redirect(&self) -> bool {
        self.is_operator(">")
    }

    /// Whether this is the unquoted operator `op` (`>`, `&`, `|`).
    fn is_operator(&self, op: &str) -> bool {
        !self.quoted && self.text == op
    }
}

/// Splits a line into words at whitespace, honouring double quotes.
fn split(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    let mut in_quotes = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if in_quotes {
            let word = current.get_or_insert_with(quoted_word);
            match c {
                '"' => in_quotes = false,
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => word.text.push(e),
                    Some(other) => {
                        word.text.push('\\');
                        word.text.push(other);
                    }
                    None => word.text.push('\\'),
                },
                _ => word.text.push(c),
            }
        } else if c == '"' {
            in_quotes = true;
            current.get_or_insert_with(quoted_word).quoted = true;
        } else if c.is_whitespace() {
            words.extend(current.take());
        } else {
            current
                .get_or_insert_with(|| Word {
                    text: String::new(),
                    quoted: false,
                })
                .text
                .push(c);
        }
    }
    if in_quotes {
        return Err("unterminated double quote".to_string());
    }
    words.extend(current);
    Ok(words)
}

/// An empty word that started with a quote.
fn quoted_word() -> Word {
    Word {
        text: String::new(),
        quoted: true,
    }
}

/// The shell's state: its executor and its jobs.
struct Shell {
    /// The power to start children, when the shell holds it.
    executor: Option<Executor>,
    /// Background children, oldest first, until `wait` reaps them.
    jobs: Vec<Job>,
}

/// A child started in the background.
struct Job {
    /// Its process handle.
    child: Child,
    /// Its name (`argv[0]`), for `ps`.
    name: String,
    /// How it ended, once known.
    status: Option<ExitStatus>,
}

impl Job {
    /// Its status, asking the host when it is not yet known to have ended.
    fn status(&mut self) -> Option<&ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait();
        }
        self.status.as_ref()
    }
}

impl Shell {
    /// Runs one command. Errors of the command itself are reported on stderr here; the
    /// returned error is a failure to write `out`.
    fn run(&mut self, words: &[Word], out: &mut impl Write) -> io::Result<()> {
        if let Some(bar) = words.iter().position(|w| w.is_operator("|")) {
            return self.pipe(&words[..bar], &words[bar + 1..], out);
        }
        let Some((command, args)) = words.split_first() else {
            return Ok(()); // a blank line
        };
        let args: Vec<&Word> = args.iter().collect();
        match command.text.as_str() {
            "help" => out.write_all(HELP.as_bytes()),
            "echo" => echo(&args, out),
            "ls" => ls(&args, out),
            "cat" => cat(&args, out),
            "env" => env(&args, out),
            "exit" => exit(&args),
            "run" => self.run_program(&args, out),
            "ps" => self.ps(&args, out),
            "kill" => self.kill(&args),
            "wait" => self.wait(&args, out),
            "ipfs" => ipfs(&args, out),
            other => {
                report(format_args!("unknown command: {other} (try help)"));
                Ok(())
            }
        }
    }

    /// The executor, or a report that the shell holds none.
    fn executor(&self, command: &str) -> Option<&Executor> {
        if self.executor.is_none() {
            report(format_args!("{command}: this shell holds no executor"));
        }
        self.executor.as_ref()
    }

    /// `run PATH [ARGS...] [&]`
    fn run_program(&mut self, args: &[&Word], out: &mut impl Write) -> io::Result<()> {
        let (args, background) = match args {
            [rest @ .., last] if last.is_operator("&") => (rest, true),
            _ => (args, false),
        };
        let Some((path, args)) = args.split_first() else {
            report(format_args!(
                "run: missing program (usage: run PATH [ARGS...] [&])"
            ));
            return Ok(());
        };
        if let Some(op) = args.iter().find(|w| w.is_operator("&")) {
            report(format_args!("run: {} only at the end of the line", op.text));
            return Ok(());
        }
        if args.iter().any(|w| w.is_redirect()) {
            report(format_args!("run: > is not supported for programs"));
            return Ok(());
        }
        let Some(executor) = self.executor("run") else {
            return Ok(());
        };
        // Whatever the shell printed comes before the child's output.
        out.flush()?;
        let mut child = match program(&path.text, args).spawn(executor) {
            Ok(child) => child,
            Err(e) => {
                report(format_args!("run: {}: {e}", path.text));
                return Ok(());
            }
        };
        if background {
            writeln!(out, "[{}] started", child.id())?;
            self.jobs.push(Job {
                child,
                name: program_name(&path.text),
                status: None,
            });
            return Ok(());
        }
        let status = child.wait();
        print_failure(child.id(), &status, out)
    }

    /// `A [ARGS...] | B [ARGS...]`: each side as `run` would start it, except that the
    /// shell copies A's stdout into B's stdin.
    fn pipe(&mut self, left: &[Word], right: &[Word], out: &mut impl Write) -> io::Result<()> {
        let (Some((a_path, a_args)), Some((b_path, b_args))) = (pipe_side(left), pipe_side(right))
        else {
            report(format_args!(
                "|: a program on each side, please (usage: A [ARGS...] | B [ARGS...])"
            ));
            return Ok(());
        };
        let stray = a_args
            .iter()
            .chain(&b_args)
            .find(|w| w.is_operator("|") || w.is_operator("&") || w.is_redirect());
        if let Some(op) = stray {
            report(format_args!("|: {} is not supported in a pipe", op.text));
            return Ok(());
        }
        let Some(executor) = self.executor("|") else {
            return Ok(());
        };
        out.flush()?;
        let mut a = match program(&a_path.text, &a_args)
            .stdout(Stdio::Pipe)
            .spawn(executor)
        {
            Ok(child) => child,
            Err(e) => {
                report(format_args!("|: {}: {e}", a_path.text));
                return Ok(());
            }
        };
        let mut b = match program(&b_path.text, &b_args)
            .stdin(Stdio::Pipe)
            .spawn(executor)
        {
            Ok(child) => child,
            Err(e) => {
                report(format_args!("|: {}: {e}", b_path.text));
                a.kill();
                a.wait();
                return Ok(());
            }
        };
        if let (Some(mut from), Some(mut to)) = (a.take_stdout(), b.take_stdin()) {
            // Ends when A's output ends (every holder of its stdout ended) or B stops
            // taking input; either way the other side then sees its pipe closed.
            if let Err(e) = copy(&mut from, &mut to) {
                ww::debug!(
                    "pipe from {} to {} ended early: {e}",
                    a_path.text,
                    b_path.text
                );
            }
        }
        let a_status = a.wait();
        let b_status = b.wait();
        print_failure(a.id(), &a_status, out)?;
        print_failure(b.id(), &b_status, out)
    }

    /// `ps`
    fn ps(&mut self, args: &[&Word], out: &mut impl Write) -> io::Result<()> {
        if !args.is_empty() {
            report(format_args!("ps: takes no arguments"));
            return Ok(());
        }
        let rows: Vec<(String, String, &str)> = self
            .jobs
            .iter_mut()
            .map(|job| {
                let status = match job.status() {
                    Some(status) => status.to_string(),
                    None => "running".to_owned(),
                };
                (job.child.id().to_string(), status, job.name.as_str())
            })
            .collect();
        let id_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(2);
        let status_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
        writeln!(
            out,
            "{:<id_width$}  {:<status_width$}  NAME",
            "ID", "STATUS"
        )?;
        for (id, status, name) in rows {
            writeln!(out, "{id:<id_width$}  {status:<status_width$}  {name}")?;
        }
        Ok(())
    }

    /// `kill ID`: ends the job; `wait` or `ps` then shows it killed.
    fn kill(&mut self, args: &[&Word]) -> io::Result<()> {
        let [id] = args else {
            report(format_args!("kill: usage: kill ID"));
            return Ok(());
        };
        if let Some(index) = self.job_index("kill", id) {
            self.jobs[index].child.kill();
        }
        Ok(())
    }

    /// `wait [ID]`
    fn wait(&mut self, args: &[&Word], out: &mut impl Write) -> io::Result<()> {
        let jobs: Vec<Job> = match args {
            [] => std::mem::take(&mut self.jobs),
            [id] => match self.job_index("wait", id) {
                Some(index) => vec![self.jobs.remove(index)],
                None => return Ok(()),
            },
            _ => {
                report(format_args!("wait: usage: wait [ID]"));
                return Ok(());
            }
        };
        for mut job in jobs {
            let status = match job.status.take() {
                Some(status) => status,
                None => job.child.wait(),
            };
            writeln!(out, "[{}] {status}", job.child.id())?;
            out.flush()?;
        }
        Ok(())
    }

    /// Where the job named by the word `id` is in the table, or a report why there is
    /// none.
    fn job_index(&self, command: &str, id: &Word) -> Option<usize> {
        let Ok(number) = id.text.parse::<u32>() else {
            report(format_args!("{command}: {}: not a job ID", id.text));
            return None;
        };
        let index = self.jobs.iter().position(|job| job.child.id() == number);
        if index.is_none() {
            report(format_args!("{command}: no job {number} (see ps)"));
        }
        index
    }
}

/// The command `run PATH ARGS...` starts: the shell's stdio, environment and directories
/// (each as the shell holds it), no executor.
fn program(path: &str, args: &[&Word]) -> Command {
    let mut command = Command::path(path);
    command
        .args(args.iter().map(|w| w.text.as_str()))
        .envs(std::env::vars_os().map(|(key, value)| {
            (
                key.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        }))
        .executor(false);
    for dir in ww::directories() {
        command.dir_grant(DirGrant {
            path: dir.guest_path,
            at: None,
            read_only: dir.read_only,
        });
    }
    command
}

/// One side of a pipe: its program and arguments. A leading `run` is allowed, so that
/// `run A | run B` is `A | B`.
fn pipe_side(words: &[Word]) -> Option<(&Word, Vec<&Word>)> {
    let words = match words {
        [first, rest @ ..] if first.is_operator("run") => rest,
        words => words,
    };
    let (path, args) = words.split_first()?;
    Some((path, args.iter().collect()))
}

/// The name a program at `path` runs under: its file name without `.wasm`, as the host
/// names it.
fn program_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".wasm").unwrap_or(file).to_owned()
}

/// Prints `[ID] STATUS` unless the child exited 0.
fn print_failure(id: u32, status: &ExitStatus, out: &mut impl Write) -> io::Result<()> {
    if status.success() {
        return Ok(());
    }
    writeln!(out, "[{id}] {status}")
}

/// Copies `from` into `to` until `from` ends; fails when either side fails.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return to.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// `echo ARGS... [> FILE]`
fn echo(args: &[&Word], out: &mut impl Write) -> io::Result<()> {
    let text = |words: &[&Word]| {
        let mut line = words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        line.push('\n');
        line
    };
    match args {
        [.., last] if last.is_redirect() => {
            report(format_args!("echo: missing file name after >"));
            Ok(())
        }
        [words @ .., op, file] if op.is_redirect() => {
            if let Err(e) = fs::write(&file.text, text(words)) {
                report(format_args!("{}: {e}", file.text));
            }
            Ok(())
        }
        words => out.write_all(text(words).as_bytes()),
    }
}

/// `ls [PATH]`
fn ls(args: &[&Word], out: &mut impl Write) -> io::Result<()> {
    let path = match args {
        [] => ".",
        [path] => path.text.as_str(),
        _ => {
            report(format_args!("ls: too many arguments (usage: ls [PATH])"));
            return Ok(());
        }
    };
    match fs::metadata(path) {
        Err(e) => {
            report(format_args!("{path}: {e}"));
            return Ok(());
        }
        Ok(meta) if !meta.is_dir() => return writeln!(out, "{path}"),
        Ok(_) => {}
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            report(format_args!("{path}: {e}"));
            return Ok(());
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                report(format_args!("{path}: {e}"));
                continue;
            }
        };
        let mut name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if is_dir {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

/// `cat PATH...`
fn cat(args: &[&Word], out: &mut impl Write) -> io::Result<()> {
    if args.is_empty() {
        report(format_args!("cat: missing file name (usage: cat PATH...)"));
    }
    let mut buf = vec![0u8; 64 * 1024];
    for path in args.iter().map(|w| w.text.as_str()) {
        let mut file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) => {
                report(format_args!("{path}: {e}"));
                continue;
            }
        };
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    report(format_args!("{path}: {e}"));
                    break;
                }
            }
        }
    }
    Ok(())
}

/// `ipfs cat PATH`, `ipfs ls PATH`, `ipfs add FILE`
fn ipfs(args: &[&Word], out: &mut impl Write) -> io::Result<()> {
    let texts: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
    let failed = |e: &dyn std::fmt::Display| report(format_args!("ipfs: {e}"));
    match texts.as_slice() {
        ["cat", path] => match ww::ipfs::cat(path) {
            Ok(bytes) => out.write_all(&bytes)?,
            Err(e) => failed(&e),
        },
        ["ls", path] => match ww::ipfs::ls(path) {
            Ok(entries) => {
                let names: Vec<String> = entries
                    .iter()
                    .map(|e| match e.kind {
                        ww::ipfs::Kind::Directory => format!("{}/", e.name),
                        ww::ipfs::Kind::File => e.name.clone(),
                    })
                    .collect();
                let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
                for (name, entry) in names.iter().zip(&entries) {
                    writeln!(out, "{name:<width$}  {}", entry.size)?;
                }
            }
            Err(e) => failed(&e),
        },
        ["add", file] => match fs::read(file) {
            Ok(bytes) => match ww::ipfs::add(&bytes) {
                Ok(path) => writeln!(out, "{path}")?,
                Err(e) => failed(&e),
            },
            Err(e) => report(format_args!("ipfs: {file}: {e}")),
        },
        _ => report(format_args!(
            "ipfs: usage: ipfs cat PATH | ipfs ls PATH | ipfs add FILE"
        )),
    }
    Ok(())
}

/// `env`
fn env(args: &[&Word], out: &mut impl Write) -> io::Result<()> {
    if !args.is_empty() {
        report(format_args!("env: takes no arguments"));
        return Ok(());
    }
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    for (key, value) in vars {
        writeln!(out, "{key}={value}")?;
    }
    Ok(())
}

/// `exit [N]`: only returns when the arguments are bad.
fn exit(args: &[&Word]) -> io::Result<()> {
    match args {
        [] => ww::exit(0),
        [code] => match code.text.parse::<u8>() {
            Ok(code) => ww::exit(code),
            Err(_) => report(format_args!("exit: {}: not a status in 0..=255", code.text)),
        },
        _ => report(format_args!("exit: too many arguments (usage: exit [N])")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        split(line)
            .expect("splits")
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn splits_at_whitespace_and_keeps_quoted_spaces() {
        assert_eq!(texts("  echo  a\tb \n"), ["echo", "a", "b"]);
        assert_eq!(texts(r#"echo "a  b" c"d e"f"#), ["echo", "a  b", "cd ef"]);
        assert_eq!(
            texts(r#"echo "" "\"q\" \\ \n""#),
            ["echo", "", r#""q" \ \n"#]
        );
        assert!(texts("").is_empty());
        assert!(split(r#"echo "open"#).is_err());
    }

    #[test]
    fn operators_are_bare_words_only() {
        let words = split(r#"run a "&" & "|" |"#).expect("splits");
        let ops: Vec<bool> = words
            .iter()
            .map(|w| w.is_operator("&") || w.is_operator("|"))
            .collect();
        assert_eq!(ops, [false, false, false, true, false, true]);
    }

    #[test]
    fn a_pipe_side_may_start_with_run() {
        let words = split("run /bin/a.wasm x y").expect("splits");
        let (path, args) = pipe_side(&words).expect("a program");
        assert_eq!(path.text, "/bin/a.wasm");
        assert_eq!(args.len(), 2);
        let words = split("/bin/b.wasm").expect("splits");
        assert_eq!(pipe_side(&words).expect("a program").0.text, "/bin/b.wasm");
        assert!(pipe_side(&split("run").expect("splits")).is_none());
        assert!(pipe_side(&[]).is_none());
    }

    #[test]
    fn program_names_are_file_names_without_wasm() {
        assert_eq!(program_name("/usr/lib/child-echo.wasm"), "child-echo");
        assert_eq!(program_name("/bin/tool"), "tool");
        assert_eq!(program_name("plain.wasm"), "plain");
    }

    #[test]
    fn only_a_bare_gt_redirects() {
        let words = split(r#"echo > ">""#).expect("splits");
        assert!(words[1].is_redirect());
        assert!(!words[2].is_redirect());
    }
}
