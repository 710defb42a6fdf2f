//! `Gateway` targets and `Routes` items.
//!
//! A gateway is `host`, `host:port`, an IP literal, or `[v6]:port`. A route
//! item is a gateway-like host, the literal `__mx__`, or a URL
//! `smtp://HOST[:PORT]?pref=P&ttl=T&port=O&type=mx|a` with Postern's schemes
//! `smtps://` and `lmtp://` and parameters `tls`, `tls_verify`, `auth` and
//! `status`. Parsing checks everything that can be checked without DNS.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::keywords::{TlsMode, TlsVerify, parse_keyword};

/// A destination host: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostSpec {
    /// A DNS name, lower-cased, without a trailing dot.
    Name(String),
    /// An IP address literal, used as is.
    Ip(IpAddr),
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostSpec::Name(n) => f.write_str(n),
            HostSpec::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            HostSpec::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
        }
    }
}

/// A host and the port it names, if any (`Gateway`, or a plain `Routes` item).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Where to connect.
    pub host: HostSpec,
    /// The port written with it; `None` means the delivery method's default.
    pub port: Option<u16>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// The protocol of a route URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `smtp://`: SMTP (or ESMTP), STARTTLS per the TLS policy.
    Smtp,
    /// `smtps://`: TLS from the first byte (default port 465).
    Smtps,
    /// `lmtp://`: LMTP (default port `LMTP_Port`).
    Lmtp,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Smtp => "smtp",
            Scheme::Smtps => "smtps",
            Scheme::Lmtp => "lmtp",
        }
    }
}

/// How a route's host name is turned into addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// MX records first, then A/AAAA when there are none.
    Mx,
    /// A/AAAA records only.
    A,
}

/// One entry of a `Routes` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteItem {
    /// `__mx__`: the destination domain's own MX records.
    Mx,
    /// A host, plain or as a URL.
    Host(RouteHost),
}

/// A host entry of a `Routes` list with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHost {
    /// Protocol.
    pub scheme: Scheme,
    /// Host and port (`:O` in the authority or `port=O`).
    pub target: Target,
    /// `pref=P`; `None` places the item one level after the items before it.
    pub pref: Option<u32>,
    /// `ttl=T`: seconds before the entry is resolved again.
    pub ttl: Option<u32>,
    /// `type=mx|a`; `None` resolves like a gateway (MX, then A/AAAA).
    pub lookup: Option<Lookup>,
    /// `tls=`: overrides the scope's `TLS` for this route.
    pub tls: Option<TlsMode>,
    /// `tls_verify=`: overrides the scope's `TLS_Verify` for this route.
    pub tls_verify: Option<TlsVerify>,
    /// `auth=NAME`: credentials from `Auth NAME { }`.
    pub auth: Option<String>,
    /// `status=disabled`: kept in the file, never used.
    pub disabled: bool,
    /// `xclient=yes|no`: overrides the scope's `Outbound_XCLIENT`.
    pub xclient: Option<bool>,
    /// Written as a URL (printed back the same way).
    url: bool,
}

impl RouteHost {
    /// True when written as a URL (`smtp://...`), so its scheme was chosen;
    /// a plain host name takes the scope's `Delivery_Method`.
    pub fn is_url(&self) -> bool {
        self.url
    }

    /// A host entry with no parameters; `url` says how it prints back.
    fn plain(scheme: Scheme, target: Target, url: bool) -> Self {
        Self {
            scheme,
            target,
            pref: None,
            ttl: None,
            lookup: None,
            tls: None,
            tls_verify: None,
            auth: None,
            disabled: false,
            xclient: None,
            url,
        }
    }
}

