//! The typed configuration: every scope with its options, after validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use regex::Regex;

use crate::error::Location;
use crate::keywords::AuthMech;
use crate::schema::Directive;
use crate::value::Value;

/// One option as set in a scope, with where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The typed value.
    pub value: Value,
    /// Where it was written.
    pub at: Location,
}

/// The options set in one scope.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub(crate) map: BTreeMap<Directive, Setting>,
}

impl Options {
    /// The setting of `d` in this scope, if this scope sets it.
    pub fn get(&self, d: Directive) -> Option<&Setting> {
        self.map.get(&d)
    }

    /// Every setting of this scope, in directive-table order.
    pub fn iter(&self) -> impl Iterator<Item = (Directive, &Setting)> {
        self.map.iter().map(|(d, s)| (*d, s))
    }

    /// True when the scope sets nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value this scope sets for `d`, else the directive table's
    /// default; `None` when neither exists.
    pub fn value_or_default(&self, d: Directive) -> Option<&Value> {
        self.get(d)
            .map(|s| &s.value)
            .or_else(|| crate::resolve::default_value(d))
    }
}

/// How a `Domain` stanza names its domains.
#[derive(Debug, Clone)]
pub enum DomainPattern {
    /// One domain, lower-cased, without a trailing dot.
    Exact(String),
    /// A regex written `/.../`, matched case-insensitively and unanchored
    /// (write `^...$` to match whole names).
    Regex(Regex),
}

/// A `Domain` stanza (all its repetitions in one scope merged).
#[derive(Debug, Clone)]
pub struct DomainStanza {
    /// The label.
    pub pattern: DomainPattern,
    /// Where the stanza is first written.
    pub at: Location,
    /// Its options.
    pub options: Options,
}

impl DomainStanza {
    /// The label as written in the configuration.
    pub fn label(&self) -> String {
        match &self.pattern {
            DomainPattern::Exact(d) => d.clone(),
            DomainPattern::Regex(r) => format!("/{}/", r.as_str().trim_start_matches("(?i)")),
        }
    }
}

/// The `Domain` stanzas of one scope: exact names, then regexes in the
/// order written.
#[derive(Debug, Clone, Default)]
pub struct DomainSet {
    pub(crate) exact: BTreeMap<String, DomainStanza>,
    pub(crate) regexes: Vec<DomainStanza>,
}

impl DomainSet {
    /// The stanza that applies to `domain`: its exact stanza if there is
    /// one, else the first regex stanza that matches.
    pub fn find(&self, domain: &str) -> Option<&DomainStanza> {
        let d = normalize_domain(domain);
        self.exact.get(&d).or_else(|| {
            self.regexes.iter().find(|s| match &s.pattern {
                DomainPattern::Regex(r) => r.is_match(&d),
                DomainPattern::Exact(_) => false,
            })
        })
    }

    /// Every stanza: exact names in name order, then regexes in file order.
    pub fn iter(&self) -> impl Iterator<Item = &DomainStanza> {
        self.exact.values().chain(self.regexes.iter())
    }
}

/// A domain as the configuration compares it: lower case, no trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

/// A `Host` stanza: limits for one destination host (a name or address).
#[derive(Debug, Clone)]
pub struct HostStanza {
    /// The host as written, normalised (lower-cased name or canonical IP).
    pub name: String,
    /// Where it is first written.
    pub at: Location,
    /// Its options.
    pub options: Options,
}

/// A `DKIM_Sign "domain" { }` stanza: how mail from that domain is signed.
#[derive(Debug, Clone)]
pub struct DkimStanza {
    /// The signing domain (d=), lower-cased.
    pub domain: String,
    /// Where it is first written.
    pub at: Location,
    /// Its options.
    pub options: Options,
}

/// A `Milter name { }` stanza: a content filter.
#[derive(Debug, Clone)]
pub struct MilterStanza {
    /// Its name.
    pub name: String,
    /// Where it is first written.
    pub at: Location,
    /// Its options.
    pub options: Options,
}

/// `Binding_Group name { }`.
#[derive(Debug, Clone)]
pub struct BindingGroup {
    /// The group's name.
    pub name: String,
    /// Where it is first written.
    pub at: Location,
    /// Options written directly in the group.
    pub options: Options,
    /// `Domain` stanzas written directly in the group.
    pub domains: DomainSet,
    /// `Host` stanzas written directly in the group.
    pub hosts: BTreeMap<String, HostStanza>,
}

/// `Binding name { }`, merged from every place it is written.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The binding's name.
    pub name: String,
    /// Where it is first written.
    pub at: Location,
    /// The group it is written in, if any.
    pub group: Option<String>,
    /// Its options.
    pub options: Options,
    /// `Domain` stanzas in the binding written inside its binding group
    /// (scope level 1).
    pub grouped_domains: DomainSet,
    /// `Domain` stanzas in the binding written at top level (level 2).
    pub domains: DomainSet,
    /// `Host` stanzas in the binding.
    pub hosts: BTreeMap<String, HostStanza>,
    /// `DKIM_Sign` stanzas in the binding.
    pub dkim: BTreeMap<String, DkimStanza>,
}

