//! Typed option values and how each kind is read from its text.
//!
//! Every [`Value`] prints back as valid configuration syntax, so the
//! effective configuration can be shown exactly as it would be written
//! (with passwords masked).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;

use crate::keywords::{
    AuthMech, DeliveryMethod, DomainVerification, OnFailure, RecipientVerification, SpamAction,
    TlsMode, TlsVerify,
};
use crate::route::{RouteItem, Target};

mod parse;

pub(crate) use self::parse::{ErrorAt, parse_default, parse_value, socket_addr};

/// The type of an option, which decides how its text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    Bool,
    /// A whole number, zero or more.
    Count,
    /// A whole number, one or more.
    PositiveCount,
    /// A TCP port, 1 to 65535.
    Port,
    /// A duration in seconds; `s`, `m`, `h`, `d` suffixes are accepted.
    Seconds,
    /// A size in bytes; `k`, `m`, `g` suffixes (1024-based) are accepted.
    Size,
    /// Free text.
    Text,
    /// A DNS host name.
    HostName,
    /// A binding name.
    BindingName,
    /// A password: stored as given, never printed.
    Secret,
    /// A file system path, relative to the directory of the file that sets it.
    Path,
    /// `-` (standard output) or a file path.
    LogTarget,
    /// An IP address.
    Ip,
    /// `address:port`, IPv6 in brackets.
    SocketAddr,
    /// A list of `address:port`.
    SocketAddrs,
    /// A list of addresses or CIDR blocks (IPv6 without brackets).
    Cidrs,
    /// A list of domain names.
    Domains,
    /// A list of header field names.
    HeaderNames,
    /// A `Gateway` target.
    Gateway,
    /// A `Routes` list.
    Routes,
    /// `ESMTP`, `SMTP` or `LMTP`.
    DeliveryMethod,
    /// `no`, `ifavailable` or `required`.
    Tls,
    /// `no`, `ca` or `host`.
    TlsVerify,
    /// `PLAIN` or `LOGIN`.
    AuthMech,
    /// `"N"` per second or `"N/S"` per S seconds; 0 is unlimited.
    Throttle,
    /// `auto` or a number.
    MaxRetries,
    /// `none` or `callout`.
    RecipientVerification,
    /// `tempfail` or `accept`.
    OnFailure,
    /// `deliver`, `header`, `prefix`, `quarantine` or `refuse`.
    SpamAction,
    /// `specified` or `all_but_specified`.
    DomainVerification,
    /// A spam score: a decimal number, two places kept.
    Score,
    /// A list of stanza names (`Milter` stanzas).
    Names,
    /// A reply class name.
    ReplyClass,
    /// `default`, `backoff`, `suspend` or `bounce`.
    RuleAction,
    /// A reply code pattern.
    ReplyCode,
    /// A regular expression.
    Regex,
}

