//! Any bytes: the config parser and loader never panic, and a file that
//! parses prints back to text that parses to the same tree.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use postern_conf::{Config, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_text(text, Path::new("/nonexistent/fuzz.conf"));
    if let Ok(doc) = parse(text) {
        let printed = doc.to_string();
        let again = parse(&printed).expect("printed text parses");
        assert_eq!(again.to_string(), printed, "print -> parse -> print changed");
    }
});
