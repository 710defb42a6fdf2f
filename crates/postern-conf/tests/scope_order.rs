//! The 7-level scope order of CONFIG.md, with a binding inside a binding
//! group, top-level and nested Domain stanzas, and regex domains.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use postern_conf::{Config, Directive, Origin, Routing, SCOPE_ORDER, Value};

fn load(text: &str) -> Config {
    Config::from_text(text, Path::new("test.conf")).unwrap_or_else(|e| panic!("{e}"))
}

/// Seven options; option k is set at levels k..=7 with the value k, so the
/// option k must come from level k.
const OPTS: [&str; 7] = [
    "Retry_Interval",
    "Max_Retry_Interval",
    "Message_Expiration",
    "Idle_Timeout",
    "Connect_Timeout",
    "EHLO_Timeout",
    "Data_Timeout",
];

fn set_from(level: usize) -> String {
    OPTS.iter()
        .take(level)
        .map(|o| format!("{o} = {level}\n"))
        .collect()
}

fn seven_levels() -> String {
    format!(
        "{global}\
         Binding_Group g {{\n{group}\
           Binding b {{\n    Domain example.com {{\n{l1}    }}\n  }}\n\
           Domain example.com {{\n{l3}  }}\n\
         }}\n\
         Binding b {{\n{l4}  Domain example.com {{\n{l2}  }}\n}}\n\
         Domain example.com {{\n{l6}}}\n",
        l1 = set_from(1),
        l2 = set_from(2),
        l3 = set_from(3),
        l4 = set_from(4),
        group = set_from(5),
        l6 = set_from(6),
        global = set_from(7),
    )
}

#[test]
fn each_level_wins_over_the_ones_after_it() {
    let config = load(&seven_levels());
    let eff = config.effective("b", "Example.COM.").unwrap();
    for (k, name) in OPTS.iter().enumerate() {
        let d = Directive::from_name(name).unwrap();
        let r = eff.get(d).unwrap();
        assert_eq!(r.value, &Value::Seconds(k as u64 + 1), "{name}");
        match r.origin {
            Origin::Set { level, .. } => assert_eq!(level, SCOPE_ORDER[k], "{name}"),
            Origin::Default => panic!("{name} came from the default"),
        }
    }
}

#[test]
fn origins_name_the_scope_and_the_place() {
    let config = load(&seven_levels());
    let eff = config.effective("b", "example.com").unwrap();
    let origin = eff
        .get(Directive::RetryInterval)
        .unwrap()
        .origin
        .to_string();
    assert_eq!(
        origin,
        "Domain \"example.com\" in Binding \"b\" in Binding_Group \"g\" (test.conf:16:1)"
    );
    let origin = eff
        .get(Directive::MaxRetryInterval)
        .unwrap()
        .origin
        .to_string();
    assert!(
        origin.starts_with("Domain \"example.com\" in Binding \"b\" ("),
        "{origin}"
    );
}

#[test]
fn other_domains_and_bindings_skip_the_domain_levels() {
    let config = load(&seven_levels());
    let eff = config.effective("b", "example.org").unwrap();
    // Retry_Interval is set at every level; without Domain stanzas for
    // example.org the binding (level 4) is the most specific.
    let r = eff.get(Directive::RetryInterval).unwrap();
    assert_eq!(r.value, &Value::Seconds(4));
    let eff = config.effective("default", "example.com").unwrap();
    let r = eff.get(Directive::RetryInterval).unwrap();
    assert_eq!(
        r.value,
        &Value::Seconds(6),
        "top-level Domain for the default binding"
    );
    let r = eff.get(Directive::DataTimeout).unwrap();
    assert_eq!(r.value, &Value::Seconds(7));
    assert!(config.effective("nope", "example.com").is_none());
}

#[test]
fn unset_options_fall_back_to_the_table_default() {
    let config = load("");
    let eff = config.effective("default", "example.com").unwrap();
    let r = eff.get(Directive::MaxOutboundConnections).unwrap();
    assert_eq!((r.value, &r.origin), (&Value::Count(32), &Origin::Default));
    assert!(eff.get(Directive::BindAddress).is_none());
    assert!(matches!(eff.routing(), Routing::Mx));
}

