//! Checks that need the whole configuration: `Auth` stanzas complete,
//! `auth=` references resolved, listener addresses and bindings known.

use super::Builder;
use crate::error::ErrorKind;
use crate::keywords::AuthMech;
use crate::model::{Credentials, Secret};
use crate::reply_rule::{ReplyRule, RuleAction};
use crate::schema::Directive;
use crate::value::Value;

impl Builder {
    pub(super) fn check_auths(&mut self) {
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

    /// A listener stanza without a `Listen` address (unless a refused
    /// `Listen` label already said so).
    fn no_listen(
        &self,
        listener: &crate::model::Listener,
        stanza: &str,
        example: &str,
    ) -> Option<(crate::error::Location, ErrorKind)> {
        (listener.listens.is_empty() && !self.bad_listen).then(|| {
            let msg = format!("{stanza} has no Listen address (add Listen \"{example}\" {{ }})");
            (listener.at.clone(), ErrorKind::Incomplete(msg))
        })
    }

    pub(super) fn check_listener(&mut self) {
        let Some(listener) = self.config.listener.as_ref() else {
            return;
        };
        let mut found: Vec<_> = self
            .no_listen(listener, "ESMTP_Listener", "127.0.0.1:2525")
            .into_iter()
            .collect();
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

impl Builder {
    /// Each `Reply_Rule` needs something to match (`Code` or `Match`) and
    /// something to do (`Class` or an `Action`).
    pub(super) fn check_reply_rules(&mut self) {
        let bad = std::mem::take(&mut self.bad_rules);
        for (i, (name, at, options)) in std::mem::take(&mut self.rule_options)
            .into_iter()
            .enumerate()
        {
            if bad.contains(&i) {
                continue;
            }
            let get = |d| options.get(d).map(|s| &s.value);
            let text = |d| match get(d) {
                Some(Value::Text(t)) => Some(t.to_ascii_lowercase()),
                _ => None,
            };
            let code = match get(Directive::RuleCode) {
                Some(Value::ReplyCode(c)) => Some(*c),
                _ => None,
            };
            let pattern = match get(Directive::RuleMatch) {
                Some(Value::Regex(r)) => Some(r.clone()),
                _ => None,
            };
            let class_of = |d| match get(d) {
                Some(Value::ReplyClass(c)) => Some(*c),
                _ => None,
            };
            let class = class_of(Directive::RuleClass);
            let for_class = class_of(Directive::RuleForClass);
            let action = match get(Directive::RuleAction) {
                Some(Value::RuleAction(a)) => *a,
                _ => RuleAction::Default,
            };
            if code.is_none() && pattern.is_none() && for_class.is_none() {
                let msg = format!("Reply_Rule {name}: Code, Match or For_Class is required");
                self.errors.push(at, ErrorKind::Incomplete(msg));
                continue;
            }
            if class.is_none() && action == RuleAction::Default {
                let msg = format!("Reply_Rule {name}: Class or Action is required");
                self.errors.push(at, ErrorKind::Incomplete(msg));
                continue;
            }
            let suspend_for = match get(Directive::RuleSuspendFor) {
                Some(Value::Seconds(s)) => *s,
                _ => 600,
            };
            self.config.reply_rules.push(ReplyRule {
                at,
                code,
                pattern,
                for_class,
                class,
                action,
                suspend_for: std::time::Duration::from_secs(suspend_for),
                binding: match get(Directive::RuleForBinding) {
                    Some(Value::Text(t)) => Some(t.clone()),
                    _ => None,
                },
                domain: text(Directive::RuleForDomain),
                host: text(Directive::RuleForHost),
                name,
            });
        }
    }
}

impl Builder {
    /// A `Cluster` stanza names its Redis server with a URL the client
    /// takes, and a lease lives long enough to be renewed.
    pub(super) fn check_cluster(&mut self) {
        let (Some(options), Some(at)) = (self.config.cluster.as_ref(), self.cluster_at.clone())
        else {
            return;
        };
        let mut found = Vec::new();
        match options.get(Directive::ClusterRedis) {
            None => found.push((
                at,
                ErrorKind::Incomplete(
                    "Cluster: Redis is required (Redis = \"redis://127.0.0.1:6379/0\")".into(),
                ),
            )),
            Some(setting) => {
                if let Value::Text(url) = &setting.value
                    && let Err(reason) = check_redis_url(url)
                {
                    let name = Directive::ClusterRedis.name();
                    found.push((setting.at.clone(), ErrorKind::BadValue { name, reason }));
                }
            }
        }
        if let Some(setting) = options.get(Directive::LeaseTtl)
            && matches!(setting.value, Value::Seconds(s) if s < 3)
        {
            let name = Directive::LeaseTtl.name();
            let reason = "at least 3 seconds (leases are renewed every third of it)".into();
            found.push((setting.at.clone(), ErrorKind::BadValue { name, reason }));
        }
        for (at, kind) in found {
            self.errors.push(at, kind);
        }
    }
}

/// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.
fn check_redis_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{url:?} is not a redis:// URL (redis://HOST[:PORT][/DB])"))?;
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!("{url:?}: the database after / must be a number"));
    }
    Ok(())
}

