//! Stanzas: opening each kind's scope in the model, and finding the options
//! map of the scope being read.

use std::collections::BTreeMap;

use regex::Regex;

use super::{At, Builder, File, Owner, normalize_host};
use crate::error::{ErrorKind, Location};
use crate::model::{
    Binding, BindingGroup, DkimStanza, DomainPattern, DomainSet, DomainStanza, HostStanza, Listen,
    Listener, MilterStanza, Options,
};
use crate::route::parse_host_name;
use crate::schema::Scope;
use crate::syntax::{Item, Label, Spanned};
use crate::value::socket_addr;

impl Builder {
    pub(super) fn stanza(
        &mut self,
        name: &Spanned<String>,
        label: Option<&Spanned<Label>>,
        items: &[Item],
        at: &At,
        scope: Scope,
        file: &File,
    ) {
        let loc = file.loc(name.pos);
        let Some(kind) = Scope::from_stanza_name(&name.value) else {
            let err = ErrorKind::UnknownStanza {
                name: name.value.clone(),
                suggestion: Scope::suggest_stanza(&name.value),
            };
            self.errors.push(loc, err);
            return;
        };
        if !kind.allowed_in(scope) {
            let err = ErrorKind::StanzaNotAllowed {
                name: kind.name(),
                scope: scope.phrase(),
            };
            self.errors.push(loc, err);
            return;
        }
        let problem = match (kind.has_label(), label) {
            (true, None) => Some("needs a label"),
            (false, Some(_)) => Some("takes no label"),
            _ => None,
        };
        if let Some(problem) = problem {
            let err = ErrorKind::StanzaLabel {
                name: kind.name(),
                problem,
            };
            self.errors.push(loc, err);
            return;
        }
        if let Some(inner) = self.enter(kind, label, at, &loc, file) {
            self.items(items, &inner, kind, file);
        }
    }

    /// Creates (or finds) the stanza's scope; `None` after an error.
    fn enter(
        &mut self,
        kind: Scope,
        label: Option<&Spanned<Label>>,
        at: &At,
        loc: &Location,
        file: &File,
    ) -> Option<At> {
        let label_loc = label.map_or_else(|| loc.clone(), |l| file.loc(l.pos));
        let text = match label.map(|l| &l.value) {
            Some(Label::Name(n)) => Some(n.as_str()),
            Some(Label::Regex(_)) if kind != Scope::Domain => {
                let reason = "only a Domain stanza takes a /regex/ label".to_owned();
                self.bad_value(label_loc, kind.name(), reason);
                return None;
            }
            _ => None,
        };
        match kind {
            Scope::Global => None,
            Scope::Listener => Some(self.enter_listener(loc)),
            Scope::Resolver => Some(At::Resolver),
            Scope::Cluster => {
                self.config.cluster.get_or_insert_with(Options::default);
                self.cluster_at.get_or_insert_with(|| loc.clone());
                Some(At::Cluster)
            }
            Scope::BindingGroup => Some(self.enter_group(text.unwrap_or_default(), loc)),
            Scope::Binding => self.enter_binding(text.unwrap_or_default(), at, loc, label_loc),
            Scope::Milter => {
                let name = text.unwrap_or_default().to_owned();
                self.config
                    .milters
                    .entry(name.clone())
                    .or_insert_with(|| MilterStanza {
                        name: name.clone(),
                        at: loc.clone(),
                        options: Options::default(),
                    });
                Some(At::Milter(name))
            }
            Scope::Auth => {
                let name = text.unwrap_or_default().to_owned();
                self.auth_options
                    .entry(name.clone())
                    .or_insert_with(|| (loc.clone(), Options::default()));
                Some(At::Auth(name))
            }
            Scope::ReplyRule => {
                let name = text.unwrap_or_default();
                let i = match self.rule_options.iter().position(|(n, ..)| n == name) {
                    Some(i) => i,
                    None => {
                        let opts = (name.to_owned(), loc.clone(), Options::default());
                        self.rule_options.push(opts);
                        self.rule_options.len() - 1
                    }
                };
                Some(At::ReplyRule(i))
            }
            Scope::Listen => self.enter_listen(text.unwrap_or_default(), at, label_loc),
            Scope::HttpListener => {
                self.config.http_listener.get_or_insert_with(|| Listener {
                    at: loc.clone(),
                    options: Options::default(),
                    listens: Vec::new(),
                });
                Some(At::HttpListener)
            }
            Scope::Host => self.enter_host(text.unwrap_or_default(), at, loc, label_loc),
            Scope::DkimSign => {
                let key = match parse_host_name(text.unwrap_or_default()) {
                    Ok(k) => k,
                    Err(reason) => {
                        self.bad_value(label_loc, "DKIM_Sign", reason);
                        return None;
                    }
                };
                let owner = Self::owner(at);
                self.dkim_mut(&owner)?
                    .entry(key.clone())
                    .or_insert_with(|| DkimStanza {
                        domain: key.clone(),
                        at: loc.clone(),
                        options: Options::default(),
                    });
                Some(At::Dkim(owner, key))
            }
            Scope::Domain => self.enter_domain(label.map(|l| &l.value), at, loc, label_loc),
        }
    }

