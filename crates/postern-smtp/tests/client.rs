//! The client session against the testkit's sinks over real TCP and TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod scripted;

use std::net::SocketAddr;
use std::time::Duration;

use postern_conf::{AuthMech, TlsMode, TlsVerify};
use postern_smtp::client::{
    ClientSettings, Credentials, Outcome, Phase, Protocol, Session, SessionError, Transaction,
};
use postern_smtp::{EnhancedStatus, tls};
use postern_testkit::sink::Sink;
use postern_testkit::tls::TestCa;

fn settings(server_name: &str) -> ClientSettings {
    let mut s = ClientSettings::new("postern.test", server_name);
    s.timeouts.connect = Duration::from_secs(5);
    s.timeouts.ehlo = Duration::from_secs(5);
    s.timeouts.mail_from = Duration::from_secs(5);
    s.timeouts.rcpt_to = Duration::from_secs(5);
    s.timeouts.data = Duration::from_secs(5);
    s
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const BODY: &[u8] = b"Subject: test\r\n\r\n.leading dot\r\n..two dots\r\nlast line without CRLF";

async fn send(session: &mut Session, to: &[String], body: &[u8]) -> Vec<Outcome> {
    let tx = Transaction {
        sender: "sender@example.org",
        recipients: to,
        body,
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    };
    session.send(&tx).await.unwrap()
}

fn codes(outcomes: &[Outcome]) -> Vec<u16> {
    outcomes.iter().map(|o| o.reply().code).collect()
}

#[tokio::test]
async fn pipelined_messages_on_one_session_with_dots_and_rset() {
    let sink = Sink::builder().start().unwrap();
    let mut s = Session::connect(sink.addr(), &settings("sink.test"))
        .await
        .unwrap();
    assert!(s.capabilities().pipelining);
    let to = rcpts(&["a@example.com", "b@example.com"]);
    for _ in 0..3 {
        let out = send(&mut s, &to, BODY).await;
        assert!(
            matches!(&out[..], [Outcome::Delivered(_), Outcome::Delivered(_)]),
            "{out:?}"
        );
    }
    s.quit().await.unwrap();
    let got = sink.messages();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].mail_from, "sender@example.org");
    assert_eq!(got[0].rcpt_to, to);
    assert_eq!(
        got[0].body,
        b"Subject: test\r\n\r\n.leading dot\r\n..two dots\r\nlast line without CRLF\r\n"
    );
    assert_eq!(got[0].helo, "postern.test");
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn every_recipient_gets_its_own_outcome() {
    for chunking in [true, false] {
        let sink = Sink::builder()
            .permfail_rcpt("gone@example.com")
            .tempfail_rcpt("busy@example.com")
            .start()
            .unwrap();
        let mut cfg = settings("sink.test");
        cfg.chunking = chunking;
        let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
        let to = rcpts(&["gone@example.com", "busy@example.com", "ok@example.com"]);
        let out = send(&mut s, &to, BODY).await;
        assert!(
            matches!(&out[0], Outcome::Permanent(r) if r.status == Some(EnhancedStatus::new(5, 1, 1)))
        );
        assert!(matches!(&out[1], Outcome::Transient(r) if r.code == 451));
        assert!(matches!(&out[2], Outcome::Delivered(r) if r.code == 250));
        // No recipient accepted: DATA is never sent (a chunk sent with
        // BDAT is read and refused), and the session goes on.
        let out = send(&mut s, &rcpts(&["gone@example.com"]), BODY).await;
        assert_eq!(codes(&out), [550]);
        let out = send(&mut s, &rcpts(&["ok@example.com"]), BODY).await;
        assert_eq!(codes(&out), [250]);
        assert_eq!(sink.message_count(), 2);
        let got = sink.messages();
        assert_eq!(got[0].rcpt_to, ["ok@example.com"]);
        assert!(got.iter().all(|m| m.chunked == chunking));
    }
}