impl Builder {
    /// The HTTP listener has an address, serves plain HTTP (TLS belongs
    /// to a proxy in front), and its token file holds a token.
    pub(super) fn check_http_listener(&mut self) {
        let Some(listener) = self.config.http_listener.as_ref() else {
            return;
        };
        let mut found: Vec<_> = self
            .no_listen(listener, "HTTP_Listener", "127.0.0.1:8025")
            .into_iter()
            .collect();
        for listen in &listener.listens {
            for d in [Directive::TlsCertificate, Directive::TlsKey] {
                if let Some(setting) = listen.options.get(d) {
                    let reason =
                        "the HTTP listener serves plain HTTP; put a TLS proxy in front".into();
                    found.push((
                        setting.at.clone(),
                        ErrorKind::BadValue {
                            name: d.name(),
                            reason,
                        },
                    ));
                }
            }
        }
        if let Some(setting) = listener.options.get(Directive::AuthTokenFile)
            && let Value::Path(path) = &setting.value
        {
            let problem = match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => Some("the file is empty".to_owned()),
                Ok(_) => None,
                Err(e) => Some(format!("{}: {e}", path.display())),
            };
            if let Some(reason) = problem {
                let name = Directive::AuthTokenFile.name();
                found.push((setting.at.clone(), ErrorKind::BadValue { name, reason }));
            }
        }
        for (at, kind) in found {
            self.errors.push(at, kind);
        }
    }
}

impl Builder {
    /// Each `DKIM_Sign` stanza names its selector and key, and a
    /// canonicalization Postern knows. (The key itself is read by the
    /// daemon and `check-config`, which know the key formats.)
    pub(super) fn check_dkim(&mut self) {
        let stanzas: Vec<&crate::model::DkimStanza> = self
            .config
            .dkim
            .values()
            .chain(self.config.bindings.values().flat_map(|b| b.dkim.values()))
            .collect();
        let mut found = Vec::new();
        for d in stanzas {
            for (directive, what) in [
                (Directive::DkimSelector, "Selector"),
                (Directive::DkimKeyFile, "Key_File"),
            ] {
                if d.options.get(directive).is_none() {
                    let msg = format!("DKIM_Sign {}: {what} is required", d.domain);
                    found.push((d.at.clone(), ErrorKind::Incomplete(msg)));
                }
            }
            if let Some(setting) = d.options.get(Directive::DkimCanonicalization)
                && let Value::Text(text) = &setting.value
                && canonicalization(text).is_none()
            {
                let name = Directive::DkimCanonicalization.name();
                let reason =
                    format!("{text:?}: write relaxed or simple, or header/body (relaxed/simple)");
                found.push((setting.at.clone(), ErrorKind::BadValue { name, reason }));
            }
        }
        for (at, kind) in found {
            self.errors.push(at, kind);
        }
    }
}

impl Builder {
    /// Each `Milter` stanza has its `Address`; `Inbound_Milters` and
    /// `Submission_Milters` name stanzas that exist; a `quarantine` action
    /// has its `Spam_Quarantine` address in its scope or the global one.
    pub(super) fn check_milters(&mut self) {
        let mut found = Vec::new();
        for m in self.config.milters.values() {
            if m.options.get(Directive::MilterAddress).is_none() {
                let msg = format!("Milter {}: Address is required", m.name);
                found.push((m.at.clone(), ErrorKind::Incomplete(msg)));
            }
        }
        let global = &self.config.global;
        for options in self.config.delivery_scopes() {
            for list in [Directive::InboundMilters, Directive::SubmissionMilters] {
                if let Some(setting) = options.get(list)
                    && let Value::Names(names) = &setting.value
                {
                    for name in names
                        .iter()
                        .filter(|n| !self.config.milters.contains_key(*n))
                    {
                        let reason = format!("{name:?} names no Milter stanza");
                        found.push((
                            setting.at.clone(),
                            ErrorKind::BadValue {
                                name: list.name(),
                                reason,
                            },
                        ));
                    }
                }
            }
            let quarantined = [
                Directive::SpamLowAction,
                Directive::SpamMediumAction,
                Directive::SpamHighAction,
                Directive::UnscoredAction,
            ]
            .into_iter()
            .filter_map(|d| options.get(d))
            .find(|s| matches!(s.value, Value::SpamAction(crate::SpamAction::Quarantine)));
            let address = options
                .get(Directive::SpamQuarantine)
                .or_else(|| global.get(Directive::SpamQuarantine));
            if let (Some(setting), None) = (quarantined, address) {
                let msg = "a quarantine action needs Spam_Quarantine (the address quarantined mail goes to)".to_owned();
                found.push((setting.at.clone(), ErrorKind::Incomplete(msg)));
            }
        }
        for (at, kind) in found {
            self.errors.push(at, kind);
        }
    }
}

/// `relaxed/simple` as (header relaxed, body relaxed); one word is the
/// header's, the body's being simple (RFC 6376 3.5, `c=`).
pub fn canonicalization(text: &str) -> Option<(bool, bool)> {
    let word = |w: &str| match w.trim().to_ascii_lowercase().as_str() {
        "relaxed" => Some(true),
        "simple" => Some(false),
        _ => None,
    };
    match text.split_once('/') {
        Some((h, b)) => Some((word(h)?, word(b)?)),
        None => Some((word(text)?, false)),
    }
}
