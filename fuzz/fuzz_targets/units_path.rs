//! Fuzzes the small text grammars: sizes and durations (`ww::units`) and IPFS paths
//! (`ww::ipfs::IpfsPath::parse`); a parsed path must read back
//! from its `Display`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ww::units::parse_size(text);
    let _ = ww::units::parse_duration(text);
    if let Some(path) = ww::ipfs::IpfsPath::parse(text) {
        // ww prints and requests paths by their `Display`: it must name the same path.
        let shown = path.to_string();
        assert_eq!(
            ww::ipfs::IpfsPath::parse(&shown).as_ref(),
            Some(&path),
            "{text:?} displays as {shown:?}"
        );
    }
});
