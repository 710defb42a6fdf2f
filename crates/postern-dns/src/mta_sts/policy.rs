//! The two texts of MTA-STS (RFC 8461): the `_mta-sts` TXT record
//! (section 3.1) and the policy file (section 3.2), and the MX pattern
//! match of section 4.1.

use std::fmt;

/// The longest `max_age` a policy may ask for (RFC 8461 3.2: one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks senders to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsMode {
    /// Deliver only to MX hosts the policy names, over TLS verified for
    /// the MX name.
    Enforce,
    /// Deliver as without a policy; report what would have failed.
    Testing,
    /// The domain has withdrawn its policy.
    None,
}

impl StsMode {
    /// The mode as the policy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

impl fmt::Display for StsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode:`.
    pub mode: StsMode,
    /// The `mx:` patterns, lower-case, in the order written.
    pub mx: Vec<String>,
    /// `max_age:`, in seconds (at most [`MAX_AGE_LIMIT`]).
    pub max_age: u64,
}

/// Why a TXT record or a policy file is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(what: impl Into<String>) -> Invalid {
    Invalid(what.into())
}

/// The policy id of a domain's `_mta-sts` TXT records: `None` when no
/// record starts with `v=STSv1` (the domain has no policy). Several such
/// records, or one without a valid `id`, is an error (RFC 8461 3.1: the
/// sender then assumes no policy is available).
pub fn txt_id(records: &[String]) -> Result<Option<String>, Invalid> {
    let mut sts = records.iter().filter(|r| {
        r.strip_prefix("v=STSv1")
            .is_some_and(|rest| rest.is_empty() || rest.trim_start().starts_with(';'))
    });
    let Some(record) = sts.next() else {
        return Ok(None);
    };
    if sts.next().is_some() {
        return Err(invalid("several v=STSv1 TXT records"));
    }
    let id = record
        .split(';')
        .skip(1)
        .filter_map(|field| field.trim().split_once('='))
        .find(|(key, _)| key.trim() == "id")
        .map(|(_, value)| value.trim())
        .ok_or_else(|| invalid("the TXT record has no id"))?;
    let valid = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid {
        return Err(invalid(format!(
            "the TXT record's id {id:?} is not 1 to 32 letters and digits"
        )));
    }
    Ok(Some(id.to_owned()))
}

/// True when `name` is a valid `mx:` pattern: a host name, or `*.` and a
/// host name.
fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Policy {
    /// Parses a policy file (RFC 8461 3.2): `key: value` lines ended by
    /// CRLF or LF. `version: STSv1`, `mode` and `max_age` are required,
    /// and at least one `mx` unless the mode is `none`. Unknown keys are
    /// ignored; of a repeated key (other than `mx`) the first counts.
    pub fn parse(text: &str) -> Result<Policy, Invalid> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("line {line:?} is not \"key: value\"")))?;
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "version" => {
                    version.get_or_insert(value);
                }
                "mode" => {
                    mode.get_or_insert(value);
                }
                "max_age" => {
                    max_age.get_or_insert(value);
                }
                "mx" => {
                    let pattern = value.trim_end_matches('.').to_ascii_lowercase();
                    if !valid_pattern(&pattern) {
                        return Err(invalid(format!("mx {value:?} is not a host name pattern")));
                    }
                    mx.push(pattern);
                }
                _ => {}
            }
        }
        match version {
            Some("STSv1") => {}
            Some(other) => return Err(invalid(format!("version {other:?} is not STSv1"))),
            None => return Err(invalid("no version")),
        }
        let mode = match mode.map(str::to_ascii_lowercase).as_deref() {
            Some("enforce") => StsMode::Enforce,
            Some("testing") => StsMode::Testing,
            Some("none") => StsMode::None,
            Some(other) => return Err(invalid(format!("unknown mode {other:?}"))),
            None => return Err(invalid("no mode")),
        };
        let max_age = max_age.ok_or_else(|| invalid("no max_age"))?;
        let max_age = match max_age.parse::<u64>() {
            Ok(n) if max_age.len() <= 10 && max_age.bytes().all(|b| b.is_ascii_digit()) => {
                n.min(MAX_AGE_LIMIT)
            }
            _ => {
                return Err(invalid(format!(
                    "max_age {max_age:?} is not 1 to 10 digits"
                )));
            }
        };
        if mx.is_empty() && mode != StsMode::None {
            return Err(invalid(format!("mode {mode} without any mx")));
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// True when the MX host `name` is one the policy names (RFC 8461
    /// 4.1): the same name, or for `*.example.com` a name of exactly one
    /// more label. Case and a trailing dot do not count.
    pub fn names(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
                None => *pattern == name,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(records: &[&str]) -> Vec<String> {
        records.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn txt_record_gives_the_id() {
        let id = txt_id(&strings(&["v=STSv1; id=20260101T000000"]));
        assert_eq!(id, Ok(Some("20260101T000000".into())));
        let spaced = txt_id(&strings(&["v=STSv1;id=abc;  ext=1"]));
        assert_eq!(spaced, Ok(Some("abc".into())));
    }

    #[test]
    fn other_txt_records_are_ignored_and_none_means_no_policy() {
        assert_eq!(txt_id(&strings(&["v=spf1 -all"])), Ok(None));
        assert_eq!(txt_id(&[]), Ok(None));
        let mixed = txt_id(&strings(&["hello", "v=STSv1; id=x1"]));
        assert_eq!(mixed, Ok(Some("x1".into())));
        assert_eq!(txt_id(&strings(&["v=STSv10; id=x"])), Ok(None));
    }

    #[test]
    fn bad_txt_records_are_errors() {
        assert!(txt_id(&strings(&["v=STSv1; id=a", "v=STSv1; id=b"])).is_err());
        assert!(txt_id(&strings(&["v=STSv1;"])).is_err());
        assert!(txt_id(&strings(&["v=STSv1; id=not-alnum"])).is_err());
        let long = format!("v=STSv1; id={}", "a".repeat(33));
        assert!(txt_id(&[long]).is_err());
    }

    #[test]
    fn policy_file_parses() {
        let text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";
        let policy = Policy::parse(text).unwrap();
        assert_eq!(policy.mode, StsMode::Enforce);
        assert_eq!(policy.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(policy.max_age, 86_400);
        let lf =
            Policy::parse("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 60\nfuture: x\n");
        assert_eq!(lf.map(|p| p.mode), Ok(StsMode::Testing));
    }

    #[test]
    fn policy_file_errors_say_what_is_wrong() {
        let cases = [
            ("mode: enforce\nmx: a.test\nmax_age: 1\n", "no version"),
            (
                "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
                "not STSv1",
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
                "unknown mode",
            ),
            ("version: STSv1\nmode: enforce\nmx: a.test\n", "no max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
                "digits",
            ),
            (
                "version: STSv1\nmode: enforce\nmax_age: 1\n",
                "without any mx",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n",
                "pattern",
            ),
            ("<html>\n", "key: value"),
        ];
        for (text, expected) in cases {
            let err = Policy::parse(text).unwrap_err();
            assert!(err.0.contains(expected), "{text:?}: {err}");
        }
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n").unwrap();
        assert_eq!(none.mode, StsMode::None);
    }

    #[test]
    fn max_age_is_capped_at_a_year() {
        let p = Policy::parse("version: STSv1\nmode: none\nmax_age: 9999999999\n").unwrap();
        assert_eq!(p.max_age, MAX_AGE_LIMIT);
    }

    #[test]
    fn patterns_match_as_rfc_8461_says() {
        let p = Policy {
            mode: StsMode::Enforce,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            max_age: 1,
        };
        assert!(p.names("mail.example.com"));
        assert!(p.names("MAIL.example.com."));
        assert!(p.names("mx1.example.net"));
        assert!(!p.names("example.net"));
        assert!(!p.names("a.mx1.example.net"));
        assert!(!p.names("other.example.com"));
    }
}
