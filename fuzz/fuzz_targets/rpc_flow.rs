//! Fuzzes the flow-control framing every Cap'n Proto connection is read through
//! (`ww::rpc::flow`): `parse_header` on the bytes as they would arrive, one more at a time,
//! and `classify` on every whole frame; frames after frames, as a stream delivers them.
//!
//! Besides not panicking, it checks what the reader relies on: a header is refused, needs
//! more bytes, or is whole, and stays so as bytes are added; a whole one never exceeds the
//! limits it was parsed under; and the framing agrees with capnp's own reader, which must
//! accept the segment table of every frame flow control lets through.
#![no_main]

use capnp::Word;
use libfuzzer_sys::fuzz_target;
use ww::rpc::flow::{self, Header, MAX_HEADER_BYTES, MAX_SEGMENTS};
use ww::rpc::server::{MAX_MESSAGE_WORDS, reader_options};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while !input.is_empty() {
        let Some(total) = frame(input) else {
            return;
        };
        if total > input.len() {
            return;
        }
        let (whole, rest) = input.split_at(total);
        // capnp's own reader takes every segment table flow control lets through.
        let mut slice = whole;
        let read = capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options());
        assert!(read.is_ok(), "capnp refused a frame flow control took");
        assert!(slice.is_empty(), "capnp and flow control disagree on the frame's length");
        // The frame as the reader holds it: aligned words.
        let mut words = Word::allocate_zeroed_vec(total / 8);
        Word::words_to_bytes_mut(&mut words).copy_from_slice(whole);
        let _ = flow::classify(&words);
        input = rest;
    }
});

/// The size of the frame at the start of `input`, parsed as the reader does (one more byte
/// each time the table is not whole), or `None` if it is refused or `input` ends first.
fn frame(input: &[u8]) -> Option<usize> {
    let mut have = 0;
    let mut last_needed = 0;
    loop {
        match flow::parse_header(&input[..have], MAX_MESSAGE_WORDS) {
            Err(_) => {
                // A refusal is final: more bytes never make the table acceptable again.
                for more in have..input.len().min(MAX_HEADER_BYTES) {
                    assert!(flow::parse_header(&input[..=more], MAX_MESSAGE_WORDS).is_err());
                }
                return None;
            }
            Ok(Header::Incomplete { needed }) => {
                assert!(needed > have, "asks for bytes it has");
                assert!(needed <= MAX_HEADER_BYTES);
                assert!(needed >= last_needed, "needs fewer bytes than it said");
                last_needed = needed;
                if have == input.len() {
                    return None;
                }
                have += 1;
            }
            Ok(Header::Complete(header)) => {
                assert!(header.segments >= 1 && header.segments <= MAX_SEGMENTS);
                assert!(header.body_words <= MAX_MESSAGE_WORDS);
                assert_eq!(header.header_bytes % 8, 0);
                assert!(header.header_bytes <= have && header.header_bytes <= MAX_HEADER_BYTES);
                // The table alone, whole: it needs nothing past itself.
                assert_eq!(
                    flow::parse_header(&input[..header.header_bytes], MAX_MESSAGE_WORDS),
                    Ok(Header::Complete(header))
                );
                return Some(header.total_bytes());
            }
        }
    }
}