impl fmt::Display for RouteItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = match self {
            RouteItem::Mx => return f.write_str("__mx__"),
            RouteItem::Host(h) => h,
        };
        if !h.url {
            return write!(f, "{}", h.target);
        }
        write!(f, "{}://{}", h.scheme.as_str(), h.target)?;
        let mut params = Vec::new();
        if let Some(p) = h.pref {
            params.push(format!("pref={p}"));
        }
        if let Some(t) = h.ttl {
            params.push(format!("ttl={t}"));
        }
        if let Some(l) = h.lookup {
            params.push(format!("type={}", if l == Lookup::Mx { "mx" } else { "a" }));
        }
        if let Some(t) = h.tls {
            params.push(format!("tls={t}"));
        }
        if let Some(v) = h.tls_verify {
            params.push(format!("tls_verify={v}"));
        }
        if let Some(a) = &h.auth {
            params.push(format!("auth={a}"));
        }
        if h.disabled {
            params.push("status=disabled".into());
        }
        if let Some(x) = h.xclient {
            params.push(format!("xclient={}", if x { "yes" } else { "no" }));
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

/// Checks a DNS host name (letters, digits, `-`, `_`; labels of 1 to 63;
/// at most 253 in all) and returns it lower-cased without a trailing dot.
pub(crate) fn parse_host_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.len() > 253 {
        return Err(format!("host name longer than 253 characters: {s:?}"));
    }
    for label in name.split('.') {
        let ok_chars = label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!("{s:?} is not a valid host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{s:?} is not a valid host name (a label starts or ends with \"-\")"
            ));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{s:?} is neither a valid IPv4 address nor a host name"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A host without a port: name, IPv4 literal, or bracketed IPv6 literal.
fn parse_host(s: &str) -> Result<HostSpec, String> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{s:?}: \"[\" without \"]\""))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| HostSpec::Ip(IpAddr::V6(a)))
            .map_err(|_| format!("{inner:?} is not a valid IPv6 address"));
    }
    if s.contains(':') {
        return Err(format!(
            "IPv6 addresses must be written in brackets: \"[{s}]\""
        ));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(HostSpec::Ip(ip));
    }
    parse_host_name(s).map(HostSpec::Name)
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port number (1 to 65535)")),
    }
}

/// `host`, `host:port`, `1.2.3.4`, `1.2.3.4:25`, `[v6]`, `[v6]:25`.
pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    let (host, port) = if s.starts_with('[') {
        match s.rfind("]:") {
            Some(i) => (s.get(..=i).unwrap_or(s), s.get(i + 2..)),
            None => (s, None),
        }
    } else if s.matches(':').count() == 1 {
        let mut it = s.splitn(2, ':');
        (it.next().unwrap_or(s), it.next())
    } else {
        (s, None)
    };
    Ok(Target {
        host: parse_host(host)?,
        port: port.map(parse_port).transpose()?,
    })
}

/// One `Routes` list item.
pub(crate) fn parse_route_item(s: &str) -> Result<RouteItem, String> {
    if s == "__mx__" {
        return Ok(RouteItem::Mx);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok(RouteItem::Host(RouteHost::plain(
            Scheme::Smtp,
            parse_target(s)?,
            false,
        )));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "smtp" => Scheme::Smtp,
        "smtps" => Scheme::Smtps,
        "lmtp" => Scheme::Lmtp,
        other => {
            return Err(format!(
                "unknown scheme \"{other}://\" (known: smtp, smtps, lmtp)"
            ));
        }
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('/') {
        return Err(format!("{s:?}: a route URL has no path"));
    }
    if authority == "__mx__" {
        return Err("\"__mx__\" is written alone, not inside a URL".into());
    }
    let mut host = RouteHost::plain(scheme, parse_target(authority)?, true);
    apply_query(&mut host, query)?;
    check_route(&host)?;
    Ok(RouteItem::Host(host))
}

fn apply_query(host: &mut RouteHost, query: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("route parameter {pair:?} has no \"=value\""))?;
        if seen.contains(&k) {
            return Err(format!("route parameter \"{k}\" given twice"));
        }
        seen.push(k);
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{k}={v}: expected a whole number"))
        };
        match k {
            "pref" => host.pref = Some(number(v)?),
            "ttl" => host.ttl = Some(number(v)?),
            "port" => {
                if host.target.port.is_some() {
                    return Err(
                        "the port is given both as \":PORT\" and as \"port=\"; give it once".into(),
                    );
                }
                host.target.port = Some(parse_port(v)?);
            }
            "type" => {
                host.lookup = Some(parse_keyword(v, &[("mx", Lookup::Mx), ("a", Lookup::A)])?);
            }
            "tls" => host.tls = Some(v.parse()?),
            "tls_verify" => host.tls_verify = Some(v.parse()?),
            "auth" => {
                if v.is_empty() {
                    return Err("auth= needs the name of an Auth stanza".into());
                }
                host.auth = Some(v.to_owned());
            }
            "status" => {
                host.disabled = parse_keyword(v, &[("enabled", false), ("disabled", true)])?;
            }
            "xclient" => {
                host.xclient = Some(parse_keyword(v, &[("yes", true), ("no", false)])?);
            }
            other => {
                return Err(format!(
                    "unknown route parameter \"{other}\" (known: pref, ttl, port, type, tls, tls_verify, auth, status, xclient)"
                ));
            }
        }
    }
    Ok(())
}

