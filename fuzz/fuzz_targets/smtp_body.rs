//! Any body: what the client's dot-stuffer sends, the server side's body
//! reader reads back as the body with CRLF line endings, and it ends
//! exactly at the final dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{BodyReader, dot_stuff};

/// CRLF line endings, as the stuffer writes them.
fn crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match (b, body.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            (b'\r' | b'\n', _) => out.extend_from_slice(b"\r\n"),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fuzz_target!(|body: &[u8]| {
    let mut wire = dot_stuff(body);
    wire.extend_from_slice(b"NEXT COMMAND\r\n");
    let mut reader = BodyReader::default();
    let mut got = Vec::new();
    let mut bytes = &wire[..];
    assert!(reader.read(&mut bytes, &mut got), "the final dot was found");
    assert_eq!(bytes, b"NEXT COMMAND\r\n");
    assert_eq!(got, crlf(body));
});
