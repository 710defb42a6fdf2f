//! MTA-STS (RFC 8461) for delivery to a domain's MX hosts.
//!
//! A domain that publishes a `_mta-sts` TXT record serves its policy at
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`. The policy is fetched
//! when the TXT record first names it, kept for its `max_age`, and fetched
//! again only when the record's id changes or the policy runs out. When
//! a fetch fails, the cached policy (if any) stays in force; without one,
//! mail goes as if the domain had no policy (RFC 8461 5), and the failure
//! is logged and counted. Concurrent lookups of one domain wait on one
//! fetch.

mod fetch;
mod policy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postern_conf::TlsVerify;

pub use policy::{Invalid, MAX_AGE_LIMIT, Policy, StsMode, txt_id};

use crate::cache::Freshness;
use crate::{Dns, DnsError};

/// The MTA-STS policy a routing table follows, and what it made of the
/// domain's MX hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaSts {
    /// The policy id (the TXT record's `id` when it was fetched).
    pub id: String,
    /// The policy.
    pub policy: Arc<Policy>,
    /// MX hosts of the domain that the policy does not name: left out in
    /// `enforce` mode, used but reported in `testing` mode.
    pub unnamed: Vec<String>,
}

/// A fetched policy and the id it was fetched for.
#[derive(Debug, Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    expires: Instant,
}

/// A domain's policy, and the last failed fetch.
#[derive(Debug, Default)]
struct State {
    cached: Option<Cached>,
    /// The last fetch, for this id, failed with this error; no new one
    /// for that id before then.
    failed: Option<(String, String, Instant)>,
}

type Slot = Arc<tokio::sync::Mutex<State>>;

/// A domain's TXT record asks for its table to be built again at most
/// this often (its MX records may ask sooner).
const RECHECK: Duration = Duration::from_secs(300);

/// After a failed fetch, the next waits this long (tables are built
/// again every few seconds while mail waits).
const FETCH_RETRY: Duration = Duration::from_secs(60);

/// The policies fetched so far, by domain, and the TLS configurations
/// their fetches use, by CA file.
#[derive(Debug)]
pub(crate) struct Policies {
    slots: Mutex<HashMap<String, Slot>>,
    tls: Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            tls: Mutex::new(HashMap::new()),
        }
    }
}

/// What a policy lookup found.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    /// The policy in force, with its id.
    pub(crate) policy: Option<(String, Arc<Policy>)>,
    /// When to look again: the TXT record's or the policy's end.
    pub(crate) refresh_at: Option<Instant>,
    /// Something failed (the TXT lookup, the record, the fetch).
    pub(crate) problem: Option<String>,
}

impl Policies {
    fn slot(&self, domain: &str, create: bool) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(domain) {
            return Some(slot.clone());
        }
        if !create {
            return None;
        }
        let now = Instant::now();
        if slots.len() >= 1024 && slots.len().is_power_of_two() {
            slots.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |s| s.cached.as_ref().is_some_and(|c| c.expires > now))
            });
        }
        let slot = Slot::default();
        slots.insert(domain.to_owned(), slot.clone());
        Some(slot)
    }

    fn tls(&self, ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut configs = self.tls.lock().unwrap_or_else(PoisonError::into_inner);
        let key = ca.map(Path::to_path_buf);
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let config = postern_smtp::tls::client_config(TlsVerify::Host, ca)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        configs.insert(key, config.clone());
        Ok(config)
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Dns {
    /// The MTA-STS policy in force for `domain`, fetching it when its TXT
    /// record names a policy that is not cached (certificates checked
    /// against `ca`, or the system's trust store).
    pub(crate) async fn mta_sts(&self, domain: &str, ca: Option<&Path>) -> Lookup {
        let txt_name = format!("_mta-sts.{domain}");
        let txt = self.txt_fetched(&txt_name, Freshness::Dns).await;
        // The record's end does not make the table be built again sooner
        // than `RECHECK`: a negative answer's TTL is often a few seconds.
        let recheck = Instant::now() + RECHECK;
        let mut lookup = Lookup {
            refresh_at: Some(txt.valid_until(Freshness::Dns).max(recheck)),
            ..Lookup::default()
        };
        let id = match txt.value {
            Ok(records) => txt_id(&records).unwrap_or_else(|e| {
                lookup.problem = Some(format!("{txt_name}: {e}"));
                None
            }),
            Err(DnsError::NxDomain { .. }) => None,
            Err(e) => {
                lookup.problem = Some(e.to_string());
                None
            }
        };
        let Some(slot) = self.policies().slot(domain, id.is_some()) else {
            return lookup;
        };
        let mut state = slot.lock().await;
        let now = Instant::now();
        if state.cached.as_ref().is_some_and(|c| c.expires <= now) {
            state.cached = None;
        }
        let current = state.cached.as_ref().map(|c| &c.id) == id.as_ref();
        let kept = match &state.cached {
            Some(c) => format!("the cached policy {} stays in force", c.id),
            None => "delivering as if the domain had no policy".to_owned(),
        };
        match (id, current, state.failed.take()) {
            (Some(id), false, Some((failed_id, error, until)))
                if failed_id == id && now < until =>
            {
                lookup.problem = Some(format!("policy fetch failed ({kept}): {error}"));
                lookup.refresh_at = earliest(lookup.refresh_at, until);
                state.failed = Some((failed_id, error, until));
            }
            (Some(id), false, _) => match self.fetch_policy(domain, ca).await {
                Ok(policy) => {
                    metrics::counter!(postern_metrics::MTA_STS_FETCHES, "result" => "ok")
                        .increment(1);
                    let expires = now + Duration::from_secs(policy.max_age);
                    state.cached = Some(Cached {
                        id,
                        policy: Arc::new(policy),
                        expires,
                    });
                }
                Err(error) => {
                    let failed_id = id;
                    metrics::counter!(postern_metrics::MTA_STS_FETCHES, "result" => "failed")
                        .increment(1);
                    tracing::warn!(domain, %error, "MTA-STS policy fetch failed: {kept}");
                    lookup.problem = Some(format!("policy fetch failed ({kept}): {error}"));
                    let until = now + FETCH_RETRY;
                    lookup.refresh_at = earliest(lookup.refresh_at, until);
                    state.failed = Some((failed_id, error, until));
                }
            },
            _ => {}
        }
        if let Some(c) = &state.cached {
            lookup.refresh_at = earliest(lookup.refresh_at, c.expires);
            lookup.policy = Some((c.id.clone(), c.policy.clone()));
        }
        lookup
    }

    async fn fetch_policy(&self, domain: &str, ca: Option<&Path>) -> Result<Policy, String> {
        let tls = self.policies().tls(ca)?;
        fetch::fetch(self, domain, tls).await
    }
}
