//! `shell`: an interactive shell cell.
//!
//! It reads commands line by line from stdin and runs them against the cell's own
//! filesystem and environment. When stdin is a terminal it prints the prompt `ww> ` first.
//! Words are split at whitespace; double quotes keep whitespace (and a `>`) inside one word,
//! and within them `\"` and `\\` stand for `"` and `\`.
//!
//! Commands: `help`, `echo ARGS... [> FILE]`, `ls [PATH]`, `cat PATH...`, `env` and
//! `exit [N]` (see [`HELP`]). A failing command prints `shell: ...` on stderr and the shell
//! goes on; at end of input it exits 0. It exits 1 only when it cannot write its stdout.

use std::fs;
use std::io::{self, BufRead, Read, Write};

/// What `help` prints.
const HELP: &str = "\
commands:
  help                    show this list
  echo ARGS... [> FILE]   print ARGS joined by spaces, or write them to FILE
  ls [PATH]               list a directory (default: the current one), directories end in /
  cat PATH...             print files
  env                     print the environment, sorted
  exit [N]                leave the shell with status N (0..=255, default 0)
Words are split at spaces; \"double quotes\" keep spaces together.
";

/// The prompt, printed only when stdin is a terminal.
const PROMPT: &str = "ww> ";

fn main() {
    let interactive = ww::stdin_is_terminal();
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
        let result = run(&words, &mut out);
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
        !self.quoted && self.text == ">"
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

/// Runs one command. Errors of the command itself are reported on stderr here; the
/// returned error is a failure to write `out`.
fn run(words: &[Word], out: &mut impl Write) -> io::Result<()> {
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
        other => {
            report(format_args!("unknown command: {other} (try help)"));
            Ok(())
        }
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
    fn only_a_bare_gt_redirects() {
        let words = split(r#"echo > ">""#).expect("splits");
        assert!(words[1].is_redirect());
        assert!(!words[2].is_redirect());
    }
}
