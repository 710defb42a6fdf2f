//! From a routing table entry and the queue's options to the settings of a
//! client session: protocol, TLS, credentials, source address, deadlines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_conf::{
    AuthMech, Config, DeliveryMethod, Directive, Effective, Scheme, Secret, TlsVerify, Value,
};
use postern_dns::{AuthSource, RouteEntry};
use postern_smtp::client::{ClientSettings, Credentials, Protocol, Timeouts};

/// The deadline of a phase whose option has no value (never, with the
/// directive table's defaults).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

fn text(eff: &Effective<'_>, d: Directive) -> Option<String> {
    eff.pick(d, |v| match v {
        Value::Text(s) | Value::Secret(s) => Some(s.clone()),
        _ => None,
    })
}

/// The password behind a secret: as written, or the first line of its file.
fn reveal(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Password(p) => Ok(p.clone()),
        Secret::File(path) => std::fs::read_to_string(path)
            .map(|s| s.lines().next().unwrap_or_default().to_owned())
            .map_err(|e| format!("{}: {e}", path.display())),
    }
}

fn credentials(
    config: &Config,
    eff: &Effective<'_>,
    source: &AuthSource,
) -> Result<Credentials, String> {
    match source {
        AuthSource::Stanza(name) => {
            let auth = config
                .auths
                .get(name)
                .ok_or_else(|| format!("auth={name} names no Auth stanza"))?;
            Ok(Credentials {
                mechanism: auth.mechanism,
                user: auth.user.clone(),
                password: reveal(&auth.secret)?,
            })
        }
        AuthSource::Scope { user } => Ok(Credentials {
            mechanism: eff
                .pick(Directive::OutboundSmtpAuthType, |v| match v {
                    Value::AuthMech(m) => Some(*m),
                    _ => None,
                })
                .unwrap_or(AuthMech::Plain),
            user: user.clone(),
            password: text(eff, Directive::OutboundSmtpAuthPass)
                .ok_or("Outbound_SMTP_AUTH_User is set without Outbound_SMTP_AUTH_Pass")?,
        }),
    }
}

/// rustls client configurations by verification level and CA file: built
/// once and shared, since loading the system's trust store is slow.
#[derive(Debug, Default)]
pub struct TlsCache {
    configs: HashMap<(TlsVerify, Option<PathBuf>), Arc<rustls::ClientConfig>>,
    checks: HashMap<Option<PathBuf>, Arc<rustls::client::WebPkiServerVerifier>>,
}

impl TlsCache {
    fn get(
        &mut self,
        verify: TlsVerify,
        ca: Option<PathBuf>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = self.configs.get(&(verify, ca.clone())) {
            return Ok(c.clone());
        }
        let config =
            postern_smtp::tls::client_config(verify, ca.as_deref()).map_err(|e| e.to_string())?;
        self.configs.insert((verify, ca), config.clone());
        Ok(config)
    }

    /// The verifier that checks a session's certificate after the fact
    /// (an MTA-STS policy in `testing` mode), per CA file.
    fn check(
        &mut self,
        ca: Option<PathBuf>,
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
        if let Some(v) = self.checks.get(&ca) {
            return Ok(v.clone());
        }
        let verifier =
            postern_smtp::tls::chain_verifier(ca.as_deref()).map_err(|e| e.to_string())?;
        self.checks.insert(ca, verifier.clone());
        Ok(verifier)
    }
}

/// The session settings for delivering to `entry` with the options `eff`;
/// `helo_name` is the configuration's `Hostname`.
pub fn client_settings(
    config: &Config,
    eff: &Effective<'_>,
    entry: &RouteEntry,
    helo_name: &str,
    tls: &mut TlsCache,
) -> Result<ClientSettings, String> {
    let protocol = match (entry.scheme, eff.delivery_method()) {
        (Scheme::Lmtp, _) => Protocol::Lmtp,
        (_, DeliveryMethod::Smtp) => Protocol::Smtp,
        _ => Protocol::Esmtp,
    };
    let ca = eff.path(Directive::TlsCa);
    let tls_check = if entry.sts_testing {
        Some(tls.check(ca.clone())?)
    } else {
        None
    };
    let tls_config = tls.get(entry.tls_verify, ca)?;
    let auth = entry
        .auth
        .as_ref()
        .map(|source| credentials(config, eff, source))
        .transpose()?;
    let mut settings = ClientSettings::new(helo_name, entry.name.clone());
    settings.protocol = protocol;
    settings.implicit_tls = entry.scheme == Scheme::Smtps;
    settings.tls = entry.tls;
    settings.tls_config = Some(tls_config);
    settings.auth = auth;
    settings.auth_without_tls = entry.plaintext_auth;
    settings.xclient = entry.xclient;
    settings.tls_check = tls_check;
    settings.chunking = eff.flag(Directive::OutboundChunking).unwrap_or(true);
    settings.bind = eff.pick(Directive::BindAddress, |v| match v {
        Value::Ip(ip) => Some(*ip),
        _ => None,
    });
    settings.timeouts = Timeouts {
        connect: eff
            .seconds(Directive::ConnectTimeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        ehlo: eff
            .seconds(Directive::EhloTimeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        mail_from: eff
            .seconds(Directive::MailFromTimeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        rcpt_to: eff
            .seconds(Directive::RcptToTimeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        data: eff
            .seconds(Directive::DataTimeout)
            .unwrap_or(DEFAULT_TIMEOUT),
    };
    Ok(settings)
}
