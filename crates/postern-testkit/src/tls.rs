//! Certificates for tests: a CA made on the spot and the server
//! certificates it issues.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority that exists only for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate followed by the CA's.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> io::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Postern test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(other)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(other)?;
        Ok(Self { issuer })
    }

    /// The CA certificate in PEM (what `TLS_CA` points at).
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns the path.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca_pem())?;
        Ok(path)
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> io::Result<Issued> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(other)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem()),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// The rustls server configuration for this certificate.
    pub fn server_config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        postern_smtp::tls::server_config_from_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
        )
        .map_err(other)
    }

    /// Writes `cert.pem` and `key.pem` into `dir` (for `TLS_Certificate`
    /// and `TLS_Key`) and returns their paths.
    pub fn write(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.chain_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}
