//! Fuzzes the parser of a `boot/<peer-id>` file (`ww::net::bootstrap::parse`): the input is
//! the file's name, a NUL, then its text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, text) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (
            &b"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"[..],
            data,
        ),
    };
    let (Ok(name), Ok(text)) = (std::str::from_utf8(name), std::str::from_utf8(text)) else {
        return;
    };
    let _ = ww::net::bootstrap::parse(name, text);
});