fn check_route(host: &RouteHost) -> Result<(), String> {
    if host.scheme == Scheme::Smtps && matches!(host.tls, Some(t) if t != TlsMode::Required) {
        return Err("smtps:// is TLS from the start; tls= may only be \"required\" there".into());
    }
    if host.lookup == Some(Lookup::Mx) && matches!(host.target.host, HostSpec::Ip(_)) {
        return Err("type=mx needs a host name, not an IP address".into());
    }
    Ok(())
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_target(s)
    }
}

impl FromStr for RouteItem {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_route_item(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(item: RouteItem) -> RouteHost {
        match item {
            RouteItem::Host(h) => h,
            RouteItem::Mx => panic!("expected a host"),
        }
    }

    #[test]
    fn gateway_forms() {
        let t = parse_target("10.0.0.1").unwrap();
        assert_eq!(t.host, HostSpec::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(t.port, None);
        let t = parse_target("Relay.Example.NET.:2525").unwrap();
        assert_eq!(t.host, HostSpec::Name("relay.example.net".into()));
        assert_eq!(t.port, Some(2525));
        let t = parse_target("[fe80::a00]:1").unwrap();
        assert_eq!(t.to_string(), "[fe80::a00]:1");
        assert_eq!(parse_target("[::1]").unwrap().port, None);
        assert!(parse_target("fe80::a00").unwrap_err().contains("brackets"));
        assert!(parse_target("10.0.0.256").is_err());
        assert!(parse_target("host:0").is_err());
        assert!(parse_target("host:99999").is_err());
        assert!(parse_target("bad_-.example").is_err());
        assert!(parse_target("-bad.example").is_err());
    }

    #[test]
    fn seed_route_items() {
        let h = host(parse_route_item("smtp://1.2.3.4?pref=10&ttl=300&type=a").unwrap());
        assert_eq!(
            (h.pref, h.ttl, h.lookup),
            (Some(10), Some(300), Some(Lookup::A))
        );
        assert_eq!(parse_route_item("__mx__").unwrap(), RouteItem::Mx);
        let h = host(parse_route_item("my.local.smart.host").unwrap());
        assert_eq!(h.pref, None);
        assert_eq!(h.scheme, Scheme::Smtp);
        let h = host(parse_route_item("smtp://my.local.smart.host?pref=1").unwrap());
        assert_eq!(h.pref, Some(1));
    }

    #[test]
    fn postern_extensions() {
        let h = host(
            parse_route_item("smtps://relay.example.net?auth=relay1&tls_verify=host").unwrap(),
        );
        assert_eq!(h.scheme, Scheme::Smtps);
        assert_eq!(h.auth.as_deref(), Some("relay1"));
        assert_eq!(h.tls_verify, Some(TlsVerify::Host));
        let h = host(parse_route_item("lmtp://[::1]:2601?status=disabled").unwrap());
        assert!(h.disabled);
        assert_eq!(h.target.port, Some(2601));
        let h = host(parse_route_item("smtp://10.0.0.1?port=2525&tls=required").unwrap());
        assert_eq!(h.target.port, Some(2525));
        assert_eq!(h.tls, Some(TlsMode::Required));
    }

    #[test]
    fn bad_route_urls_say_why() {
        let cases = [
            ("smtp://a:25?port=26", "both"),
            ("ftp://a", "unknown scheme"),
            ("smtp://a?pref=x", "whole number"),
            ("smtp://a?weight=3", "unknown route parameter"),
            ("smtp://a?pref=1&pref=2", "twice"),
            ("smtp://a?type=srv", "srv"),
            ("smtps://a?tls=no", "smtps"),
            ("smtp://1.2.3.4?type=mx", "type=mx"),
            ("smtp://a/path", "no path"),
            ("smtp://a?pref", "no \"=value\""),
            ("smtp://a?auth=", "Auth stanza"),
            ("smtp://a?tls=maybe", "maybe"),
        ];
        for (url, needle) in cases {
            let e = parse_route_item(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "__mx__",
            "relay.example.net:2525",
            "[::1]:2601",
            "smtp://10.0.11.7?pref=10",
            "smtps://relay.example.net:465?pref=5&ttl=60&type=a&tls=required&tls_verify=host&auth=r1&status=disabled&xclient=yes",
        ] {
            let item = parse_route_item(s).unwrap();
            assert_eq!(item.to_string(), s);
            assert_eq!(parse_route_item(&item.to_string()).unwrap(), item);
        }
    }
}
