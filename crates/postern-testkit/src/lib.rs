//! Real parts for Postern's tests and benchmarks: nothing here is a mock.
//!
//! - [`dns::DnsServer`]: an authoritative DNS server (hickory-server) on
//!   127.0.0.1, over UDP and TCP, serving a zone built in the test: MX, A,
//!   AAAA, CNAME, Null MX, names that answer SERVFAIL and names that never
//!   answer. It counts the queries it receives, so tests can see caching.
//! - [`sink::Sink`]: an SMTP or LMTP server on any 127.0.0.x address that
//!   accepts, tempfails or permfails (by recipient, or the first N
//!   messages), drops the connection during DATA, answers slowly, requires
//!   STARTTLS or AUTH, and records every message and the most concurrent
//!   connections it saw.
//! - [`process`]: ending a started daemon by its PID (SIGTERM, or SIGKILL).
//! - [`redis::RedisServer`]: Debian's `redis-server` on a loopback port,
//!   stopped and started again at will, ended by its PID.
//! - [`policy::PolicyServer`]: an HTTPS server on port 443 of a loopback
//!   address serving an MTA-STS policy, counting the requests for it.
//! - [`rspamd::RspamdServer`]: Debian's `rspamd` in milter mode on a
//!   loopback port, with a test configuration, ended by its PID.
//! - [`tls::TestCa`]: a certificate authority made on the spot, issuing
//!   server certificates for names and addresses.
//!
//! ```
//! use postern_testkit::dns::DnsServer;
//!
//! let dns = DnsServer::builder()
//!     .mx("example.com", 10, "mx1.example.com")
//!     .a("mx1.example.com", "127.0.0.2".parse().unwrap())
//!     .start()
//!     .unwrap();
//! assert!(dns.addr().ip().is_loopback());
//! assert_eq!(dns.queries("example.com"), 0);
//! ```
#![warn(missing_docs)]

pub mod dns;
pub mod policy;
pub mod process;
pub mod redis;
pub mod rspamd;
pub mod sink;
pub mod tls;
pub mod tmpfs;

/// Waits until `done` is true, looking every 50 ms; panics naming `what`
/// after `limit`. Tests wait for events with generous limits, never for a
/// fixed time.
#[allow(clippy::panic)]
pub fn wait_until(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