#[tokio::test]
async fn bdat_carries_the_same_bytes_as_data_where_chunking_is_offered() {
    let big: Vec<u8> = (0..3000)
        .flat_map(|i| format!(".line {i} of a long message\n").into_bytes())
        .collect();
    assert!(big.len() > 64 * 1024);
    let mut seen = Vec::new();
    for (offered, chunking) in [(true, true), (true, false), (false, true)] {
        let mut sink = Sink::builder();
        if !offered {
            sink = sink.no_chunking();
        }
        let sink = sink.start().unwrap();
        let mut cfg = settings("sink.test");
        cfg.chunking = chunking;
        let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
        assert_eq!(s.capabilities().chunking, offered);
        for body in [BODY, b"", &big[..]] {
            let out = send(&mut s, &rcpts(&["a@example.com"]), body).await;
            assert_eq!(codes(&out), [250]);
        }
        s.quit().await.unwrap();
        let got = sink.messages();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|m| m.chunked == (offered && chunking)));
        seen.push(got.into_iter().map(|m| m.body).collect::<Vec<_>>());
    }
    assert_eq!(seen[0], seen[1], "BDAT and DATA deliver the same message");
    assert_eq!(seen[0], seen[2]);
    assert!(seen[0][0].ends_with(b"last line without CRLF\r\n"));
    assert!(seen[0][2].starts_with(b".line 0 of a long message\r\n"));
}

#[tokio::test]
async fn lmtp_answers_each_recipient_after_data() {
    let busy = postern_smtp::Reply::with_status(452, (4, 2, 2), "mailbox full");
    let sink = Sink::builder()
        .lmtp()
        .lmtp_reply("full@example.com", busy)
        .permfail_rcpt("nobody@example.com")
        .start()
        .unwrap();
    for chunking in [true, false] {
        let mut cfg = settings("sink.test");
        cfg.protocol = Protocol::Lmtp;
        cfg.chunking = chunking;
        let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
        let to = rcpts(&[
            "a@example.com",
            "full@example.com",
            "nobody@example.com",
            "b@example.com",
        ]);
        let out = send(&mut s, &to, BODY).await;
        assert_eq!(codes(&out), [250, 452, 550, 250]);
        assert!(matches!(out[1], Outcome::Transient(_)));
        // Nobody accepted: one reply to the last chunk, and the session
        // goes on.
        let out = send(&mut s, &rcpts(&["nobody@example.com"]), BODY).await;
        assert_eq!(codes(&out), [550]);
        let out = send(&mut s, &rcpts(&["a@example.com"]), BODY).await;
        assert_eq!(codes(&out), [250]);
        let got = sink.messages();
        let got = &got[got.len() - 2..];
        assert_eq!(got[0].rcpt_to, ["a@example.com", "b@example.com"]);
        assert!(got.iter().all(|m| m.chunked == chunking));
    }
}

#[tokio::test]
async fn a_tempfail_after_data_then_success() {
    let sink = Sink::builder().tempfail_first(1).start().unwrap();
    let mut s = Session::connect(sink.addr(), &settings("sink.test"))
        .await
        .unwrap();
    let to = rcpts(&["a@example.com"]);
    let out = send(&mut s, &to, BODY).await;
    assert!(
        matches!(&out[0], Outcome::Transient(r) if r.to_string() == "451 4.3.0 temporary failure, try again")
    );
    let out = send(&mut s, &to, BODY).await;
    assert!(matches!(out[0], Outcome::Delivered(_)));
}

#[tokio::test]
async fn plain_smtp_uses_helo_and_no_extensions() {
    let sink = Sink::builder().start().unwrap();
    let mut cfg = settings("sink.test");
    cfg.protocol = Protocol::Smtp;
    let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
    assert!(!s.capabilities().pipelining);
    let out = send(&mut s, &rcpts(&["a@example.com", "b@example.com"]), BODY).await;
    assert_eq!(codes(&out), [250, 250]);
    let out = send(&mut s, &rcpts(&["c@example.com"]), BODY).await;
    assert_eq!(codes(&out), [250]);
    assert_eq!(sink.message_count(), 2);
}

