//! DKIM signing (RFC 6376; Ed25519, RFC 8463) with mail-auth, once, at
//! reception, before the message is stored: retries and restarts deliver
//! the stored, signed bytes and never sign again.
//!
//! `DKIM_Sign "example.com"` stanzas apply to mail whose From: domain is
//! that domain or a subdomain of it; a binding's own stanzas are tried
//! before the global ones, and among those that match the longest label
//! wins.

use std::collections::HashMap;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use postern_conf::{Config, Directive, DkimStanza, Value};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// A signer with its key.
enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// One `DKIM_Sign` stanza, ready.
struct Signer {
    domain: String,
    selector: String,
    key: Key,
}

/// What a signature was made with, for the reception log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    pub(crate) domain: String,
    pub(crate) selector: String,
}

/// Every `DKIM_Sign` stanza of the configuration.
#[derive(Default)]
pub(crate) struct Signers {
    global: Vec<Signer>,
    bindings: HashMap<String, Vec<Signer>>,
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signers")
            .field("global", &self.global.len())
            .field("bindings", &self.bindings.len())
            .finish()
    }
}

/// The stanza's settings applied to a key.
fn build<T: SigningKey>(key: T, d: &DkimStanza, selector: &str) -> DkimSigner<T, Done> {
    let mut headers: Vec<String> = match d.options.value_or_default(Directive::DkimHeaders) {
        Some(Value::HeaderNames(h)) => h.clone(),
        _ => Vec::new(),
    };
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        headers.insert(0, "From".into());
    }
    let (header, body) = match d.options.value_or_default(Directive::DkimCanonicalization) {
        Some(Value::Text(t)) => postern_conf::canonicalization(t).unwrap_or((true, true)),
        _ => (true, true),
    };
    let canon = |relaxed| match relaxed {
        true => Canonicalization::Relaxed,
        false => Canonicalization::Simple,
    };
    DkimSigner::from_key(key)
        .domain(d.domain.clone())
        .selector(selector.to_owned())
        .headers(headers)
        .header_canonicalization(canon(header))
        .body_canonicalization(canon(body))
}

/// Reads the stanza's key (PEM: RSA in PKCS#1 or PKCS#8, Ed25519 in
/// PKCS#8) and builds its signer; the error names `Key_File`'s place.
fn signer(d: &DkimStanza) -> Result<Signer, String> {
    let get = |directive| d.options.get(directive);
    let (Some(selector), Some(file)) = (get(Directive::DkimSelector), get(Directive::DkimKeyFile))
    else {
        return Err(format!(
            "{}: DKIM_Sign {}: Selector and Key_File are required",
            d.at, d.domain
        ));
    };
    let (Value::Text(selector), Value::Path(path)) = (&selector.value, &file.value) else {
        return Err(format!(
            "{}: DKIM_Sign {}: bad Selector or Key_File",
            d.at, d.domain
        ));
    };
    let bad = |reason: String| {
        format!(
            "{}: invalid value for \"{}\": {}: {reason}",
            file.at,
            Directive::DkimKeyFile.name(),
            path.display()
        )
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(format!("not a PEM private key ({e})")))?;
    let ed25519 = match &der {
        PrivateKeyDer::Pkcs8(p) => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der()).ok()
        }
        _ => None,
    };
    let key = match ed25519 {
        Some(k) => Key::Ed25519(build(k, d, selector)),
        None => {
            let rsa = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| bad(format!("not an RSA or Ed25519 key ({e})")))?;
            Key::Rsa(build(rsa, d, selector))
        }
    };
    Ok(Signer {
        domain: d.domain.clone(),
        selector: selector.clone(),
        key,
    })
}

