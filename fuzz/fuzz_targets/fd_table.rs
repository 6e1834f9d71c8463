//! Fuzzes the S-expression fd table (`ww::fds::table::parse`, what `--fd-from` reads). A
//! parsed table must render, in both shapes, back to equal specs, as `table::render` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww::fds::spec::FdSpec;
use ww::fds::table::{self, Shape};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = table::parse("fuzz.fds", text) else {
        return;
    };
    let specs: Vec<FdSpec> = entries.into_iter().map(|e| e.spec).collect();
    for shape in [Shape::Keywords, Shape::Lists] {
        let rendered = table::render(&specs, shape);
        let again: Vec<FdSpec> = match table::parse("rendered.fds", &rendered) {
            Ok(entries) => entries.into_iter().map(|e| e.spec).collect(),
            Err(e) => panic!("{text:?} renders as {rendered:?}, which does not parse: {e}"),
        };
        assert_eq!(again, specs, "{text:?} renders as {rendered:?}");
    }
});