impl Kind {
    /// True for kinds written as a list `( ... )` (a single value is a
    /// one-item list).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Kind::SocketAddrs
                | Kind::Cidrs
                | Kind::Domains
                | Kind::HeaderNames
                | Kind::Routes
                | Kind::Names
        )
    }

    /// How the kind is described in the reference and in errors.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Bool => "boolean (true/false, yes/no, on/off)",
            Kind::Count => "whole number",
            Kind::PositiveCount => "whole number, 1 or more",
            Kind::Port => "port (1-65535)",
            Kind::Seconds => "seconds (suffixes s, m, h, d accepted)",
            Kind::Size => "bytes (suffixes k, m, g accepted, 1024-based)",
            Kind::Text => "text",
            Kind::HostName => "host name",
            Kind::BindingName => "binding name",
            Kind::Secret => "text (secret, never printed)",
            Kind::Path => "path (relative to the file that sets it)",
            Kind::LogTarget => "\"-\" (standard output) or path",
            Kind::Ip => "IP address",
            Kind::SocketAddr => "address:port ([v6]:port)",
            Kind::SocketAddrs => "list of address:port",
            Kind::Cidrs => "list of addresses or CIDR blocks",
            Kind::Domains => "list of domain names",
            Kind::HeaderNames => "list of header field names",
            Kind::Gateway => "host, host:port, IP, [v6]:port",
            Kind::Routes => "list of route items",
            Kind::DeliveryMethod => "ESMTP | SMTP | LMTP",
            Kind::Tls => "no | ifavailable | required",
            Kind::TlsVerify => "no | ca | host",
            Kind::AuthMech => "PLAIN | LOGIN",
            Kind::Throttle => "\"N\" per second or \"N/S\" per S seconds (0: unlimited)",
            Kind::MaxRetries => "auto | whole number",
            Kind::RecipientVerification => "none | callout",
            Kind::OnFailure => "tempfail | accept",
            Kind::SpamAction => "deliver | header | prefix | quarantine | refuse",
            Kind::DomainVerification => "specified | all_but_specified",
            Kind::Score => "decimal number (7.5)",
            Kind::Names => "list of stanza names",
            Kind::ReplyClass => "reply class name",
            Kind::RuleAction => "default | backoff | suspend | bounce",
            Kind::ReplyCode => "code (421, 4xx) or enhanced status (4.7.28, 5.7.*)",
            Kind::Regex => "regular expression, /.../ or plain",
        }
    }
}

/// A spam score as written (`7.5`, `-1`, `10`), kept to two decimal
/// places so that values compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Score(i64);

impl Score {
    /// The score as a number.
    #[allow(clippy::cast_precision_loss)]
    pub fn get(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl FromStr for Score {
    type Err = String;

    #[allow(clippy::cast_possible_truncation)]
    fn from_str(s: &str) -> Result<Score, String> {
        let n: f64 = s
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && n.abs() < 1e9)
            .ok_or_else(|| format!("{s:?} is not a score (a decimal number such as 7.5)"))?;
        Ok(Score((n * 100.0).round() as i64))
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, cents) = (self.0 / 100, (self.0 % 100).abs());
        let sign = if self.0 < 0 && whole == 0 { "-" } else { "" };
        match cents {
            0 => write!(f, "{sign}{whole}"),
            c if c % 10 == 0 => write!(f, "{sign}{whole}.{}", c / 10),
            c => write!(f, "{sign}{whole}.{c:02}"),
        }
    }
}

/// `Outbound_Throttle_*`: at most `count` per `per_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Throttle {
    /// How many in each period; 0 means unlimited.
    pub count: u32,
    /// The period in seconds (1 or more).
    pub per_secs: u32,
}

impl Throttle {
    /// True when the throttle limits nothing.
    pub fn is_unlimited(self) -> bool {
        self.count == 0
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.per_secs == 1 {
            write!(f, "{}", self.count)
        } else {
            write!(f, "{}/{}", self.count, self.per_secs)
        }
    }
}

/// `Max_Retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxRetries {
    /// Limited by `Message_Expiration` only.
    Auto,
    /// At most this many retries.
    Limit(u32),
}