    fn enter_listener(&mut self, loc: &Location) -> At {
        self.config.listener.get_or_insert_with(|| Listener {
            at: loc.clone(),
            options: Options::default(),
            listens: Vec::new(),
        });
        At::Listener
    }

    fn enter_group(&mut self, name: &str, loc: &Location) -> At {
        self.config
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| BindingGroup {
                name: name.to_owned(),
                at: loc.clone(),
                options: Options::default(),
                domains: DomainSet::default(),
                hosts: BTreeMap::new(),
            });
        At::Group(name.to_owned())
    }

    fn enter_binding(
        &mut self,
        name: &str,
        at: &At,
        loc: &Location,
        label_loc: Location,
    ) -> Option<At> {
        let group = match at {
            At::Group(g) => Some(g.clone()),
            _ => None,
        };
        if let Some(g) = &group {
            match self.binding_groups.get(name) {
                Some((first, first_at)) if first != g => {
                    let err = ErrorKind::BindingInTwoGroups {
                        name: name.to_owned(),
                        group: first.clone(),
                        first: first_at.clone(),
                    };
                    self.errors.push(label_loc, err);
                    return None;
                }
                Some(_) => {}
                None => {
                    self.binding_groups
                        .insert(name.to_owned(), (g.clone(), loc.clone()));
                }
            }
        }
        let b = self
            .config
            .bindings
            .entry(name.to_owned())
            .or_insert_with(|| Binding {
                name: name.to_owned(),
                at: loc.clone(),
                group: None,
                options: Options::default(),
                grouped_domains: DomainSet::default(),
                domains: DomainSet::default(),
                hosts: BTreeMap::new(),
                dkim: BTreeMap::new(),
            });
        if group.is_some() {
            b.group = group.clone();
        }
        Some(At::Binding {
            name: name.to_owned(),
            grouped: group.is_some(),
        })
    }

    fn enter_listen(&mut self, addr: &str, at: &At, label_loc: Location) -> Option<At> {
        let addr = match socket_addr(addr) {
            Ok(a) => a,
            Err(reason) => {
                self.bad_listen = true;
                self.bad_value(label_loc, "Listen", reason);
                return None;
            }
        };
        let http = matches!(at, At::HttpListener);
        let listener = match http {
            true => self.config.http_listener.as_mut()?,
            false => self.config.listener.as_mut()?,
        };
        let index = match listener.listens.iter().position(|l| l.addr == addr) {
            Some(i) => i,
            None => {
                listener.listens.push(Listen {
                    addr,
                    at: label_loc,
                    options: Options::default(),
                });
                listener.listens.len() - 1
            }
        };
        Some(if http {
            At::HttpListen(index)
        } else {
            At::Listen(index)
        })
    }

    fn owner(at: &At) -> Owner {
        match at {
            At::Group(g) => Owner::Group(g.clone()),
            At::Binding { name, grouped } => Owner::Binding {
                name: name.clone(),
                grouped: *grouped,
            },
            _ => Owner::Top,
        }
    }

    fn enter_host(
        &mut self,
        label: &str,
        at: &At,
        loc: &Location,
        label_loc: Location,
    ) -> Option<At> {
        let key = match normalize_host(label) {
            Ok(k) => k,
            Err(reason) => {
                self.bad_value(label_loc, "Host", reason);
                return None;
            }
        };
        let owner = Self::owner(at);
        let hosts = self.hosts_mut(&owner)?;
        hosts.entry(key.clone()).or_insert_with(|| HostStanza {
            name: key.clone(),
            at: loc.clone(),
            options: Options::default(),
        });
        Some(At::Host(owner, key))
    }

    fn enter_domain(
        &mut self,
        label: Option<&Label>,
        at: &At,
        loc: &Location,
        label_loc: Location,
    ) -> Option<At> {
        let owner = Self::owner(at);
        match label? {
            Label::Name(n) => {
                let key = match parse_host_name(n) {
                    Ok(k) => k,
                    Err(reason) => {
                        self.bad_value(label_loc, "Domain", reason);
                        return None;
                    }
                };
                let set = self.domains_mut(&owner)?;
                set.exact
                    .entry(key.clone())
                    .or_insert_with(|| DomainStanza {
                        pattern: DomainPattern::Exact(key.clone()),
                        at: loc.clone(),
                        options: Options::default(),
                    });
                Some(At::ExactDomain(owner, key))
            }
            Label::Regex(pattern) => {
                let regex = match Regex::new(&format!("(?i){pattern}")) {
                    Ok(r) => r,
                    Err(e) => {
                        let err = ErrorKind::BadRegex {
                            pattern: pattern.clone(),
                            reason: e.to_string(),
                        };
                        self.errors.push(label_loc, err);
                        return None;
                    }
                };
                let set = self.domains_mut(&owner)?;
                let existing = set.regexes.iter().position(|s| {
                    matches!(&s.pattern, DomainPattern::Regex(r) if r.as_str() == regex.as_str())
                });
                let index = existing.unwrap_or_else(|| {
                    set.regexes.push(DomainStanza {
                        pattern: DomainPattern::Regex(regex),
                        at: loc.clone(),
                        options: Options::default(),
                    });
                    set.regexes.len() - 1
                });
                Some(At::RegexDomain(owner, index))
            }
        }
    }

    fn domains_mut(&mut self, owner: &Owner) -> Option<&mut DomainSet> {
        match owner {
            Owner::Top => Some(&mut self.config.domains),
            Owner::Group(g) => self.config.groups.get_mut(g).map(|g| &mut g.domains),
            Owner::Binding { name, grouped } => {
                let b = self.config.bindings.get_mut(name)?;
                Some(if *grouped {
                    &mut b.grouped_domains
                } else {
                    &mut b.domains
                })
            }
        }
    }

    fn hosts_mut(&mut self, owner: &Owner) -> Option<&mut BTreeMap<String, HostStanza>> {
        match owner {
            Owner::Top => Some(&mut self.config.hosts),
            Owner::Group(g) => self.config.groups.get_mut(g).map(|g| &mut g.hosts),
            Owner::Binding { name, .. } => self.config.bindings.get_mut(name).map(|b| &mut b.hosts),
        }
    }

    fn dkim_mut(&mut self, owner: &Owner) -> Option<&mut BTreeMap<String, DkimStanza>> {
        match owner {
            Owner::Top => Some(&mut self.config.dkim),
            Owner::Group(_) => None,
            Owner::Binding { name, .. } => self.config.bindings.get_mut(name).map(|b| &mut b.dkim),
        }
    }

    pub(super) fn options_mut(&mut self, at: &At) -> Option<&mut Options> {
        match at {
            At::Global => Some(&mut self.config.global),
            At::Group(g) => self.config.groups.get_mut(g).map(|g| &mut g.options),
            At::Binding { name, .. } => self.config.bindings.get_mut(name).map(|b| &mut b.options),
            At::ExactDomain(owner, key) => self
                .domains_mut(owner)?
                .exact
                .get_mut(key)
                .map(|d| &mut d.options),
            At::RegexDomain(owner, i) => self
                .domains_mut(owner)?
                .regexes
                .get_mut(*i)
                .map(|d| &mut d.options),
            At::Host(owner, key) => self.hosts_mut(owner)?.get_mut(key).map(|h| &mut h.options),
            At::Dkim(owner, key) => self.dkim_mut(owner)?.get_mut(key).map(|d| &mut d.options),
            At::Listener => self.config.listener.as_mut().map(|l| &mut l.options),
            At::Listen(i) => self
                .config
                .listener
                .as_mut()
                .and_then(|l| l.listens.get_mut(*i))
                .map(|l| &mut l.options),
            At::HttpListener => self.config.http_listener.as_mut().map(|l| &mut l.options),
            At::HttpListen(i) => self
                .config
                .http_listener
                .as_mut()
                .and_then(|l| l.listens.get_mut(*i))
                .map(|l| &mut l.options),
            At::Resolver => Some(&mut self.config.resolver),
            At::Cluster => self.config.cluster.as_mut(),
            At::Auth(name) => self.auth_options.get_mut(name).map(|(_, o)| o),
            At::ReplyRule(i) => self.rule_options.get_mut(*i).map(|(_, _, o)| o),
            At::Milter(name) => self.config.milters.get_mut(name).map(|m| &mut m.options),
        }
    }
}
