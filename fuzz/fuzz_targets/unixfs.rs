//! Fuzzes CID verification and the dag-pb/UnixFS decoder (`ww::ipfs::unixfs`) on blocks as a
//! Kubo node would return them: any bytes, under a CID that names them (so decoding is
//! reached) or under a CID read from the input itself (so verification is exercised).
#![no_main]

use cid::Cid;
use cid::multihash::Multihash;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use ww::ipfs::unixfs::{self, DAG_PB, RAW};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        // The block's own CID: verification passes and the decoder sees every input.
        let codec = if selector & 2 == 0 { DAG_PB } else { RAW };
        let digest = Sha256::digest(rest);
        let hash = Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest fits");
        let cid = Cid::new_v1(codec, hash);
        unixfs::verify(&cid, rest).expect("a block verifies against its own CID");
        let _ = unixfs::decode(&cid, rest);
    } else {
        // A CID from the input, then a block: whatever verify says, decoding must not panic.
        let mut cursor = std::io::Cursor::new(rest);
        let Ok(cid) = Cid::read_bytes(&mut cursor) else {
            return;
        };
        let block = &rest[cursor.position() as usize..];
        let _ = unixfs::verify(&cid, block);
        let _ = unixfs::decode(&cid, block);
    }
});
