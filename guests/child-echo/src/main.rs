//! `child-echo`: a child cell that echoes.
//!
//! With arguments (besides `argv[0]`) it first prints them joined by spaces on one line.
//! Then it copies its stdin to its stdout until end of file, each piece passed on as soon as
//! it is read, and exits 0. A read or write error (such as a closed pipe) ends it with
//! status 1 and a message on stderr.
//!
//! It copies through [`ww::io`], straight on the WASI streams, in pieces of up to
//! [`BUF_SIZE`] bytes.

use std::io::{self, Read, Write};

/// Bytes read from stdin at a time: as much as the `ww` host passes in one call.
const BUF_SIZE: usize = 64 * 1024;

fn main() {
    if let Err(err) = run() {
        // Ignore a failure to report the failure: the exit status still tells.
        let _ = writeln!(ww::io::stderr(), "child-echo: {err}");
        ww::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut out = ww::io::stdout();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        // One write_all of the whole line; each write is passed on before it returns.
        out.write_all(format!("{}\n", args.join(" ")).as_bytes())
            .map_err(|e| format!("writing stdout: {e}"))?;
    }

    let mut input = ww::io::stdin();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading stdin: {e}")),
        };
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}
