//! How each kind of value is read from its text: one scalar, a list, or
//! a default written in the directive table.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{Kind, LogTarget, MaxRetries, Throttle, Value};
use crate::keywords::parse_keyword;
use crate::route::{parse_host_name, parse_route_item, parse_target};

fn number(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn with_suffix(s: &str, units: &[(char, u64)], what: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    for &(suffix, mult) in units {
        if let Some(n) = lower.strip_suffix(suffix) {
            return number(n)?
                .checked_mul(mult)
                .ok_or_else(|| format!("{s:?} is too large"));
        }
    }
    number(s).map_err(|_| format!("{s:?} is not {what}"))
}

fn boolean(s: &str) -> Result<bool, String> {
    parse_keyword(
        s,
        &[
            ("true", true),
            ("false", false),
            ("yes", true),
            ("no", false),
            ("on", true),
            ("off", false),
            ("1", true),
            ("0", false),
        ],
    )
}

fn throttle(s: &str) -> Result<Throttle, String> {
    let (n, per) = s.split_once('/').unwrap_or((s, "1"));
    let count = u32::try_from(number(n)?).map_err(|_| format!("{n:?} is too large"))?;
    let per_secs = u32::try_from(number(per)?).map_err(|_| format!("{per:?} is too large"))?;
    if per_secs == 0 {
        return Err("the period after \"/\" must be 1 second or more".into());
    }
    Ok(Throttle { count, per_secs })
}

fn cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
}

/// `address:port`; IPv6 must be bracketed.
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not address:port (IPv6 in brackets: \"[::1]:25\")"))
}

fn resolve_path(s: &str, dir: &Path) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(dir.join(s))
}

/// Reads one scalar of `kind`. `dir` is the directory relative paths are
/// resolved against.
fn scalar(kind: Kind, s: &str, dir: &Path) -> Result<Value, String> {
    Ok(match kind {
        Kind::Bool => Value::Bool(boolean(s)?),
        Kind::Count => Value::Count(number(s)?),
        Kind::PositiveCount => match number(s)? {
            0 => return Err("must be 1 or more".into()),
            n => Value::Count(n),
        },
        Kind::Port => Value::Port(
            u16::try_from(number(s)?)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?} is not a port number (1 to 65535)"))?,
        ),
        Kind::Seconds => Value::Seconds(with_suffix(
            s,
            &[('s', 1), ('m', 60), ('h', 3600), ('d', 86400)],
            "a number of seconds",
        )?),
        Kind::Size => Value::Size(with_suffix(
            s,
            &[('k', 1 << 10), ('m', 1 << 20), ('g', 1 << 30)],
            "a size in bytes",
        )?),
        Kind::Text => Value::Text(s.to_owned()),
        Kind::HostName => Value::Text(parse_host_name(s)?),
        Kind::BindingName if s.is_empty() => return Err("empty binding name".into()),
        Kind::BindingName => Value::Text(s.to_owned()),
        Kind::Secret => Value::Secret(s.to_owned()),
        Kind::Path => Value::Path(resolve_path(s, dir)?),
        Kind::LogTarget if s == "-" => Value::Log(LogTarget::Stdout),
        Kind::LogTarget => Value::Log(LogTarget::File(resolve_path(s, dir)?)),
        Kind::Ip => Value::Ip(
            s.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{s:?} is not an IP address"))?,
        ),
        Kind::SocketAddr => Value::SocketAddr(socket_addr(s)?),
        Kind::Gateway => Value::Gateway(parse_target(s)?),
        Kind::DeliveryMethod => Value::DeliveryMethod(s.parse()?),
        Kind::Tls => Value::Tls(s.parse()?),
        Kind::TlsVerify => Value::TlsVerify(s.parse()?),
        Kind::AuthMech => Value::AuthMech(s.parse()?),
        Kind::Throttle => Value::Throttle(throttle(s)?),
        Kind::MaxRetries if s.eq_ignore_ascii_case("auto") => Value::MaxRetries(MaxRetries::Auto),
        Kind::MaxRetries => Value::MaxRetries(MaxRetries::Limit(
            u32::try_from(number(s)?).map_err(|_| format!("{s:?} is too large"))?,
        )),
        Kind::RecipientVerification => Value::RecipientVerification(s.parse()?),
        Kind::OnFailure => Value::OnFailure(s.parse()?),
        Kind::SpamAction => Value::SpamAction(s.parse()?),
        Kind::DomainVerification => Value::DomainVerification(s.parse()?),
        Kind::Score => Value::Score(s.parse()?),
        Kind::ReplyClass => Value::ReplyClass(s.parse()?),
        Kind::RuleAction => Value::RuleAction(s.parse()?),
        Kind::ReplyCode => Value::ReplyCode(s.parse()?),
        Kind::Regex => Value::Regex(regex(s)?),
        Kind::SocketAddrs
        | Kind::Cidrs
        | Kind::Domains
        | Kind::HeaderNames
        | Kind::Routes
        | Kind::Names => {
            return list_of(kind, &[s]).map_err(|(_, e)| e);
        }
    })
}

/// A regular expression, `/.../` or plain: the expression, once it is
/// known to compile.
fn regex(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or(s);
    regex::RegexBuilder::new(inner)
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("bad regular expression: {e}"))?;
    Ok(inner.to_owned())
}

/// A header field name (RFC 5322 3.6.8: printable ASCII but `:`).
fn header_name(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("{s:?} is not a header field name"));
    }
    Ok(s.to_owned())
}

