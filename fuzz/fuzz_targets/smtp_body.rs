//! Any body: what the client's dot-stuffer sends, the server side's body
//! reader reads back with every line ending made CRLF and nothing else
//! changed, and it ends exactly at the final dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{BodyReader, dot_stuff};

/// Reads back what `dot_stuff` sends.
fn round_trip(body: &[u8]) -> Vec<u8> {
    let mut wire = dot_stuff(body);
    wire.extend_from_slice(b"NEXT COMMAND\r\n");
    let mut reader = BodyReader::default();
    let mut got = Vec::new();
    let mut bytes = &wire[..];
    assert!(reader.read(&mut bytes, &mut got), "the final dot was found");
    assert_eq!(bytes, b"NEXT COMMAND\r\n");
    got
}

fn text_only(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect()
}

fuzz_target!(|body: &[u8]| {
    let got = round_trip(body);
    // Every line ends in CRLF, and nothing but line endings changed.
    assert!(got.is_empty() || got.ends_with(b"\r\n"));
    for (i, b) in got.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(got.get(i + 1), Some(&b'\n')),
            b'\n' => assert_eq!(i.checked_sub(1).and_then(|p| got.get(p)), Some(&b'\r')),
            _ => {}
        }
    }
    assert_eq!(text_only(&got), text_only(body));
    // A body with CRLF line endings goes through unchanged.
    assert_eq!(round_trip(&got), got);
});
