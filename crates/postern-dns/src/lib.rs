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
//! Answers are cached by TTL, clamped by [`CachePolicy`]; negative answers
//! too. Concurrent lookups of one name share one query.
//!
//! For delivery to a domain's own MX hosts, [`Dns::route_table`] follows
//! the domain's MTA-STS policy (RFC 8461, [`mta_sts`]) unless `MTA_STS` is
//! off: in `enforce` mode only the MX hosts the policy names are used,
//! each with TLS required and its certificate verified for the MX name.
//!
//! [`Dns::route_table`] turns a queue's `Gateway`, `Routes` or MX records
//! into a [`RouteTable`]: preference levels of addresses, each with port,
//! protocol, TLS policy, credentials and `Host` limit. It applies the
//! backup-MX rule and `Prohibited_Hosts`, and fails with a [`RouteError`]
//! that says whether the mail bounces or waits.
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

mod cache;
mod error;
pub mod mta_sts;
mod resolver;
mod routes;
mod table;

pub use cache::CachePolicy;
pub use error::DnsError;
pub use resolver::{Dns, Mx, MxHost};
pub use table::{AuthSource, Decision, LeftOut, RouteEntry, RouteError, RouteLevel, RouteTable};
