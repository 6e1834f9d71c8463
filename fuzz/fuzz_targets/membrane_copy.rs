//! Fuzzes the membrane's copy of a call's message (`ww::rpc::membrane::copy_through`): the
//! bytes as a peer's Cap'n Proto message, read with the limits every connection reads
//! with, holding a table of capabilities (live, broken and null) that its capability
//! pointers may name, or name past.
//!
//! Besides not panicking, it checks what the membrane relies on: a copy that succeeds has
//! the message's shape (the same size in words), and every capability in it went through
//! the membrane's `pass` (none reached the copy unwrapped).
#![no_main]

use std::cell::Cell;

use capnp::traits::{Imbue, ImbueMut};
use libfuzzer_sys::fuzz_target;
use ww::rpc::membrane::copy_through;
use ww::rpc::server::reader_options;

fuzz_target!(|data: &[u8]| {
    let mut slice = data;
    let Ok(message) = capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options())
    else {
        return;
    };
    let Ok(mut root) = message.get_root::<capnp::any_pointer::Reader>() else {
        return;
    };
    let table: Vec<Option<Box<dyn capnp::private::capability::ClientHook>>> = vec![
        Some(capnp_rpc::new_broken_cap(capnp::Error::failed("a".into())).hook),
        None,
        Some(capnp_rpc::new_broken_cap(capnp::Error::disconnected("b".into())).hook),
    ];
    root.imbue(&table);
    let passed = Cell::new(0usize);
    let mut out = capnp::message::Builder::new_default();
    let mut caps = Vec::new();
    let copied = {
        let mut to: capnp::any_pointer::Builder = out.init_root();
        to.imbue_mut(&mut caps);
        copy_through(root, to, |cap| {
            passed.set(passed.get() + 1);
            drop(cap);
            capnp_rpc::new_broken_cap(capnp::Error::failed("passed".into())).hook
        })
    };
    if copied.is_ok() {
        let from = root.target_size().map(|s| s.word_count);
        let Ok(mut to) = out.get_root_as_reader::<capnp::any_pointer::Reader>() else {
            panic!("a successful copy is unreadable");
        };
        to.imbue(&caps);
        if let Ok(from) = from {
            let to = to.target_size().map(|s| s.word_count).unwrap_or(u64::MAX);
            assert_eq!(from, to, "the copy changed the message's size");
        }
        let live = caps.iter().filter(|c| c.is_some()).count();
        assert!(live <= passed.get(), "a capability was copied without passing the membrane");
    }
});
