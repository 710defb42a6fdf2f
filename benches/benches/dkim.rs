//! DKIM: signing one 1 KiB message with the test keys, as reception does
//! (mail-auth on ring): the cost per message of `DKIM_Sign`.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

fn key(name: &str) -> PrivateKeyDer<'static> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/dkim")
        .join(name);
    let pem = std::fs::read(path).unwrap_or_default();
    PrivateKeyDer::from_pem_slice(&pem).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn message() -> Vec<u8> {
    let mut m = b"From: <bench@load.test>\r\nTo: <r@dest.test>\r\nSubject: load 1\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1.bench>\r\n\r\n"
        .to_vec();
    while m.len() < 1024 {
        m.extend_from_slice(&[b'x'; 74]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

const HEADERS: [&str; 5] = ["From", "To", "Subject", "Date", "Message-ID"];

fn signing(c: &mut Criterion) {
    let m = message();
    let mut group = c.benchmark_group("dkim_sign_1k");
    let Ok(rsa) = RsaKey::<Sha256>::from_key_der(key("rsa2048.pem")) else {
        panic!("rsa2048.pem is not an RSA key");
    };
    let rsa = DkimSigner::from_key(rsa)
        .domain("load.test")
        .selector("b")
        .headers(HEADERS);
    group.bench_function("rsa2048_sha256", |b| {
        b.iter(|| rsa.sign(black_box(&m)).map(|s| s.to_header()));
    });
    let PrivateKeyDer::Pkcs8(ed) = key("ed25519.pem") else {
        panic!("ed25519.pem is not PKCS#8");
    };
    let Ok(ed) = Ed25519Key::from_pkcs8_maybe_unchecked_der(ed.secret_pkcs8_der()) else {
        panic!("ed25519.pem is not an Ed25519 key");
    };
    let ed = DkimSigner::from_key(ed)
        .domain("load.test")
        .selector("e")
        .headers(HEADERS);
    group.bench_function("ed25519_sha256", |b| {
        b.iter(|| ed.sign(black_box(&m)).map(|s| s.to_header()));
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
