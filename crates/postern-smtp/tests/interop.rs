//! Interoperability with implementations nobody here wrote: Python's
//! smtplib as a client of the server session, and aiosmtpd as the server
//! the client session delivers to. `.ci/run` installs python3-aiosmtpd.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postern_smtp::client::{ClientSettings, Outcome, Session, Transaction};
use postern_testkit::sink::Sink;
use postern_testkit::tls::TestCa;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

#[test]
fn python_smtplib_sends_through_starttls_and_auth() {
    let ca = TestCa::new().unwrap();
    let sink = Sink::builder()
        .tls(ca.issue(&["127.0.0.1"]).unwrap().server_config().unwrap())
        .auth("py", "secret")
        .require_auth()
        .permfail_rcpt("gone@example.com")
        .start()
        .unwrap();
    let out = Command::new("python3")
        .arg(script("smtplib_client.py"))
        .args([&sink.addr().port().to_string(), "py", "secret"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keywords: Vec<&str> = report["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in [
        "pipelining",
        "size",
        "starttls",
        "8bitmime",
        "enhancedstatuscodes",
    ] {
        assert!(keywords.contains(&k), "{k} in {keywords:?}");
    }
    assert_eq!(report["refused"]["gone@example.com"][0], 550);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "python@example.org");
    assert_eq!(got[0].rcpt_to, ["ok@example.com"]);
    assert_eq!(got[0].helo, "smtplib.test");
    assert!(got[0].tls);
    assert_eq!(got[0].auth.as_deref(), Some("py"));
    assert_eq!(
        got[0].body,
        b"Subject: interop\r\n\r\n.line starting with a dot\r\nend\r\n"
    );
}

/// The aiosmtpd process; killed by its PID when the test ends.
struct Aiosmtpd(Child);

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_client_delivers_to_aiosmtpd() {
    let dir = tempfile::tempdir().unwrap();
    let outfile = dir.path().join("received.jsonl");
    let mut child = Command::new("python3")
        .arg(script("aiosmtpd_server.py"))
        .arg(&outfile)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().unwrap();
    let server = Aiosmtpd(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| {
        panic!("aiosmtpd did not start (is python3-aiosmtpd installed?): {line:?}")
    });

    let mut settings = ClientSettings::new("postern.test", "127.0.0.1");
    settings.timeouts.connect = Duration::from_secs(5);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut session = Session::connect(addr, &settings).await.unwrap();
    assert!(session.capabilities().pipelining || session.capabilities().size.is_some());
    let recipients = vec!["a@example.com".to_owned(), "reject@example.com".to_owned()];
    let body = b"Subject: hello\r\n\r\n.dot first\r\nbye\r\n";
    for _ in 0..2 {
        let tx = Transaction {
            sender: "postern@example.org",
            recipients: &recipients,
            body,
            eight_bit: false,
            smtputf8: false,
            xclient: None,
        };
        let out = session.send(&tx).await.unwrap();
        assert!(
            matches!(&out[0], Outcome::Delivered(r) if r.code == 250),
            "{out:?}"
        );
        assert!(
            matches!(&out[1], Outcome::Permanent(r) if r.code == 550),
            "{out:?}"
        );
    }
    session.quit().await.unwrap();
    drop(server);
    let text = std::fs::read_to_string(&outfile).unwrap();
    let messages: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["helo"], "postern.test");
    assert_eq!(messages[0]["mail_from"], "postern@example.org");
    assert_eq!(
        messages[0]["rcpt_tos"],
        serde_json::json!(["a@example.com"])
    );
    assert_eq!(
        messages[0]["content"],
        "Subject: hello\r\n\r\n.dot first\r\nbye\r\n"
    );
}
