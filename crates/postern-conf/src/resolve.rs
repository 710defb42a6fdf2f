//! Which scope's value wins for a (binding, domain) queue.
//!
//! [`SCOPE_ORDER`] is the one table of the order; change it there and
//! everything (the engine, `postern config effective`, the reference)
//! follows.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::Location;
use crate::keywords::DeliveryMethod;
use crate::model::{Config, DomainStanza, Options};
use crate::route::{RouteItem, Target};
use crate::schema::{DIRECTIVES, DefaultValue, Directive};
use crate::value::{Value, parse_default};

/// One level of the scope order for mail of binding `b` (in group `g`) to
/// domain `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `Domain d` inside `Binding b` inside `Binding_Group g`.
    DomainInGroupedBinding,
    /// `Domain d` inside `Binding b` (written at top level).
    DomainInBinding,
    /// `Domain d` inside `Binding_Group g`.
    DomainInGroup,
    /// `Binding b`.
    Binding,
    /// `Binding_Group g`.
    Group,
    /// Top-level `Domain d`.
    Domain,
    /// Top level.
    Global,
}

/// The order in which scopes are asked; the first that sets an option wins.
pub const SCOPE_ORDER: [Level; 7] = [
    Level::DomainInGroupedBinding,
    Level::DomainInBinding,
    Level::DomainInGroup,
    Level::Binding,
    Level::Group,
    Level::Domain,
    Level::Global,
];

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Set in a scope: which level, the scope described (`Domain
    /// "example.com" in Binding "b1"`), and the place in the file.
    Set {
        /// The level that set it.
        level: Level,
        /// The scope, as a person would name it.
        scope: String,
        /// Where it is written.
        at: Location,
    },
    /// Nothing sets it: the directive table's default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Set { scope, at, .. } => write!(f, "{scope} ({at})"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// An effective value and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved<'c> {
    /// The value.
    pub value: &'c Value,
    /// Its origin.
    pub origin: Origin,
}

/// How a queue's mail is routed, and which scope decided it.
#[derive(Debug, Clone)]
pub enum Routing<'c> {
    /// `Gateway` from `origin`.
    Gateway(&'c Target, Origin),
    /// `Routes` from `origin`.
    Routes(&'c [RouteItem], Origin),
    /// Nothing sets either: the domain's own MX records.
    Mx,
}

/// The parsed defaults of the directive table, in table order.
fn defaults() -> &'static [Option<Value>] {
    static DEFAULTS: OnceLock<Vec<Option<Value>>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        DIRECTIVES
            .iter()
            .map(|s| match s.default {
                // The table's defaults are checked by a unit test.
                DefaultValue::Value(text) => parse_default(s.kind, text).ok(),
                DefaultValue::None | DefaultValue::Computed(_) => None,
            })
            .collect()
    })
}

/// The default of `d` as a value, if it has a fixed one.
pub fn default_value(d: Directive) -> Option<&'static Value> {
    defaults().get(d as usize).and_then(Option::as_ref)
}

/// The options in force for one (binding, domain) queue.
#[derive(Debug)]
pub struct Effective<'c> {
    binding: String,
    domain: String,
    levels: Vec<(Level, String, &'c Options)>,
}

fn domain_scope(stanza: &DomainStanza, inside: &str) -> String {
    format!("Domain {:?}{inside}", stanza.label())
}

impl Config {
    /// The effective options for mail of `binding` to `domain`, or `None`
    /// when the binding is not configured (`default` always exists).
    pub fn effective(&self, binding: &str, domain: &str) -> Option<Effective<'_>> {
        let b = self.bindings.get(binding);
        if b.is_none() && binding != "default" {
            return None;
        }
        let g = b
            .and_then(|b| b.group.as_deref())
            .and_then(|g| self.groups.get(g));
        let mut levels = Vec::new();
        for level in SCOPE_ORDER {
            let found = match level {
                Level::DomainInGroupedBinding => b.zip(g).and_then(|(b, g)| {
                    b.grouped_domains.find(domain).map(|d| {
                        let inside =
                            format!(" in Binding {:?} in Binding_Group {:?}", b.name, g.name);
                        (domain_scope(d, &inside), &d.options)
                    })
                }),
                Level::DomainInBinding => b.and_then(|b| {
                    b.domains.find(domain).map(|d| {
                        (
                            domain_scope(d, &format!(" in Binding {:?}", b.name)),
                            &d.options,
                        )
                    })
                }),
                Level::DomainInGroup => g.and_then(|g| {
                    g.domains.find(domain).map(|d| {
                        let inside = format!(" in Binding_Group {:?}", g.name);
                        (domain_scope(d, &inside), &d.options)
                    })
                }),
                Level::Binding => b.map(|b| (format!("Binding {:?}", b.name), &b.options)),
                Level::Group => g.map(|g| (format!("Binding_Group {:?}", g.name), &g.options)),
                Level::Domain => self
                    .domains
                    .find(domain)
                    .map(|d| (domain_scope(d, ""), &d.options)),
                Level::Global => Some(("global".to_owned(), &self.global)),
            };
            if let Some((scope, options)) = found {
                levels.push((level, scope, options));
            }
        }
        Some(Effective {
            binding: binding.to_owned(),
            domain: crate::model::normalize_domain(domain),
            levels,
        })
    }
}

