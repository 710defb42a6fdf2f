//! rustls configurations (ring, explicitly) for both sides: the client's
//! three verification levels of `TLS_Verify`, and the listener's
//! certificate.

use std::path::Path;
use std::sync::Arc;

use postern_conf::TlsVerify;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// A TLS configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsConfigError(String);

fn err(what: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError(what.to_string())
}

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors: the PEM file `ca`, or the system's store.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| err(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(err("no trusted CA certificates found"));
    }
    Ok(roots)
}

/// The server certificate check of `TLS_Verify`. Without a chain
/// verifier (`no`), nothing of the certificate is checked, but the
/// handshake's signatures still are: that encrypts against passive
/// listeners only. With one, the chain must lead to a trusted CA, and the
/// name must match unless `name_checked` is false (`ca`).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    name_checked: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name_checked => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration for `verify`, trusting `ca` (a PEM file) or
/// the system's store. Build it once and share it: loading the system
/// store is slow.
pub fn client_config(
    verify: TlsVerify,
    ca: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let chain = match verify {
        TlsVerify::No => None,
        TlsVerify::Ca | TlsVerify::Host => Some(chain_verifier(ca)?),
    };
    let verifier = Arc::new(Verifier {
        chain,
        name_checked: verify == TlsVerify::Host,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A verifier of trusted chains naming the host (roots from `ca`, or the
/// system's), for checking a session's certificate after the fact
/// ([`ClientSettings::tls_check`](crate::client::ClientSettings)).
pub fn chain_verifier(ca: Option<&Path>) -> Result<Arc<WebPkiServerVerifier>, TlsConfigError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .map_err(err)
}

/// The listener's configuration from PEM text: the certificate chain and
/// its private key.
pub fn server_config_from_pem(
    chain: &[u8],
    key: &[u8],
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err("certificate: no PEM certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| err(format!("key: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(err)?;
    Ok(Arc::new(config))
}

/// The listener's configuration from `TLS_Certificate` and `TLS_Key`.
pub fn server_config(chain: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())));
    server_config_from_pem(&read(chain)?, &read(key)?)
}

/// The name to present in SNI and to check with `TLS_Verify = host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| err(format!("{host}: {e}")))
}