/// Reads a list kind; on error, also says which item (by index) was wrong.
fn list_of(kind: Kind, items: &[&str]) -> Result<Value, (usize, String)> {
    fn each<T>(
        items: &[&str],
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, (usize, String)> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| f(s).map_err(|e| (i, e)))
            .collect()
    }
    Ok(match kind {
        Kind::SocketAddrs => Value::SocketAddrs(each(items, socket_addr)?),
        Kind::Cidrs => Value::Cidrs(each(items, cidr)?),
        Kind::Domains => Value::Domains(each(items, parse_host_name)?),
        Kind::HeaderNames => Value::HeaderNames(each(items, header_name)?),
        Kind::Routes => Value::Routes(each(items, parse_route_item)?),
        Kind::Names => Value::Names(each(items, |s| {
            if s.is_empty() {
                Err("an empty name".to_owned())
            } else {
                Ok(s.to_owned())
            }
        })?),
        _ => return Err((0, "not a list option".into())),
    })
}

/// Where in a syntax value an error is: the whole value or one list item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorAt {
    /// The value as a whole (or its only scalar).
    Whole,
    /// The list item with this index.
    Item(usize),
}

/// Reads a syntax value (a scalar or a list) as `kind`.
pub(crate) fn parse_value(
    kind: Kind,
    value: &crate::syntax::Value,
    dir: &Path,
) -> Result<Value, (ErrorAt, String)> {
    use crate::syntax::Value as Syn;
    match value {
        Syn::Scalar(s) => scalar(kind, &s.value, dir).map_err(|e| (ErrorAt::Whole, e)),
        Syn::List(_, items) if kind.is_list() => {
            let texts: Vec<&str> = items.iter().map(|i| i.value.as_str()).collect();
            list_of(kind, &texts).map_err(|(i, e)| (ErrorAt::Item(i), e))
        }
        Syn::List(..) => Err((
            ErrorAt::Whole,
            format!("expected one value ({}), found a list", kind.describe()),
        )),
    }
}

/// Reads a default written as text in the directive table.
pub(crate) fn parse_default(kind: Kind, text: &str) -> Result<Value, String> {
    if kind.is_list() {
        let items: Vec<&str> = text.split_whitespace().collect();
        return list_of(kind, &items).map_err(|(_, e)| e);
    }
    scalar(kind, text, Path::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keywords::DeliveryMethod;

    fn v(kind: Kind, s: &str) -> Result<Value, String> {
        scalar(kind, s, Path::new("/etc/postern"))
    }

    #[test]
    fn numbers_durations_sizes() {
        assert_eq!(v(Kind::Count, "32").unwrap(), Value::Count(32));
        assert!(v(Kind::Count, "-1").is_err());
        assert!(v(Kind::PositiveCount, "0").is_err());
        assert_eq!(v(Kind::Seconds, "2m").unwrap(), Value::Seconds(120));
        assert_eq!(v(Kind::Seconds, "1D").unwrap(), Value::Seconds(86400));
        assert_eq!(v(Kind::Size, "25M").unwrap(), Value::Size(25 << 20));
        assert!(v(Kind::Size, "99999999999999999999g").is_err());
        assert!(v(Kind::Seconds, "soon").unwrap_err().contains("seconds"));
        assert!(v(Kind::Port, "0").is_err());
        assert!(v(Kind::Port, "65536").is_err());
    }

    #[test]
    fn keywords_are_case_insensitive_and_listed_on_error() {
        assert_eq!(v(Kind::Bool, "Yes").unwrap(), Value::Bool(true));
        assert_eq!(
            v(Kind::DeliveryMethod, "lmtp").unwrap(),
            Value::DeliveryMethod(DeliveryMethod::Lmtp)
        );
        let e = v(Kind::Tls, "always").unwrap_err();
        assert!(e.contains("no, ifavailable, required"), "{e}");
        assert_eq!(
            v(Kind::MaxRetries, "AUTO").unwrap(),
            Value::MaxRetries(MaxRetries::Auto)
        );
    }

    #[test]
    fn throttles() {
        assert_eq!(
            v(Kind::Throttle, "10").unwrap(),
            Value::Throttle(Throttle {
                count: 10,
                per_secs: 1
            })
        );
        assert_eq!(
            v(Kind::Throttle, "100/60").unwrap(),
            Value::Throttle(Throttle {
                count: 100,
                per_secs: 60
            })
        );
        assert!(v(Kind::Throttle, "5/0").is_err());
        assert!(v(Kind::Throttle, "x/2").is_err());
    }

    #[test]
    fn addresses_and_lists() {
        assert_eq!(
            v(Kind::Cidrs, "::1").unwrap(),
            Value::Cidrs(vec!["::1/128".parse().unwrap()])
        );
        assert!(v(Kind::SocketAddr, "::1:25").is_err());
        assert_eq!(
            v(Kind::SocketAddr, "[::1]:25").unwrap(),
            Value::SocketAddr("[::1]:25".parse().unwrap())
        );
        assert_eq!(
            list_of(Kind::Cidrs, &["127.0.0.0/8", "nope"])
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn paths_resolve_against_the_file_directory() {
        assert_eq!(
            v(Kind::Path, "spool").unwrap(),
            Value::Path(PathBuf::from("/etc/postern/spool"))
        );
        assert_eq!(
            v(Kind::Path, "/var/spool").unwrap(),
            Value::Path(PathBuf::from("/var/spool"))
        );
        assert_eq!(
            v(Kind::LogTarget, "-").unwrap(),
            Value::Log(LogTarget::Stdout)
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = v(Kind::Secret, "hunter2").unwrap();
        assert!(!s.to_string().contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