fn tls_sink(ca: &TestCa, names: &[&str]) -> postern_testkit::sink::SinkBuilder {
    Sink::builder().tls(ca.issue(names).unwrap().server_config().unwrap())
}

#[tokio::test]
async fn tls_required_without_starttls_is_4_7_6() {
    let sink = Sink::builder().start().unwrap();
    let mut cfg = settings("sink.test");
    cfg.tls = TlsMode::Required;
    cfg.tls_config = Some(tls::client_config(TlsVerify::No, None).unwrap());
    let e = Session::connect(sink.addr(), &cfg).await.unwrap_err();
    assert!(matches!(e, SessionError::TlsRequired(_)), "{e:?}");
    assert!(!e.is_permanent());
    let r = e.reply();
    assert_eq!(
        (r.code, r.status),
        (451, Some(EnhancedStatus::new(4, 7, 6)))
    );
    assert_eq!(sink.message_count(), 0);
}

#[tokio::test]
async fn starttls_with_each_verification_level() {
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(dir.path()).unwrap();
    let sink = tls_sink(&ca, &["mx.example.com"])
        .require_tls()
        .start()
        .unwrap();
    let addr = sink.addr();
    let connect = |verify, name: &'static str, mode| {
        let mut cfg = settings(name);
        cfg.tls = mode;
        cfg.tls_config = Some(tls::client_config(verify, Some(&ca_file)).unwrap());
        async move { Session::connect(addr, &cfg).await }
    };
    let mut s = connect(TlsVerify::Host, "mx.example.com", TlsMode::Required)
        .await
        .unwrap();
    assert!(s.is_tls());
    assert!(
        !s.capabilities().starttls,
        "capabilities come from the EHLO after TLS"
    );
    send(&mut s, &rcpts(&["a@example.com"]), BODY).await;
    assert!(sink.messages()[0].tls);

    let e = connect(TlsVerify::Host, "other.example.com", TlsMode::Required)
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::Tls(_)), "{e:?}");
    assert_eq!(e.reply().status, Some(EnhancedStatus::new(4, 7, 5)));
    assert!(
        connect(TlsVerify::Ca, "other.example.com", TlsMode::Required)
            .await
            .unwrap()
            .is_tls()
    );

    // A certificate from a CA nobody trusts: only `no` accepts it.
    let stranger = TestCa::new().unwrap();
    let sink2 = tls_sink(&stranger, &["mx.example.com"]).start().unwrap();
    let mut cfg = settings("mx.example.com");
    cfg.tls = TlsMode::Required;
    cfg.tls_config = Some(tls::client_config(TlsVerify::Ca, Some(&ca_file)).unwrap());
    assert!(Session::connect(sink2.addr(), &cfg).await.is_err());
    cfg.tls_config = Some(tls::client_config(TlsVerify::No, None).unwrap());
    assert!(Session::connect(sink2.addr(), &cfg).await.unwrap().is_tls());
    // Opportunistic TLS falls back to a plain session when the handshake fails.
    cfg.tls = TlsMode::IfAvailable;
    cfg.tls_config = Some(tls::client_config(TlsVerify::Host, Some(&ca_file)).unwrap());
    let s = Session::connect(sink2.addr(), &cfg).await.unwrap();
    assert!(!s.is_tls());
}

#[tokio::test]
async fn implicit_tls_for_smtps() {
    let ca = TestCa::new().unwrap();
    let config = ca.issue(&["127.0.0.1"]).unwrap().server_config().unwrap();
    let sink = Sink::builder().implicit_tls(config).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings("127.0.0.1");
    cfg.implicit_tls = true;
    cfg.tls_config =
        Some(tls::client_config(TlsVerify::Host, Some(&ca.write_ca(dir.path()).unwrap())).unwrap());
    let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
    assert!(s.is_tls());
    send(&mut s, &rcpts(&["a@example.com"]), BODY).await;
    assert!(sink.messages()[0].tls);
}

