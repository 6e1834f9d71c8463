//! The `churn` mode: spawns many distinct tiny programs from bytes, as a cell attacking the
//! host's compile caches would (each program's content hash is new, so each is compiled,
//! cached in memory and written to the disk cache).

use ww::process::{Command, Stdio};

use crate::{error, parse, say};

/// `churn N [PAD]`: spawns N distinct preview 1 modules from bytes, one at a time, waiting
/// for each; prints `churned N`. Module `i` carries `i` in a data segment of PAD bytes
/// (default 8, from 8 to 65536: one page), so every module hashes differently; a larger PAD
/// makes every compiled artifact larger without making it slower to compile.
pub fn churn(n: &str, pad: Option<&str>) -> ! {
    let n: u64 = parse("count", n);
    let pad: u32 = pad.map_or(8, |pad| parse("pad", pad));
    if !(8..=65536).contains(&pad) {
        error(&"churn: PAD must be from 8 to 65536");
    }
    let executor = crate::executor();
    for i in 0..n {
        let mut command = Command::bytes(module(i, pad));
        command
            .name("churn")
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Null);
        let status = command
            .spawn(&executor)
            .unwrap_or_else(|e| error(&format_args!("churn: spawn {i}: {e}")))
            .wait();
        if !status.success() {
            error(&format_args!("churn: module {i}: {status}"));
        }
    }
    say(&format!("churned {n}"));
    ww::exit(0);
}

/// A preview 1 command whose `_start` returns at once, with a data segment of `pad` bytes
/// (at least 8) that starts with `i` (little-endian) and goes on with bytes derived from it,
/// none zero (so no page of it is left out of the compiled image), in as many pages of
/// memory as it needs. No two `i` give the same program. Also the `programs` mode's program.
///
/// Written out by hand, since the testbed has no assembler: the sections are type (one
/// `[] -> []`), function, memory, export (`memory`, `_start`), code (an empty body) and
/// data (one active segment at offset 0).
pub fn module(i: u64, pad: u32) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    section(&mut bytes, 1, &[0x01, 0x60, 0x00, 0x00]);
    section(&mut bytes, 3, &[0x01, 0x00]);
    let mut memory = vec![0x01, 0x00];
    leb128(&mut memory, pad.div_ceil(65536).max(1));
    section(&mut bytes, 5, &memory);
    let mut exports = vec![0x02];
    for (name, kind) in [("memory", 0x02), ("_start", 0x00)] {
        exports.push(name.len() as u8);
        exports.extend_from_slice(name.as_bytes());
        exports.extend_from_slice(&[kind, 0x00]);
    }
    section(&mut bytes, 7, &exports);
    section(&mut bytes, 10, &[0x01, 0x02, 0x00, 0x0b]);
    // One segment, active in memory 0, at `i32.const 0`.
    let mut data = vec![0x01, 0x00, 0x41, 0x00, 0x0b];
    leb128(&mut data, pad);
    let seed = i.to_le_bytes();
    data.extend_from_slice(&seed);
    data.extend((8..pad as usize).map(|k| seed[k % 8] ^ (k as u8) | 1));
    section(&mut bytes, 11, &data);
    bytes
}

/// Appends section `id` holding `content`.
fn section(bytes: &mut Vec<u8>, id: u8, content: &[u8]) {
    bytes.push(id);
    leb128(bytes, content.len() as u32);
    bytes.extend_from_slice(content);
}

/// Appends `n` as unsigned LEB128.
fn leb128(bytes: &mut Vec<u8>, mut n: u32) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}