impl Signers {
    /// Every stanza's signer; the errors (each with its place) when a key
    /// cannot be read.
    pub(crate) fn load(config: &Config) -> Result<Signers, Vec<String>> {
        let mut errors = Vec::new();
        let mut all = |stanzas: &mut dyn Iterator<Item = &DkimStanza>| -> Vec<Signer> {
            stanzas
                .filter_map(|d| signer(d).map_err(|e| errors.push(e)).ok())
                .collect()
        };
        let global = all(&mut config.dkim.values());
        let bindings = config
            .bindings
            .values()
            .filter(|b| !b.dkim.is_empty())
            .map(|b| (b.name.clone(), all(&mut b.dkim.values())))
            .collect();
        if errors.is_empty() {
            Ok(Signers { global, bindings })
        } else {
            Err(errors)
        }
    }

    /// True when no stanza is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.global.is_empty() && self.bindings.is_empty()
    }

    /// The stanza for mail of `binding` from `from_domain`.
    fn pick(&self, binding: &str, from_domain: &str) -> Option<&Signer> {
        let matching = |signers: &'_ [Signer]| -> Option<usize> {
            signers
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    from_domain == s.domain
                        || from_domain
                            .strip_suffix(s.domain.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))
                })
                .max_by_key(|(_, s)| s.domain.len())
                .map(|(i, _)| i)
        };
        if let Some(own) = self.bindings.get(binding)
            && let Some(i) = matching(own)
        {
            return own.get(i);
        }
        matching(&self.global).and_then(|i| self.global.get(i))
    }

    /// Signs `message` (headers and body, CRLF) if a stanza applies: the
    /// message with its `DKIM-Signature:` on top, and what signed it.
    pub(crate) fn sign(&self, binding: &str, message: &[u8]) -> Option<(Vec<u8>, Signed)> {
        let from = from_domain(message)?;
        let signer = self.pick(binding, &from)?;
        let (signature, algorithm) = match &signer.key {
            Key::Rsa(s) => (s.sign(message), "rsa-sha256"),
            Key::Ed25519(s) => (s.sign(message), "ed25519-sha256"),
        };
        match signature {
            Ok(signature) => {
                metrics::counter!(postern_metrics::DKIM_SIGNATURES, "algorithm" => algorithm)
                    .increment(1);
                let mut signed = signature.to_header().into_bytes();
                signed.extend_from_slice(message);
                let what = Signed {
                    domain: signer.domain.clone(),
                    selector: signer.selector.clone(),
                };
                Some((signed, what))
            }
            Err(e) => {
                metrics::counter!(postern_metrics::DKIM_FAILURES).increment(1);
                tracing::warn!(domain = %signer.domain, error = %e, "DKIM: cannot sign; the message goes unsigned");
                None
            }
        }
    }
}

/// The domain of the message's From: address, lower-cased.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let from = parsed.from()?.first()?.address()?.to_owned();
    let (_, domain) = from.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_is_read_from_the_headers() {
        let bounce = b"Message-ID: <b@postern.test>\r\nFrom: \"Mail Delivery System\" <MAILER-DAEMON@postern.test>\r\nTo: <ann@example.com>\r\n\r\nbody\r\n";
        assert_eq!(from_domain(bounce).as_deref(), Some("postern.test"));
        let plain = b"From: news@Mail.Example.org\r\n\r\nx\r\n";
        assert_eq!(from_domain(plain).as_deref(), Some("mail.example.org"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod signing {
    use super::*;

    #[test]
    fn a_bounce_from_the_hostname_is_signed() {
        let dir = tempfile::tempdir().unwrap();
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/dkim/ed25519.pem");
        let conf = dir.path().join("p.conf");
        std::fs::write(
            &conf,
            format!(
                "Hostname = \"postern.test\"\nDKIM_Sign \"postern.test\" {{ Selector = \"b\" Key_File = \"{}\" }}\n",
                key.display()
            ),
        )
        .unwrap();
        let config = Config::load(&conf).unwrap();
        let signers = Signers::load(&config).unwrap();
        let bounce = b"Message-ID: <b@postern.test>\r\nFrom: \"Mail Delivery System\" <MAILER-DAEMON@postern.test>\r\nTo: <ann@example.com>\r\n\r\nbody\r\n";
        let (signed, what) = signers.sign("default", bounce).unwrap();
        assert_eq!(what.domain, "postern.test");
        assert!(signed.starts_with(b"DKIM-Signature:"));
    }
}
