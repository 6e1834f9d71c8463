//! Raw Cap'n Proto RPC frames, for clients a capnp-rpc client would never be: ones that
//! never read what comes back, or send what no capnp-rpc writes (aliasing pointers).

use capnp_rpc::rpc_capnp::{message, payload};

/// A one-segment frame of one RPC message, with room for `words` words.
pub(crate) fn rpc(words: u32, build: impl FnOnce(message::Builder<'_>)) -> Vec<u8> {
    let allocator = capnp::message::HeapAllocator::new().first_segment_words(words);
    let mut message = capnp::message::Builder::new(allocator);
    build(message.init_root());
    assert_eq!(message.get_segments_for_output().len(), 1, "one segment");
    capnp::serialize::write_message_to_words(&message)
}

pub(crate) fn bootstrap(question: u32) -> Vec<u8> {
    rpc(64, |m| m.init_bootstrap().set_question_id(question))
}

/// A call of `method` of `interface` on the capability at `path` (pointer fields) in the
/// answer to `on`, its payload (content and cap table) filled by `payload`.
pub(crate) fn call(
    question: u32,
    on: u32,
    path: &[u16],
    (interface, method): (u64, u16),
    words: u32,
    fill: impl FnOnce(payload::Builder<'_>),
) -> Vec<u8> {
    rpc(words, |m| {
        let mut call = m.init_call();
        call.set_question_id(question);
        call.set_interface_id(interface);
        call.set_method_id(method);
        let mut target = call.reborrow().init_target().init_promised_answer();
        target.set_question_id(on);
        let mut transform = target.init_transform(path.len() as u32);
        for (i, field) in path.iter().enumerate() {
            transform
                .reborrow()
                .get(i as u32)
                .set_get_pointer_field(*field);
        }
        fill(call.init_params());
    })
}

/// Parameters that are a `List(Data)` of `n` elements all pointing at one blob of
/// `blob` bytes: about `blob + 8 n` bytes on the wire, `n * blob` bytes to anyone who
/// copies them (pointers that alias are not valid Cap'n Proto, and no reader detects
/// them; only the traversal limit bounds what they amount to).
pub(crate) fn aliased(
    question: u32,
    on: u32,
    path: &[u16],
    method: (u64, u16),
    n: u32,
    blob: usize,
) -> Vec<u8> {
    const MAGIC: u8 = 0xa5;
    let words = (blob / 8) as u32 + n + 256;
    let mut frame = call(question, on, path, method, words, |payload| {
        let mut list = payload
            .init_content()
            .initn_as::<capnp::data_list::Builder<'_>>(n);
        list.set(0, &vec![MAGIC; blob]);
    });
    // The segment follows the 8-byte segment table; the blob follows the list's `n`
    // pointers, of which only the first is set.
    let word = |frame: &[u8], i: usize| {
        u64::from_le_bytes(frame[8 + 8 * i..16 + 8 * i].try_into().unwrap())
    };
    let at = (0..(frame.len() - 8) / 8)
        .find(|&i| word(&frame, i) == u64::from_le_bytes([MAGIC; 8]))
        .expect("the blob");
    let first = at - n as usize;
    let pointer = word(&frame, first);
    assert_eq!(pointer & 3, 1, "a list pointer");
    assert_eq!((pointer as u32 as i32) >> 2, n as i32 - 1, "to the blob");
    for i in 1..n as usize {
        assert_eq!(word(&frame, first + i), 0, "an unset element");
        let offset = (n as u64 - 1 - i as u64) << 2 | 1;
        let aliased = (pointer & !0xffff_ffff) | offset;
        frame[8 + 8 * (first + i)..16 + 8 * (first + i)].copy_from_slice(&aliased.to_le_bytes());
    }
    frame
}