#[tokio::test]
async fn auth_plain_and_login_over_tls_only_unless_the_route_says_so() {
    let ca = TestCa::new().unwrap();
    let sink = tls_sink(&ca, &["relay.test"])
        .auth("user", "pass word")
        .require_auth()
        .start()
        .unwrap();
    for mechanism in [AuthMech::Plain, AuthMech::Login] {
        let mut cfg = settings("relay.test");
        cfg.tls_config = Some(tls::client_config(TlsVerify::No, None).unwrap());
        cfg.auth = Some(Credentials {
            mechanism,
            user: "user".into(),
            password: "pass word".into(),
        });
        let mut s = Session::connect(sink.addr(), &cfg).await.unwrap();
        assert_eq!(s.authenticated(), Some("user"));
        assert_eq!(
            codes(&send(&mut s, &rcpts(&["a@example.com"]), BODY).await),
            [250]
        );
    }
    assert!(
        sink.messages()
            .iter()
            .all(|m| m.auth.as_deref() == Some("user") && m.tls)
    );

    // No TLS: the password is not sent, unless the route says tls=no.
    let plain = Sink::builder()
        .auth("user", "pw")
        .require_auth()
        .start()
        .unwrap();
    let mut cfg = settings("relay.test");
    cfg.auth = Some(Credentials {
        mechanism: AuthMech::Plain,
        user: "user".into(),
        password: "pw".into(),
    });
    let e = Session::connect(plain.addr(), &cfg).await.unwrap_err();
    assert!(
        matches!(&e, SessionError::Auth(why) if why.contains("not encrypted")),
        "{e:?}"
    );
    cfg.auth_without_tls = true;
    cfg.tls = TlsMode::No;
    assert_eq!(
        Session::connect(plain.addr(), &cfg)
            .await
            .unwrap()
            .authenticated(),
        Some("user")
    );
    // A wrong password.
    cfg.auth = Some(Credentials {
        mechanism: AuthMech::Login,
        user: "user".into(),
        password: "wrong".into(),
    });
    let e = Session::connect(plain.addr(), &cfg).await.unwrap_err();
    assert!(
        matches!(&e, SessionError::Auth(why) if why.contains("535")),
        "{e:?}"
    );
}

#[tokio::test]
async fn connection_failures_are_typed() {
    // Nothing listens on a port just freed.
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = Session::connect(addr, &settings("x")).await.unwrap_err();
    assert!(matches!(e, SessionError::Connect { .. }), "{e:?}");
    assert_eq!(e.reply().status, Some(EnhancedStatus::new(4, 4, 1)));

    let slow = Sink::builder()
        .delay(Duration::from_secs(3))
        .start()
        .unwrap();
    let mut cfg = settings("x");
    cfg.timeouts.ehlo = Duration::from_millis(300);
    let e = Session::connect(slow.addr(), &cfg).await.unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Timeout {
                phase: Phase::Greeting
            }
        ),
        "{e:?}"
    );

    let dropper = Sink::builder().drop_during_data().start().unwrap();
    let mut s = Session::connect(dropper.addr(), &settings("x"))
        .await
        .unwrap();
    let tx = Transaction {
        sender: "s@example.org",
        recipients: &rcpts(&["a@example.com"]),
        body: BODY,
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    };
    let e = s.send(&tx).await.unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Io {
                phase: Phase::Data | Phase::DataEnd,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(dropper.message_count(), 0);

    // Lost after the final dot: the phase says the message may be there.
    let dropper = Sink::builder().drop_after_data().start().unwrap();
    let mut s = Session::connect(dropper.addr(), &settings("x"))
        .await
        .unwrap();
    let e = s.send(&tx).await.unwrap_err();
    assert_eq!(e.phase(), Some(Phase::DataEnd), "{e:?}");
}

