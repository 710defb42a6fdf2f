//! Fetching a policy file: `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! (RFC 8461 3.3), with hyper over tokio-rustls, the host looked up with
//! Postern's own resolver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::Policy;
use crate::Dns;

/// The port of the policy host (RFC 8461 3.3: HTTPS, the default port).
const HTTPS_PORT: u16 = 443;

/// A fetch that takes longer fails (connection, TLS, request and body).
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest policy file read (RFC 8461 3.3 lets senders stop at 64 KiB).
const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The policy host of `domain`.
pub(crate) fn policy_host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

/// Fetches and parses `domain`'s policy, verifying the certificate for
/// `mta-sts.DOMAIN` with `tls`. The error says what failed.
pub(crate) async fn fetch(
    dns: &Dns,
    domain: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Policy, String> {
    let host = policy_host(domain);
    let url = format!("https://{host}/.well-known/mta-sts.txt");
    match tokio::time::timeout(FETCH_TIMEOUT, get(dns, &host, tls)).await {
        Ok(Ok(text)) => Policy::parse(&text).map_err(|e| format!("{url}: {e}")),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within {FETCH_TIMEOUT:?}")),
    }
}

async fn connect(dns: &Dns, host: &str) -> Result<TcpStream, String> {
    let addrs = dns.addresses(host).await.map_err(|e| e.to_string())?;
    let mut last = String::from("no address");
    for ip in addrs {
        match TcpStream::connect(SocketAddr::new(ip, HTTPS_PORT)).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{ip}:{HTTPS_PORT}: {e}"),
        }
    }
    Err(last)
}

/// The policy file's text: a `200` with `text/plain`, no redirect
/// followed, at most [`MAX_POLICY_BYTES`].
async fn get(dns: &Dns, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = connect(dns, host).await?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let request = Request::get("/.well-known/mta-sts.txt")
        .header(header::HOST, host)
        .header(header::USER_AGENT, "Postern")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != StatusCode::OK {
            let redirect = if status.is_redirection() {
                " (redirects are not followed)"
            } else {
                ""
            };
            return Err(format!("HTTP {status}{redirect}"));
        }
        let plain = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/plain")
            });
        if !plain {
            return Err("the policy is not served as text/plain".to_owned());
        }
        let body = Limited::new(response.into_body(), MAX_POLICY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the policy: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the policy is not UTF-8".to_owned())
    }
    .await;
    driver.abort();
    answer
}
