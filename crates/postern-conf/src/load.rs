//! Reading files (with includes) into a validated [`Config`].
//!
//! A syntax error stops the reading of its file; every other error (unknown
//! option, wrong scope, bad value, missing include, ...) is collected and
//! reading goes on, so that one run of `postern check-config` lists them all.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;

use crate::error::{ErrorKind, Errors, Location};
use crate::model::{
    Binding, BindingGroup, Config, Credentials, DomainPattern, DomainSet, DomainStanza, HostStanza,
    Listen, Listener, Options, Secret, Setting,
};
use crate::parser::parse;
use crate::route::{RouteItem, parse_host_name};
use crate::schema::{Directive, Scope, Stanza};
use crate::syntax::{self, Item, Label, Pos, Spanned};
use crate::value::{AuthMech, ErrorAt, Value, parse_value, socket_addr};

/// Who owns a `Domain` or `Host` stanza.
#[derive(Debug, Clone)]
enum Owner {
    Top,
    Group(String),
    /// A binding; `grouped` when written inside its binding group.
    Binding {
        name: String,
        grouped: bool,
    },
}

/// Which options map the items being read go to.
#[derive(Debug, Clone)]
enum At {
    Global,
    Group(String),
    Binding { name: String, grouped: bool },
    ExactDomain(Owner, String),
    RegexDomain(Owner, usize),
    Host(Owner, String),
    Listener,
    Listen(usize),
    Resolver,
    Auth(String),
}

/// One file being read: its name for locations, its directory for paths.
struct File {
    name: Arc<Path>,
    dir: PathBuf,
}

impl File {
    fn loc(&self, pos: Pos) -> Location {
        Location {
            file: self.name.clone(),
            line: pos.line,
            col: pos.col,
        }
    }
}

#[derive(Default)]
struct Builder {
    config: Config,
    errors: Errors,
    /// Canonical paths of the files being read, to catch include cycles.
    reading: Vec<PathBuf>,
    /// `auth=NAME` references, checked once every `Auth` stanza is known.
    auth_refs: Vec<(String, Location)>,
    /// `Auth` stanzas as read, validated at the end.
    auth_options: BTreeMap<String, (Location, Options)>,
    /// A `Listen` label was refused: "no Listen address" would only repeat it.
    bad_listen: bool,
    /// Bindings written inside a binding group: name -> (group, where).
    binding_groups: BTreeMap<String, (String, Location)>,
}

/// Reads `path` and every file it includes.
pub(crate) fn load(path: &Path) -> Result<Config, Errors> {
    let mut b = Builder::default();
    let top = Location {
        file: Arc::from(path),
        line: 0,
        col: 0,
    };
    b.file(path, &At::Global, Scope::Global, &top);
    b.finish()
}

/// Reads configuration text; includes resolve against `name`'s directory.
pub(crate) fn load_text(text: &str, name: &Path) -> Result<Config, Errors> {
    let mut b = Builder::default();
    b.config.files.push(name.to_path_buf());
    b.text(text, name, &At::Global, Scope::Global);
    b.finish()
}

/// A `Host` label as stored: canonical IP text or a lower-cased name.
pub(crate) fn normalize_host(s: &str) -> Result<String, String> {
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    parse_host_name(s)
}

fn location_of_utf8_error(bytes: &[u8], valid_up_to: usize) -> Pos {
    let good = bytes.get(..valid_up_to).unwrap_or_default();
    let text = String::from_utf8_lossy(good);
    let line = text.matches('\n').count() + 1;
    let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    }
}

