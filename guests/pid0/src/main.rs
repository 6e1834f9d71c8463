//! `pid0`: the default init cell.
//!
//! It greets, naming the image it was booted from, and shows what it holds: each directory
//! (guest path, read-only or read-write), its arguments, and the image's `/etc/motd` when
//! there is one.
//!
//! Then it shows its executor at work: it spawns `/usr/lib/child-echo.wasm` from its image
//! with stdin and stdout piped, writes a message into it, closes its stdin, reads
//! everything it echoes, waits for it, and reports what it said and how it ended. An image
//! without that file, or a pid0 without an executor, only says so.
//!
//! It exits 0, or 1 when it cannot write its stdout, when the host refuses the spawn for
//! another reason than a missing file, or when talking to the child fails.

use std::io::{self, Read, Write};

use ww::process::{Command, SpawnError, Stdio};

/// Where an image keeps its message of the day.
const MOTD: &str = "/etc/motd";

/// The child pid0 spawns from its image.
const CHILD: &str = "/usr/lib/child-echo.wasm";

/// What pid0 sends through the child.
const MESSAGE: &str = "hello from pid0";

fn main() {
    let image = ww::image();
    ww::info!("pid0 started from image {image}");

    print(&greeting(&image));
    match echo_through_child() {
        Ok(report) => print(&report),
        Err(err) => {
            let _ = writeln!(io::stderr(), "pid0: {err}");
            ww::exit(1);
        }
    }
}

/// Writes `text` to stdout, or ends pid0 with status 1 when it cannot.
fn print(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        let _ = writeln!(io::stderr(), "pid0: writing stdout: {err}");
        ww::exit(1);
    }
}

/// Sends [`MESSAGE`] through [`CHILD`]; what to report, or why that failed.
fn echo_through_child() -> Result<String, String> {
    let Some(executor) = ww::executor() else {
        return Ok("I hold no executor, so I start no child.\n".to_owned());
    };
    let mut child = match Command::path(CHILD)
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Pipe)
        .spawn(&executor)
    {
        Ok(child) => child,
        Err(SpawnError::NotFound(_)) => {
            return Ok(format!("My image has no {CHILD}, so I start no child.\n"));
        }
        Err(err) => return Err(format!("cannot spawn {CHILD}: {err}")),
    };
    ww::debug!("spawned {CHILD} as child {}", child.id());

    let mut stdin = child.take_stdin().ok_or("the child's stdin is not piped")?;
    let mut stdout = child
        .take_stdout()
        .ok_or("the child's stdout is not piped")?;
    let written = stdin.write_all(MESSAGE.as_bytes());
    // Closing stdin ends the child's input, so it finishes echoing and exits.
    drop(stdin);
    let mut echoed = Vec::new();
    let read = stdout.read_to_end(&mut echoed);
    let status = child.wait();
    written.map_err(|e| format!("writing to {CHILD} ({status}): {e}"))?;
    read.map_err(|e| format!("reading from {CHILD} ({status}): {e}"))?;
    Ok(format!(
        "child-echo said {:?} and {status}\n",
        String::from_utf8_lossy(&echoed)
    ))
}

/// Everything pid0 prints, as one text.
fn greeting(image: &str) -> String {
    let mut text = format!("Hello from pid0, booted from image {image}.\n");

    let dirs = ww::directories();
    if dirs.is_empty() {
        text.push_str("I hold no directories.\n");
    } else {
        text.push_str("I hold these directories:\n");
        for dir in &dirs {
            let mode = if dir.read_only { "ro" } else { "rw" };
            text.push_str(&format!("  {} ({mode})\n", dir.guest_path));
        }
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        text.push_str("I was given no arguments.\n");
    } else {
        text.push_str("My arguments:\n");
        for arg in &args {
            text.push_str(&format!("  {arg:?}\n"));
        }
    }

    match std::fs::read_to_string(MOTD) {
        Ok(motd) => {
            text.push_str(&format!("{MOTD}:\n"));
            text.push_str(&motd);
            if !motd.ends_with('\n') {
                text.push('\n');
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            ww::warn!("cannot read {MOTD}: {err}");
            text.push_str(&format!("({MOTD} is there but unreadable: {err})\n"));
        }
    }
    text
}
