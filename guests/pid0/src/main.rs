//! `pid0`: the default init cell.
//!
//! It greets, naming the image it was booted from, and shows what it holds: each directory
//! (guest path, read-only or read-write), its arguments, and the image's `/etc/motd` when
//! there is one. Then it exits 0.

use std::io::{self, Write};

/// Where an image keeps its message of the day.
const MOTD: &str = "/etc/motd";

fn main() {
    let image = ww::image();
    ww::info!("pid0 started from image {image}");

    let report = greeting(&image);
    let mut out = io::stdout().lock();
    if let Err(err) = out.write_all(report.as_bytes()).and_then(|()| out.flush()) {
        let _ = writeln!(io::stderr(), "pid0: writing stdout: {err}");
        ww::exit(1);
    }
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
