//! Any bytes as a fetched MTA-STS policy file or `_mta-sts` TXT record:
//! the parsers never panic, a policy that parses keeps its bounds, and a
//! pattern it names matches itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_dns::mta_sts::{MAX_AGE_LIMIT, Policy, StsMode, txt_id};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = txt_id(&[text.to_string()]);
    if let Ok(policy) = Policy::parse(&text) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        assert!(policy.mode == StsMode::None || !policy.mx.is_empty());
        for pattern in policy.mx.iter().filter(|p| !p.starts_with("*.")) {
            assert!(policy.names(pattern), "{pattern} does not name itself");
        }
    }
});
