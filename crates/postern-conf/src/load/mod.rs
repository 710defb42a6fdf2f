//! Reading files (with includes) into a validated [`Config`].
//!
//! A syntax error stops the reading of its file; every other error (unknown
//! option, wrong scope, bad value, missing include, ...) is collected and
//! reading goes on, so that one run of `postern check-config` lists them all.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod checks;
pub use checks::canonicalization;
mod stanza;

use crate::error::{ErrorKind, Errors, Location};
use crate::model::{Config, Options, Setting};
use crate::parser::parse;
use crate::route::{RouteItem, parse_host_name};
use crate::schema::{Directive, Scope};
use crate::syntax::{self, Item, Pos, Spanned};
use crate::value::{ErrorAt, Value, parse_value};

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
    Dkim(Owner, String),
    Listener,
    Listen(usize),
    HttpListener,
    HttpListen(usize),
    Resolver,
    Cluster,
    Auth(String),
    ReplyRule(usize),
    Milter(String),
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
    /// `Reply_Rule` stanzas in the order first written (name, place, options).
    rule_options: Vec<(String, Location, Options)>,
    /// `Reply_Rule` stanzas with a bad value, by index.
    bad_rules: Vec<usize>,
    /// A `Listen` label was refused: "no Listen address" would only repeat it.
    bad_listen: bool,
    /// Bindings written inside a binding group: name -> (group, where).
    binding_groups: BTreeMap<String, (String, Location)>,
    /// Where the `Cluster` stanza was first written.
    cluster_at: Option<Location>,
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
        self.check_reply_rules();
        self.check_listener();
        self.check_cluster();
        self.check_http_listener();
        self.check_dkim();
        self.check_milters();
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
                self.bad_value(file.loc(pos), spec.name, reason);
                if let At::ReplyRule(i) = at {
                    // Its "required" check would only repeat this error.
                    self.bad_rules.push(*i);
                }
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

    fn bad_value(&mut self, at: Location, name: &'static str, reason: String) {
        self.errors.push(at, ErrorKind::BadValue { name, reason });
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
}