/// `Listen "addr:port" { }` inside the listener.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// Where it is written.
    pub at: Location,
    /// Options overriding the listener's for this address.
    pub options: Options,
}

/// `ESMTP_Listener { }`.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where it is first written.
    pub at: Location,
    /// Options for every `Listen` address.
    pub options: Options,
    /// The addresses.
    pub listens: Vec<Listen>,
}

impl Listener {
    /// The value for one `Listen` address: its own setting, else the
    /// listener's, else the default.
    pub fn option(&self, listen: &Listen, d: Directive) -> Option<Value> {
        listen
            .options
            .get(d)
            .map(|s| &s.value)
            .or_else(|| self.options.value_or_default(d))
            .cloned()
    }
}

/// Where an `Auth` stanza's password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the configuration.
    Password(String),
    /// Read from this file's first line when used.
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(********)"),
            Secret::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// `Auth name { Type User Password|Password_File }`.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The stanza's name (what `auth=NAME` refers to).
    pub name: String,
    /// Where it is written.
    pub at: Location,
    /// The AUTH mechanism.
    pub mechanism: AuthMech,
    /// The user name.
    pub user: String,
    /// The password or its file.
    pub secret: Secret,
}

/// A whole, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Every file read, the top file first.
    pub files: Vec<PathBuf>,
    /// Top-level options.
    pub global: Options,
    /// Binding groups by name.
    pub groups: BTreeMap<String, BindingGroup>,
    /// Bindings by name.
    pub bindings: BTreeMap<String, Binding>,
    /// Top-level `Domain` stanzas.
    pub domains: DomainSet,
    /// Top-level `Host` stanzas.
    pub hosts: BTreeMap<String, HostStanza>,
    /// Top-level `DKIM_Sign` stanzas, by signing domain.
    pub dkim: BTreeMap<String, DkimStanza>,
    /// The injection listener, if configured.
    pub listener: Option<Listener>,
    /// The HTTP injection listener, if configured.
    pub http_listener: Option<Listener>,
    /// `Resolver { }` options.
    pub resolver: Options,
    /// `Cluster { }` options, when the stanza is written.
    pub cluster: Option<Options>,
    /// `Auth` stanzas by name.
    pub auths: BTreeMap<String, Credentials>,
    /// `Reply_Rule` stanzas, in the order they were first written.
    pub reply_rules: Vec<crate::reply_rule::ReplyRule>,
    /// `Milter` stanzas by name.
    pub milters: BTreeMap<String, MilterStanza>,
}

impl Config {
    /// The options of every delivery scope: global, binding groups,
    /// bindings, and every `Domain` stanza in any of them.
    pub fn delivery_scopes(&self) -> impl Iterator<Item = &Options> {
        fn domains(set: &DomainSet) -> impl Iterator<Item = &Options> {
            set.iter().map(|d| &d.options)
        }
        std::iter::once(&self.global)
            .chain(domains(&self.domains))
            .chain(
                self.groups
                    .values()
                    .flat_map(|g| std::iter::once(&g.options).chain(domains(&g.domains))),
            )
            .chain(self.bindings.values().flat_map(|b| {
                std::iter::once(&b.options)
                    .chain(domains(&b.domains))
                    .chain(domains(&b.grouped_domains))
            }))
    }

    /// The name this server gives itself (EHLO, `Received:`, the backup-MX
    /// rule): `Hostname`, else the system's host name.
    pub fn hostname(&self) -> String {
        match self.global.get(Directive::Hostname).map(|s| &s.value) {
            Some(Value::Text(name)) => name.clone(),
            _ => gethostname::gethostname()
                .to_string_lossy()
                .to_ascii_lowercase(),
        }
    }

    /// The `Cluster` stanza's settings, when there is one.
    pub fn cluster(&self) -> Option<ClusterSettings> {
        let options = self.cluster.as_ref()?;
        let text = |d| match options.get(d).map(|s| &s.value) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let lease_ttl = match options.value_or_default(Directive::LeaseTtl) {
            Some(Value::Seconds(s)) => *s,
            _ => 10,
        };
        Some(ClusterSettings {
            redis: text(Directive::ClusterRedis)?,
            node: text(Directive::ClusterNodeName).unwrap_or_else(|| self.hostname()),
            lease_ttl: std::time::Duration::from_secs(lease_ttl),
        })
    }

    /// The `Host` stanza that applies to `host` for mail of `binding`: the
    /// binding's own, else its group's, else the top-level one. Host stanzas
    /// do not inherit: the one found applies whole.
    pub fn host(&self, binding: &str, host: &str) -> Option<&HostStanza> {
        let key = crate::load::normalize_host(host).unwrap_or_else(|_| host.to_ascii_lowercase());
        let b = self.bindings.get(binding);
        let g = b
            .and_then(|b| b.group.as_deref())
            .and_then(|g| self.groups.get(g));
        b.and_then(|b| b.hosts.get(&key))
            .or_else(|| g.and_then(|g| g.hosts.get(&key)))
            .or_else(|| self.hosts.get(&key))
    }
}

/// A `Cluster` stanza, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `Redis`: the server's URL.
    pub redis: String,
    /// `Node_Name`, else the host name.
    pub node: String,
    /// `Lease_TTL`.
    pub lease_ttl: std::time::Duration,
}