/// `Log_File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `-`: standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// A typed option value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// Kind::Bool.
    Bool(bool),
    /// Kind::Count and Kind::PositiveCount.
    Count(u64),
    /// Kind::Port.
    Port(u16),
    /// Kind::Seconds.
    Seconds(u64),
    /// Kind::Size.
    Size(u64),
    /// Kind::Text, Kind::HostName, Kind::BindingName.
    Text(String),
    /// Kind::Secret; printed masked.
    Secret(String),
    /// Kind::Path, resolved against the setting file's directory.
    Path(PathBuf),
    /// Kind::LogTarget.
    Log(LogTarget),
    /// Kind::Ip.
    Ip(IpAddr),
    /// Kind::SocketAddr.
    SocketAddr(SocketAddr),
    /// Kind::SocketAddrs.
    SocketAddrs(Vec<SocketAddr>),
    /// Kind::Cidrs.
    Cidrs(Vec<IpNet>),
    /// Kind::Domains (lower-cased).
    Domains(Vec<String>),
    /// Kind::HeaderNames, as written.
    HeaderNames(Vec<String>),
    /// Kind::Gateway.
    Gateway(Target),
    /// Kind::Routes.
    Routes(Vec<RouteItem>),
    /// Kind::DeliveryMethod.
    DeliveryMethod(DeliveryMethod),
    /// Kind::Tls.
    Tls(TlsMode),
    /// Kind::TlsVerify.
    TlsVerify(TlsVerify),
    /// Kind::AuthMech.
    AuthMech(AuthMech),
    /// Kind::Throttle.
    Throttle(Throttle),
    /// Kind::MaxRetries.
    MaxRetries(MaxRetries),
    /// Kind::RecipientVerification.
    RecipientVerification(RecipientVerification),
    /// Kind::OnFailure.
    OnFailure(OnFailure),
    /// Kind::SpamAction.
    SpamAction(SpamAction),
    /// Kind::DomainVerification.
    DomainVerification(DomainVerification),
    /// Kind::Score.
    Score(Score),
    /// Kind::Names.
    Names(Vec<String>),
    /// Kind::ReplyClass.
    ReplyClass(crate::reply_rule::ReplyClass),
    /// Kind::RuleAction.
    RuleAction(crate::reply_rule::RuleAction),
    /// Kind::ReplyCode.
    ReplyCode(crate::reply_rule::CodePattern),
    /// Kind::Regex: the expression (without slashes), known to compile.
    Regex(String),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({self})")
    }
}

fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("(")?;
    for i in items {
        f.write_str(" ")?;
        quoted(f, &i.to_string())?;
    }
    f.write_str(" )")
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Count(n) | Value::Seconds(n) | Value::Size(n) => write!(f, "{n}"),
            Value::Port(p) => write!(f, "{p}"),
            Value::Text(s) => quoted(f, s),
            Value::Secret(_) => f.write_str("\"********\""),
            Value::Path(p) => quoted(f, &p.display().to_string()),
            Value::Log(LogTarget::Stdout) => f.write_str("\"-\""),
            Value::Log(LogTarget::File(p)) => quoted(f, &p.display().to_string()),
            Value::Ip(a) => quoted(f, &a.to_string()),
            Value::SocketAddr(a) => quoted(f, &a.to_string()),
            Value::SocketAddrs(l) => list(f, l),
            Value::Cidrs(l) => list(f, l),
            Value::Domains(l) | Value::HeaderNames(l) | Value::Names(l) => list(f, l),
            Value::Gateway(t) => quoted(f, &t.to_string()),
            Value::Routes(l) => list(f, l),
            Value::DeliveryMethod(m) => write!(f, "{m}"),
            Value::Tls(t) => write!(f, "{t}"),
            Value::TlsVerify(v) => write!(f, "{v}"),
            Value::AuthMech(m) => write!(f, "{m}"),
            Value::Throttle(t) => quoted(f, &t.to_string()),
            Value::MaxRetries(MaxRetries::Auto) => f.write_str("auto"),
            Value::MaxRetries(MaxRetries::Limit(n)) => write!(f, "{n}"),
            Value::RecipientVerification(r) => write!(f, "{r}"),
            Value::OnFailure(x) => write!(f, "{x}"),
            Value::SpamAction(x) => write!(f, "{x}"),
            Value::DomainVerification(x) => write!(f, "{x}"),
            Value::Score(x) => write!(f, "{x}"),
            Value::ReplyClass(c) => write!(f, "{c}"),
            Value::RuleAction(a) => write!(f, "{a}"),
            Value::ReplyCode(c) => quoted(f, &c.to_string()),
            Value::Regex(r) => quoted(f, &format!("/{r}/")),
        }
    }
}
