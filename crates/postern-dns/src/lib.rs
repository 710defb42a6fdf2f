//! MX, A and AAAA resolution for Postern, on hickory-resolver.
//!
//! [`Dns`] asks the servers of the `Resolver { Nameservers Timeout }`
//! stanza, or the system's (`/etc/resolv.conf`), and turns every answer
//! into what delivery needs. That means mail exchangers in preference order,
//! or [`Mx::Implicit`] when a domain has no MX records (RFC 5321 5.1), or
//! a [`DnsError`] that says whether the failure is permanent (NXDOMAIN,
//! Null MX, no address) or transient (SERVFAIL, timeout), with its SMTP
//! status.
//!
//! ```no_run
//! # async fn example(config: &postern_conf::Config) -> Result<(), postern_dns::DnsError> {
//! let dns = postern_dns::Dns::from_config(config)?;
//! match dns.mx("example.com").await? {
//!     postern_dns::Mx::Hosts(hosts) => println!("first: {}", hosts[0].name),
//!     postern_dns::Mx::Implicit => println!("no MX: use the domain's own address"),
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod resolver;

pub use error::DnsError;
pub use resolver::{Dns, Mx, MxHost};