#[test]
fn exact_names_beat_regexes_and_regexes_go_in_file_order() {
    let config = load(
        r"
        Domain /example\.(com|net)$/ { Max_Outbound_Connections = 1 }
        Domain /\.net$/ { Max_Outbound_Connections = 2 }
        Domain example.com { Max_Outbound_Connections = 3 }
        Domain /^ANY\./ { Max_Outbound_Connections = 4 }
        ",
    );
    let count = |domain: &str| {
        let eff = config.effective("default", domain).unwrap();
        eff.get(Directive::MaxOutboundConnections)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(count("example.com"), Value::Count(3));
    assert_eq!(count("example.net"), Value::Count(1));
    assert_eq!(count("other.net"), Value::Count(2));
    assert_eq!(
        count("any.example.org"),
        Value::Count(4),
        "case-insensitive"
    );
    assert_eq!(count("example.org"), Value::Count(32));
}

#[test]
fn regex_domains_work_inside_bindings_and_groups() {
    let config = load(
        r"
        Binding_Group g {
          Domain /^mx\./ { Retry_Interval = 11 }
          Binding b { Domain /\.test$/ { Retry_Interval = 12 } }
        }
        ",
    );
    let ri = |b: &str, d: &str| {
        config
            .effective(b, d)
            .unwrap()
            .get(Directive::RetryInterval)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(ri("b", "mx.example.test"), Value::Seconds(12));
    assert_eq!(ri("b", "mx.example.org"), Value::Seconds(11));
    assert_eq!(ri("default", "mx.example.org"), Value::Seconds(1200));
}

#[test]
fn the_most_specific_scope_with_gateway_or_routes_decides_routing() {
    let config = load(
        r#"
        Gateway = 10.10.10.50
        Domain local.example.com {
          Gateway = 10.10.10.20
          Delivery_Method = LMTP
        }
        Binding b1 { Gateway = "relay.example.net:2525" }
        Domain lb.example.com {
          Routes = ( "smtp://10.0.11.7?pref=10" "smtp://10.0.11.8?pref=10" )
        }
        "#,
    );
    let route = |b: &str, d: &str| match config.effective(b, d).unwrap().routing() {
        Routing::Gateway(t, o) => format!("gateway {t} from {o}"),
        Routing::Routes(r, o) => format!("{} routes from {o}", r.len()),
        Routing::Mx => "mx".into(),
    };
    assert_eq!(
        route("default", "example.org"),
        "gateway 10.10.10.50 from global (test.conf:2:9)"
    );
    assert!(route("default", "local.example.com").starts_with("gateway 10.10.10.20 from Domain"));
    assert!(route("default", "lb.example.com").starts_with("2 routes from Domain"));
    // The binding (level 4) is more specific than a top-level Domain (6).
    assert!(
        route("b1", "lb.example.com").starts_with("gateway relay.example.net:2525 from Binding")
    );
    assert_eq!(
        config
            .effective("default", "local.example.com")
            .unwrap()
            .get(Directive::DeliveryMethod)
            .unwrap()
            .value
            .to_string(),
        "LMTP"
    );
}

#[test]
fn host_stanzas_apply_whole_from_the_most_specific_scope() {
    let config = load(
        r#"
        Host mx1.example.com { Max_Outbound_Connections = 10 }
        Host "[::1]" { Max_Outbound_Connections = 3 }
        Binding_Group g {
          Host mx1.example.com { }
          Binding b { }
        }
        Binding c { Host MX1.example.com. { Max_Outbound_Connections = 2 } }
        "#,
    );
    let limit = |b: &str, h: &str| {
        config.host(b, h).map(|s| {
            s.options
                .get(Directive::MaxOutboundConnections)
                .map(|s| s.value.clone())
        })
    };
    assert_eq!(
        limit("default", "mx1.example.com"),
        Some(Some(Value::Count(10)))
    );
    assert_eq!(limit("c", "mx1.example.com"), Some(Some(Value::Count(2))));
    // The group's empty Host stanza applies whole: it does not inherit 10.
    assert_eq!(limit("b", "mx1.example.com"), Some(None));
    assert_eq!(limit("default", "::1"), Some(Some(Value::Count(3))));
    assert_eq!(limit("default", "mx2.example.com"), None);
}

#[test]
fn repeated_stanzas_merge() {
    let config = load(
        "Domain a.example { Retry_Interval = 5 }\nDomain A.EXAMPLE { Idle_Timeout = 6 }\n\
         binding_group g { binding b { } }\nBINDING b { Idle_Timeout = 7 }\n",
    );
    let eff = config.effective("b", "a.example").unwrap();
    assert_eq!(
        eff.get(Directive::RetryInterval).unwrap().value,
        &Value::Seconds(5)
    );
    assert_eq!(
        eff.get(Directive::IdleTimeout).unwrap().value,
        &Value::Seconds(7)
    );
    assert_eq!(config.bindings["b"].group.as_deref(), Some("g"));
}
