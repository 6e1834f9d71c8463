//! Fuzzes Cap'n Proto frames as the RPC server reads them: one message read with
//! `capnp::serialize` under the server's limits (`ww::rpc::server::reader_options`), then
//! walked as capnp-rpc's `rpc_capnp::message` root, every field of every struct reached
//! (union members by their discriminant), as the server's RPC system would touch them.
#![no_main]

use capnp::dynamic_value;
use capnp::message::ReaderOptions;
use capnp_rpc::rpc_capnp;
use libfuzzer_sys::fuzz_target;

/// How deep the walk follows pointers before it stops: the reader's nesting limit ends it
/// first on any message the server would accept.
const MAX_DEPTH: usize = 128;

fuzz_target!(|data: &[u8]| {
    let options: ReaderOptions = ww::rpc::server::reader_options();
    let mut input = data;
    // One frame after another, as a stream delivers them, until the bytes run out or a frame
    // is refused (which ends the connection).
    while !input.is_empty() {
        if !fits(input) {
            return;
        }
        let Ok(message) = capnp::serialize::read_message(&mut input, options) else {
            return;
        };
        let Ok(root) = message.get_root::<rpc_capnp::message::Reader<'_>>() else {
            continue;
        };
        // The typed accessors the RPC system dispatches on first.
        if let Ok(which) = root.which() {
            touch_typed(which);
        }
        walk(root.into(), 0);
        let _ = root.total_size();
    }
});

/// Whether the frame at the start of `input` declares no more bytes than `input` holds. A
/// longer claim (within the server's limit) makes the reader allocate that much, zeroed, and
/// then wait for bytes that never come: a path the first runs cover at once, and one that
/// costs tens of MB per execution under ASan, starving the fuzzer. Segment tables the reader
/// refuses on their own (no segments, too many, cut short) are let through to it.
fn fits(input: &[u8]) -> bool {
    let word = |i: usize| {
        input
            .get(4 * i..4 * i + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let Some(first) = word(0) else {
        return true;
    };
    let segments = first + 1;
    if segments >= 512 {
        return true;
    }
    let mut words = 0u64;
    for i in 1..=segments {
        let Some(size) = word(i as usize) else {
            return true;
        };
        words += size;
    }
    let header = (4 * (1 + segments)).next_multiple_of(8);
    header + 8 * words <= input.len() as u64
}

/// The union's typed members, read the way capnp-rpc's `handle_message` reads them.
fn touch_typed(which: rpc_capnp::message::WhichReader<'_>) {
    use rpc_capnp::message::Which;
    match which {
        Which::Bootstrap(Ok(b)) => {
            let _ = b.get_question_id();
        }
        Which::Call(Ok(c)) => {
            let _ = (c.get_question_id(), c.get_interface_id(), c.get_method_id());
            if let Ok(p) = c.get_params() {
                let _ = p.get_content().target_size();
                if let Ok(caps) = p.get_cap_table() {
                    for cap in caps.iter() {
                        let _ = cap.which();
                    }
                }
            }
            if let Ok(t) = c.get_target() {
                let _ = t.which();
            }
            let _ = c.get_send_results_to().which();
        }
        Which::Return(Ok(r)) => {
            let _ = (r.get_answer_id(), r.get_release_param_caps());
            let _ = r.which();
        }
        Which::Abort(Ok(e)) => {
            let _ = e.get_reason().map(|r| r.to_str().map(str::len));
        }
        _ => {}
    }
}

/// Reads every field of `value`, following structs, lists and pointers.
fn walk(value: dynamic_value::Reader<'_>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        dynamic_value::Reader::Struct(s) => {
            let schema = s.get_schema();
            if let Ok(fields) = schema.get_non_union_fields() {
                for field in fields {
                    if let Ok(v) = s.get(field) {
                        walk(v, depth + 1);
                    }
                }
            }
            if let Ok(Some(field)) = s.which()
                && let Ok(v) = s.get(field)
            {
                walk(v, depth + 1);
            }
        }
        dynamic_value::Reader::List(l) => {
            for item in l.iter().flatten() {
                walk(item, depth + 1);
            }
        }
        dynamic_value::Reader::Text(t) => {
            let _ = t.to_str();
        }
        dynamic_value::Reader::Data(d) => {
            let _ = d.len();
        }
        dynamic_value::Reader::AnyPointer(p) => {
            // Call parameters and results: the interface's own struct, unknown here.
            let _ = p.target_size();
            let _ = p.get_as::<capnp::text::Reader<'_>>();
        }
        dynamic_value::Reader::Enum(e) => {
            let _ = e.get_enumerant();
        }
        _ => {}
    }
}
