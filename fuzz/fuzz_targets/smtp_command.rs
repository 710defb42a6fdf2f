//! Any bytes, split into command lines as the server session splits them:
//! parsing never panics, and every refusal is a 5xx reply with an
//! enhanced status code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::server::parse_command;

fuzz_target!(|data: &[u8]| {
    for line in data.split_inclusive(|b| *b == b'\n') {
        if let Err(reply) = parse_command(line) {
            assert!((500..600).contains(&reply.code), "{reply}");
            assert!(reply.status.is_some(), "{reply}");
        }
    }
});