impl<'c> Effective<'c> {
    /// The binding this view is for.
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The domain this view is for (lower-cased).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The value set by the most specific scope, if any sets it.
    pub fn set(&self, d: Directive) -> Option<Resolved<'c>> {
        self.levels.iter().find_map(|(level, scope, options)| {
            options.get(d).map(|s| Resolved {
                value: &s.value,
                origin: Origin::Set {
                    level: *level,
                    scope: scope.clone(),
                    at: s.at.clone(),
                },
            })
        })
    }

    /// The value in force: set by a scope, else the default; `None` when
    /// neither exists (an unset option without a fixed default).
    pub fn get(&self, d: Directive) -> Option<Resolved<'c>> {
        self.set(d).or_else(|| {
            default_value(d).map(|value| Resolved {
                value,
                origin: Origin::Default,
            })
        })
    }

    /// The value in force of `d`, when `pick` accepts its variant:
    /// `eff.pick(Directive::Tls, |v| match v { Value::Tls(t) => Some(*t), _ => None })`.
    pub fn pick<T>(&self, d: Directive, pick: impl Fn(&'c Value) -> Option<T>) -> Option<T> {
        self.get(d).and_then(|r| pick(r.value))
    }

    /// A count option (`Kind::Count`, `Kind::PositiveCount`).
    pub fn count(&self, d: Directive) -> Option<u64> {
        self.pick(d, |v| match v {
            Value::Count(n) => Some(*n),
            _ => None,
        })
    }

    /// A seconds option.
    pub fn seconds(&self, d: Directive) -> Option<Duration> {
        self.pick(d, |v| match v {
            Value::Seconds(n) => Some(Duration::from_secs(*n)),
            _ => None,
        })
    }

    /// A true/false option.
    pub fn flag(&self, d: Directive) -> Option<bool> {
        self.pick(d, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// A path option.
    pub fn path(&self, d: Directive) -> Option<PathBuf> {
        self.pick(d, |v| match v {
            Value::Path(p) => Some(p.clone()),
            _ => None,
        })
    }

    /// A text option.
    pub fn text(&self, d: Directive) -> Option<&'c str> {
        self.pick(d, |v| match v {
            Value::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// A score option (`Kind::Score`).
    pub fn score(&self, d: Directive) -> Option<f64> {
        self.pick(d, |v| match v {
            Value::Score(s) => Some(s.get()),
            _ => None,
        })
    }

    /// A port option.
    pub fn port(&self, d: Directive) -> Option<u16> {
        self.pick(d, |v| match v {
            Value::Port(p) => Some(*p),
            _ => None,
        })
    }

    /// `Delivery_Method` (ESMTP when unset).
    pub fn delivery_method(&self) -> DeliveryMethod {
        self.pick(Directive::DeliveryMethod, |v| match v {
            Value::DeliveryMethod(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(DeliveryMethod::Esmtp)
    }

    /// The routing decision: the most specific scope that sets `Gateway`
    /// or `Routes` decides; with neither, the domain's MX records.
    pub fn routing(&self) -> Routing<'c> {
        for (level, scope, options) in &self.levels {
            let origin = |at: &Location| Origin::Set {
                level: *level,
                scope: scope.clone(),
                at: at.clone(),
            };
            if let Some(s) = options.get(Directive::Gateway)
                && let Value::Gateway(t) = &s.value
            {
                return Routing::Gateway(t, origin(&s.at));
            }
            if let Some(s) = options.get(Directive::Routes)
                && let Value::Routes(r) = &s.value
            {
                return Routing::Routes(r, origin(&s.at));
            }
        }
        Routing::Mx
    }
}