#[tokio::test]
async fn with_bdat_a_reused_session_is_stale_only_when_rset_says_so() {
    let tx = Transaction {
        sender: "s@example.org",
        recipients: &rcpts(&["a@example.com"]),
        body: b"x",
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    };
    let first = [
        ("", "220 x\r\n"),
        ("EHLO", "250-x\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
        ("MAIL", "250 2.1.0 ok\r\n"),
        ("RCPT", "250 2.1.5 ok\r\n"),
        ("BDAT 3 LAST", "250 2.0.0 queued\r\n"),
        ("x", ""),
    ];
    // The server closed the idle session, or said 421 to RSET: nothing
    // behind RSET was read, so the batch may go again at once (RSET).
    // Any other refusal of RSET: the message sent behind it may have
    // been taken (the end of the data).
    for (rset, phase) in [
        // A step RSET does not match: the server closes.
        (("QUIT", ""), Phase::Rset),
        (("RSET", "421 4.4.2 idle too long\r\n"), Phase::Rset),
        (("RSET", "500 5.5.1 no\r\n"), Phase::DataEnd),
    ] {
        let mut script = first.to_vec();
        script.push(rset);
        let server = scripted::start(&script);
        let mut s = Session::connect(server, &settings("x")).await.unwrap();
        assert_eq!(codes(&s.send(&tx).await.unwrap()), [250]);
        let e = s.send(&tx).await.unwrap_err();
        assert_eq!(e.phase(), Some(phase), "{rset:?}: {e:?}");
    }
}

#[tokio::test]
async fn the_source_address_is_the_bind_address() {
    let sink = Sink::builder().start().unwrap();
    let mut cfg = settings("x");
    cfg.bind = Some("127.0.0.9".parse().unwrap());
    let s = Session::connect(sink.addr(), &cfg).await.unwrap();
    assert_eq!(s.local_addr().ip().to_string(), "127.0.0.9");
    s.quit().await.unwrap();
    assert_eq!(
        sink.peers(),
        ["127.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn scripted_servers_test_the_edges() {
    // EHLO refused: HELO instead.
    let server = scripted::start(&[
        ("", "220 old.example\r\n"),
        ("EHLO", "502 5.5.1 what?\r\n"),
        ("HELO", "250 old.example\r\n"),
        ("QUIT", "221 bye\r\n"),
    ]);
    let s = Session::connect(server, &settings("x")).await.unwrap();
    assert_eq!(s.capabilities(), &postern_smtp::Capabilities::default());
    s.quit().await.unwrap();

    // A 421 greeting is the host refusing service.
    let server = scripted::start(&[("", "421 4.3.2 busy\r\n")]);
    let e = Session::connect(server, &settings("x")).await.unwrap_err();
    assert!(
        matches!(&e, SessionError::Rejected { phase: Phase::Greeting, reply } if reply.code == 421),
        "{e:?}"
    );

    // SIZE: a message over the server's limit is refused before MAIL.
    let server = scripted::start(&[("", "220 x\r\n"), ("EHLO", "250-x\r\n250 SIZE 10\r\n")]);
    let mut s = Session::connect(server, &settings("x")).await.unwrap();
    let out = send(&mut s, &rcpts(&["a@example.com"]), BODY).await;
    assert!(matches!(&out[0], Outcome::Permanent(r) if r.code == 552));

    // Garbage instead of a reply.
    let server = scripted::start(&[("", "220 x\r\n"), ("EHLO", "hello there\r\n")]);
    let e = Session::connect(server, &settings("x")).await.unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Protocol {
                phase: Phase::Hello,
                ..
            }
        ),
        "{e:?}"
    );
}
