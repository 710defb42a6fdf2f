//! Inputs shared by Postern's benchmarks.
//!
//! The criterion benches (`benches/benches/*.rs`) measure single parts on
//! inputs shaped like a large production installation; the generators
//! here build those inputs.

use std::fmt::Write as _;

/// A configuration with `bindings` bindings in two binding groups, and
/// `domains` top-level `Domain` stanzas, each with its own routes: the shape
/// of an email service provider's file.
pub fn generated_config(bindings: usize, domains: usize) -> String {
    let mut out = String::from(
        "# generated for benchmarks\n\
         Hostname = mta1.example.net\n\
         Routes = ( \"smtp://relay1.example.net?pref=10\" \"smtp://relay2.example.net?pref=10\" \"__mx__\" )\n\
         ESMTP_Listener {\n  Listen \"127.0.0.1:2525\" { }\n  Relay_Hosts = ( \"127.0.0.0/8\" \"::1\" )\n}\n",
    );
    for g in 0..2 {
        let _ = writeln!(
            out,
            "Binding_Group pool{g} {{\n  Max_Outbound_Connections = 64"
        );
        for b in (0..bindings).filter(|b| b % 2 == g) {
            let _ = writeln!(
                out,
                "  Binding b{b} {{\n    Bind_Address = 10.0.{}.{}\n    Domain gmail.com {{ Max_Outbound_Connections = 8 }}\n  }}",
                b / 250,
                b % 250 + 1
            );
        }
        out.push_str("}\n");
    }
    for d in 0..domains {
        let _ = writeln!(
            out,
            "Domain customer{d}.example.com {{\n  Routes = ( \"smtp://mx{d}.example.com:2525?pref=5&ttl=300\" \"__mx__\" ) /* own MX */\n  Retry_Interval = 10m\n}}"
        );
    }
    out
}
