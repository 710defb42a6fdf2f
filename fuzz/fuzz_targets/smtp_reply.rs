//! Any bytes, cut at any point: the reply parser never panics, never
//! loses its place, and a reply parsed from two pieces equals the one
//! parsed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{Capabilities, ReplyParser};

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, data) = input;
    let whole = {
        let mut parser = ReplyParser::default();
        let mut bytes = data;
        parser.parse(&mut bytes)
    };
    let cut = usize::from(cut) % (data.len() + 1);
    let (head, tail) = data.split_at(cut);
    let mut parser = ReplyParser::default();
    let mut bytes = head;
    let first = parser.parse(&mut bytes);
    let pieces = match first {
        Ok(None) => {
            let mut bytes = tail;
            parser.parse(&mut bytes)
        }
        other => other,
    };
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &pieces) {
        assert_eq!(a, b);
        let _ = Capabilities::from_ehlo(a);
        let mut wire = Vec::new();
        a.write_to(&mut wire);
    }
});
