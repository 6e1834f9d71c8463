//! Fuzzes the reading of an identity key file's bytes (`ww::net::identity::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keypair) = ww::net::identity::parse(data) {
        // What ww does next with a key: derive the peer id.
        let _ = keypair.public().to_peer_id();
    }
});
