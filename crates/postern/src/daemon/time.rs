//! Dates as the delivery log (RFC 3339) and mail headers (RFC 5322) write
//! them, in UTC.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// civil-from-days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    weekday: usize,
    hour: u64,
    minute: u64,
    second: u64,
}

fn parts(t: SystemTime) -> Parts {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (year, month, day) = civil(days);
    Parts {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday.
        weekday: usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
        hour: secs % 86_400 / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
    }
}

/// The stamps of one second, made once per second per thread: a busy
/// listener stamps thousands of messages and log lines a second.
struct Second {
    secs: u64,
    /// `2026-11-21T07:56:40.` (the milliseconds follow).
    rfc3339: String,
    /// `Sat, 21 Nov 2026 07:56:40 +0000`.
    rfc5322: String,
}

impl Second {
    fn of(t: SystemTime) -> Self {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let p = parts(t);
        let month = MONTHS.get(p.month as usize - 1).copied().unwrap_or("Jan");
        let weekday = DAYS.get(p.weekday).copied().unwrap_or("Sun");
        Self {
            secs: t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            rfc3339: format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                p.year, p.month, p.day, p.hour, p.minute, p.second
            ),
            rfc5322: format!(
                "{weekday}, {} {month} {} {:02}:{:02}:{:02} +0000",
                p.day, p.year, p.hour, p.minute, p.second
            ),
        }
    }
}

thread_local! {
    static SECOND: RefCell<Option<Second>> = const { RefCell::new(None) };
}

/// Calls `f` with `t`'s second (made again only when the second changed
/// since this thread's last stamp) and its milliseconds.
fn with_second<R>(t: SystemTime, f: impl FnOnce(&Second, u32) -> R) -> R {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|cached| {
        let second = match cached {
            Some(s) if s.secs == d.as_secs() => s,
            _ => cached.insert(Second::of(t)),
        };
        f(second, d.subsec_millis())
    })
}

/// Appends `t` as `2026-11-21T07:56:40.123Z`.
pub(crate) fn push_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    with_second(t, |second, millis| {
        out.extend_from_slice(second.rfc3339.as_bytes());
        for unit in [100, 10, 1] {
            out.push(b'0' + (millis / unit % 10) as u8);
        }
        out.push(b'Z');
    });
}

/// `2026-11-21T07:56:40.123Z`.
#[cfg(test)]
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::new();
    push_rfc3339(t, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `t` as `Sat, 21 Nov 2026 07:56:40 +0000`.
pub(crate) fn push_rfc5322(t: SystemTime, out: &mut String) {
    with_second(t, |second, _| out.push_str(&second.rfc5322));
}

/// `Sat, 21 Nov 2026 07:56:40 +0000`.
#[cfg(test)]
pub(crate) fn rfc5322(t: SystemTime) -> String {
    let mut out = String::new();
    push_rfc5322(t, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn known_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_247_800_123);
        assert_eq!(rfc3339(t), "2026-11-21T07:56:40.123Z");
        assert_eq!(rfc5322(t), "Sat, 21 Nov 2026 07:56:40 +0000");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
        // The same second again, and the next: each stamp is its own.
        assert_eq!(
            rfc3339(leap + Duration::from_millis(7)),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            rfc3339(leap + Duration::from_millis(1_007)),
            "2000-02-29T00:00:01.007Z"
        );
        assert_eq!(
            rfc5322(leap + Duration::from_millis(999)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }
}