impl Builder {
    fn finish(mut self) -> Result<Config, Errors> {
        self.check_auths();
        self.check_listener();
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(self.errors)
        }
    }

    /// Reads one file; `from` is the include (or the top) that asked for it.
    fn file(&mut self, path: &Path, at: &At, scope: Scope, from: &Location) {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.reading.contains(&canonical) {
            let kind = ErrorKind::IncludeCycle {
                path: path.display().to_string(),
            };
            self.errors.push(from.clone(), kind);
            return;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(source) => {
                let kind = ErrorKind::Io {
                    path: path.display().to_string(),
                    source,
                };
                self.errors.push(from.clone(), kind);
                return;
            }
        };
        self.config.files.push(path.to_path_buf());
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let pos = location_of_utf8_error(&bytes, e.valid_up_to());
                let file = File {
                    name: Arc::from(path),
                    dir: PathBuf::new(),
                };
                self.errors.push(file.loc(pos), ErrorKind::InvalidUtf8);
                return;
            }
        };
        self.reading.push(canonical);
        self.text(text, path, at, scope);
        self.reading.pop();
    }

    fn text(&mut self, text: &str, path: &Path, at: &At, scope: Scope) {
        let file = File {
            name: Arc::from(path),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        match parse(text) {
            Ok(doc) => self.items(&doc.items, at, scope, &file),
            Err(e) => self.errors.push(file.loc(e.pos), e.kind),
        }
    }

    fn items(&mut self, items: &[Item], at: &At, scope: Scope, file: &File) {
        for item in items {
            match item {
                Item::Option { key, value } => self.option(key, value, at, scope, file),
                Item::Stanza { name, label, items } => {
                    self.stanza(name, label.as_ref(), items, at, scope, file);
                }
                Item::Include { path } => self.include(path, at, scope, file),
            }
        }
    }

    fn include(&mut self, path: &Spanned<String>, at: &At, scope: Scope, file: &File) {
        let from = file.loc(path.pos);
        let target = file.dir.join(&path.value);
        if !target.is_dir() {
            self.file(&target, at, scope, &from);
            return;
        }
        let entries = match std::fs::read_dir(&target) {
            Ok(rd) => rd,
            Err(source) => {
                let kind = ErrorKind::Io {
                    path: target.display().to_string(),
                    source,
                };
                self.errors.push(from, kind);
                return;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            self.file(&f, at, scope, &from);
        }
    }

    fn option(
        &mut self,
        key: &Spanned<String>,
        value: &syntax::Value,
        at: &At,
        scope: Scope,
        file: &File,
    ) {
        let loc = file.loc(key.pos);
        let Some(d) = Directive::from_name(&key.value) else {
            let kind = ErrorKind::UnknownOption {
                name: key.value.clone(),
                suggestion: Directive::suggest(&key.value),
            };
            self.errors.push(loc, kind);
            return;
        };
        let spec = d.spec();
        if !spec.scopes.contains(scope) {
            let kind = ErrorKind::WrongScope {
                name: spec.name,
                scope: scope.phrase(),
                valid: spec.scopes.to_string(),
            };
            self.errors.push(loc, kind);
            return;
        }
        let typed = match parse_value(spec.kind, value, &file.dir) {
            Ok(v) => v,
            Err((where_, reason)) => {
                let pos = match (where_, value) {
                    (ErrorAt::Item(i), syntax::Value::List(_, items)) => {
                        items.get(i).map_or(value.pos(), |s| s.pos)
                    }
                    _ => value.pos(),
                };
                let kind = ErrorKind::BadValue {
                    name: spec.name,
                    reason,
                };
                self.errors.push(file.loc(pos), kind);
                return;
            }
        };
        if let Value::Routes(items) = &typed {
            for item in items {
                if let RouteItem::Host(h) = item
                    && let Some(name) = &h.auth
                {
                    self.auth_refs.push((name.clone(), file.loc(value.pos())));
                }
            }
        }
        self.set(at, d, typed, loc);
    }

    fn set(&mut self, at: &At, d: Directive, value: Value, loc: Location) {
        let Some(options) = self.options_mut(at) else {
            return;
        };
        if let Some(first) = options.get(d) {
            let kind = ErrorKind::DuplicateOption {
                name: d.name(),
                first: first.at.clone(),
            };
            self.errors.push(loc, kind);
            return;
        }
        let other = match d {
            Directive::Gateway => options.get(Directive::Routes),
            Directive::Routes => options.get(Directive::Gateway),
            _ => None,
        };
        if let Some(other) = other {
            let kind = ErrorKind::GatewayAndRoutes {
                other: other.at.clone(),
            };
            self.errors.push(loc, kind);
            return;
        }
        options.map.insert(d, Setting { value, at: loc });
    }

    fn stanza(
        &mut self,
        name: &Spanned<String>,
        label: Option<&Spanned<Label>>,
        items: &[Item],
        at: &At,
        scope: Scope,
        file: &File,
    ) {
        let loc = file.loc(name.pos);
        let Some(kind) = Stanza::from_name(&name.value) else {
            let err = ErrorKind::UnknownStanza {
                name: name.value.clone(),
                suggestion: Stanza::suggest(&name.value),
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
            self.items(items, &inner, kind.scope(), file);
        }
    }

    /// Creates (or finds) the stanza's scope; `None` after an error.
    fn enter(
        &mut self,
        kind: Stanza,
        label: Option<&Spanned<Label>>,
        at: &At,
        loc: &Location,
        file: &File,
    ) -> Option<At> {
        let label_loc = label.map_or_else(|| loc.clone(), |l| file.loc(l.pos));
        let text = match label.map(|l| &l.value) {
            Some(Label::Name(n)) => Some(n.as_str()),
            Some(Label::Regex(_)) if kind != Stanza::Domain => {
                let err = ErrorKind::BadValue {
                    name: kind.name(),
                    reason: "only a Domain stanza takes a /regex/ label".into(),
                };
                self.errors.push(label_loc, err);
                return None;
            }
            _ => None,
        };
        match kind {
            Stanza::Listener => Some(self.enter_listener(loc)),
            Stanza::Resolver => Some(At::Resolver),
            Stanza::BindingGroup => Some(self.enter_group(text.unwrap_or_default(), loc)),
            Stanza::Binding => self.enter_binding(text.unwrap_or_default(), at, loc, label_loc),
            Stanza::Auth => {
                let name = text.unwrap_or_default().to_owned();
                self.auth_options
                    .entry(name.clone())
                    .or_insert_with(|| (loc.clone(), Options::default()));
                Some(At::Auth(name))
            }
            Stanza::Listen => self.enter_listen(text.unwrap_or_default(), label_loc),
            Stanza::Host => self.enter_host(text.unwrap_or_default(), at, loc, label_loc),
            Stanza::Domain => self.enter_domain(label.map(|l| &l.value), at, loc, label_loc),
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
            });
        if group.is_some() {
            b.group = group.clone();
        }
        Some(At::Binding {
            name: name.to_owned(),
            grouped: group.is_some(),
        })
    }

    fn enter_listen(&mut self, addr: &str, label_loc: Location) -> Option<At> {
        let addr = match socket_addr(addr) {
            Ok(a) => a,
            Err(reason) => {
                let err = ErrorKind::BadValue {
                    name: "Listen",
                    reason,
                };
                self.bad_listen = true;
                self.errors.push(label_loc, err);
                return None;
            }
        };
        let listener = self.config.listener.as_mut()?;
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
        Some(At::Listen(index))
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
                let err = ErrorKind::BadValue {
                    name: "Host",
                    reason,
                };
                self.errors.push(label_loc, err);
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
                        let err = ErrorKind::BadValue {
                            name: "Domain",
                            reason,
                        };
                        self.errors.push(label_loc, err);
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

    fn options_mut(&mut self, at: &At) -> Option<&mut Options> {
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
            At::Listener => self.config.listener.as_mut().map(|l| &mut l.options),
            At::Listen(i) => self
                .config
                .listener
                .as_mut()
                .and_then(|l| l.listens.get_mut(*i))
                .map(|l| &mut l.options),
            At::Resolver => Some(&mut self.config.resolver),
            At::Auth(name) => self.auth_options.get_mut(name).map(|(_, o)| o),
        }
    }

    fn check_auths(&mut self) {
        let auths = std::mem::take(&mut self.auth_options);
        for (name, (at, options)) in auths {
            let text = |d| match options.get(d).map(|s| &s.value) {
                Some(Value::Text(t) | Value::Secret(t)) => Some(t.clone()),
                _ => None,
            };
            let mechanism = match options.get(Directive::AuthType).map(|s| &s.value) {
                Some(Value::AuthMech(m)) => *m,
                _ => AuthMech::Plain,
            };
            let file = match options.get(Directive::AuthPasswordFile).map(|s| &s.value) {
                Some(Value::Path(p)) => Some(p.clone()),
                _ => None,
            };
            let secret = match (text(Directive::AuthPassword), file) {
                (Some(p), None) => Secret::Password(p),
                (None, Some(f)) => Secret::File(f),
                (Some(_), Some(_)) => {
                    let msg = format!("Auth {name}: set Password or Password_File, not both");
                    self.errors.push(at, ErrorKind::Incomplete(msg));
                    continue;
                }
                (None, None) => {
                    let msg = format!("Auth {name}: Password or Password_File is required");
                    self.errors.push(at, ErrorKind::Incomplete(msg));
                    continue;
                }
            };
            let Some(user) = text(Directive::AuthUser) else {
                let msg = format!("Auth {name}: User is required");
                self.errors.push(at, ErrorKind::Incomplete(msg));
                continue;
            };
            self.config.auths.insert(
                name.clone(),
                Credentials {
                    name,
                    at,
                    mechanism,
                    user,
                    secret,
                },
            );
        }
        for (name, at) in std::mem::take(&mut self.auth_refs) {
            if !self.config.auths.contains_key(&name) {
                self.errors.push(at, ErrorKind::UnknownAuth { name });
            }
        }
    }

    fn check_listener(&mut self) {
        let Some(listener) = self.config.listener.as_ref() else {
            return;
        };
        let mut found = Vec::new();
        if listener.listens.is_empty() && !self.bad_listen {
            found.push((
                listener.at.clone(),
                ErrorKind::Incomplete(
                    "ESMTP_Listener has no Listen address (add Listen \"127.0.0.1:2525\" { })"
                        .into(),
                ),
            ));
        }
        for listen in &listener.listens {
            let cert = listener.option(listen, Directive::TlsCertificate).is_some();
            let key = listener.option(listen, Directive::TlsKey).is_some();
            if cert != key {
                found.push((
                    listen.at.clone(),
                    ErrorKind::Incomplete(format!(
                        "Listen {}: TLS_Certificate and TLS_Key go together; one is missing",
                        listen.addr
                    )),
                ));
            }
            if let Some(Value::Text(b)) = listener.option(listen, Directive::DefaultBinding)
                && b != "default"
                && !self.config.bindings.contains_key(&b)
            {
                found.push((
                    listen.at.clone(),
                    ErrorKind::Incomplete(format!(
                        "Listen {}: Default_Binding names binding \"{b}\", which is not configured",
                        listen.addr
                    )),
                ));
            }
        }
        for (at, kind) in found {
            self.errors.push(at, kind);
        }
    }
}
