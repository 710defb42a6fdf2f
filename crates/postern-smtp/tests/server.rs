//! The server session, driven by a raw client over real TCP: every reply
//! is checked as bytes on the wire.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_smtp::server::{DataReply, Envelope, Handler, ServerSettings, serve};
use postern_smtp::{Reply, ReplyParser};
use postern_testkit::tls::TestCa;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A message as the handler got it.
type Kept = (Envelope, Vec<u8>);

/// Accepts everything and keeps the messages.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<Kept>>>);

#[async_trait::async_trait]
impl Handler for Keep {
    async fn data(&mut self, envelope: &Envelope, body: Vec<u8>) -> DataReply {
        self.0.lock().unwrap().push((envelope.clone(), body));
        DataReply::One(Reply::with_status(250, (2, 0, 0), "queued"))
    }
}

/// A server with `settings` on a free port, serving until the test ends.
async fn server(settings: ServerSettings) -> (SocketAddr, Keep) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = Keep::default();
    let handler = keep.clone();
    let settings = Arc::new(settings);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut h = handler.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                let _ = serve(tcp, settings, &mut h).await;
            });
        }
    });
    (addr, keep)
}

struct Client {
    tcp: TcpStream,
    parser: ReplyParser,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let mut c = Client {
            tcp: TcpStream::connect(addr).await.unwrap(),
            parser: ReplyParser::default(),
            buf: Vec::new(),
        };
        assert_eq!(c.reply().await.code, 220);
        c
    }

    async fn send(&mut self, bytes: &str) {
        self.tcp.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// The next reply; panics on EOF.
    async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("a reply, not the end of the connection")
    }

    async fn try_reply(&mut self) -> Option<Reply> {
        loop {
            let mut bytes = &self.buf[..];
            let parsed = self.parser.parse(&mut bytes).unwrap();
            let used = self.buf.len() - bytes.len();
            self.buf.drain(..used);
            if let Some(r) = parsed {
                return Some(r);
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk));
            let n = read.await.expect("a reply within 5 s").unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `command` and returns the reply as `CODE STATUS`.
    async fn ask(&mut self, command: &str) -> String {
        self.send(command).await;
        short(&self.reply().await)
    }
}

fn short(r: &Reply) -> String {
    match r.status {
        Some(s) => format!("{} {s}", r.code),
        None => r.code.to_string(),
    }
}

fn settings() -> ServerSettings {
    ServerSettings::new("mx.test")
}

#[tokio::test]
async fn a_pipelined_transaction_is_answered_in_order() {
    let (addr, keep) = server(settings()).await;
    let mut c = Client::connect(addr).await;
    let ehlo = {
        c.send("EHLO client.test\r\n").await;
        c.reply().await
    };
    for keyword in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            ehlo.lines.iter().any(|l| l == keyword),
            "{keyword} in {ehlo:?}"
        );
    }
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"));
    c.send(
        "MAIL FROM:<s@example.org> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<a@example.com>\r\n\
         RCPT TO:<\"quoted local\"@example.com>\r\nDATA\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(short(&c.reply().await));
    }
    assert_eq!(got, ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]);
    c.send("Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nNOOP\r\n")
        .await;
    assert_eq!(short(&c.reply().await), "250 2.0.0");
    assert_eq!(short(&c.reply().await), "250 2.0.0");
    assert_eq!(c.ask("QUIT\r\n").await, "221 2.0.0");
    assert!(c.try_reply().await.is_none(), "closed after QUIT");
    let kept = keep.0.lock().unwrap();
    let (env, body) = &kept[0];
    assert_eq!(env.mail_from, "s@example.org");
    // The local part is kept unquoted; the client quotes it again.
    assert_eq!(env.rcpt_to, ["a@example.com", "quoted local@example.com"]);
    assert_eq!(env.declared_size, Some(100));
    assert!(env.eight_bit);
    assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
}

#[tokio::test]
async fn an_empty_message_and_a_dot_on_the_first_line() {
    let (addr, keep) = server(settings()).await;
    let mut c = Client::connect(addr).await;
    c.ask("EHLO c\r\n").await;
    for body in [".\r\n", "..first\r\n.\r\n"] {
        c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
            .await;
        for want in ["250 2.1.0", "250 2.1.5", "354"] {
            assert_eq!(short(&c.reply().await), want);
        }
        assert_eq!(c.ask(body).await, "250 2.0.0");
    }
    let kept = keep.0.lock().unwrap();
    assert_eq!(kept[0].1, b"");
    assert_eq!(kept[1].1, b".first\r\n");
}

#[tokio::test]
async fn commands_out_of_sequence_or_malformed_get_their_rfc_5321_reply() {
    let (addr, _) = server(settings()).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("EHLO c\r\n").await, "250");
    assert_eq!(c.ask("RCPT TO:<a@b.example>\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("DATA\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("FROB\r\n").await, "500 5.5.2");
    assert_eq!(c.ask("MAIL FROM:<not an address\r\n").await, "501 5.1.7");
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "250 2.1.0");
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("RCPT TO:<bad address>\r\n").await, "501 5.1.3");
    assert_eq!(c.ask("DATA\r\n").await, "554 5.5.1");
    assert_eq!(c.ask("VRFY someone\r\n").await, "252 2.5.2");
    assert_eq!(c.ask("EXPN list\r\n").await, "502 5.5.1");
    assert_eq!(c.ask("STARTTLS\r\n").await, "502 5.5.1");
    assert_eq!(c.ask("AUTH PLAIN AHUAcA==\r\n").await, "502 5.5.1");
    let long = format!("NOOP {}\r\n", "x".repeat(5000));
    assert_eq!(c.ask(&long).await, "500 5.5.2");
    assert_eq!(c.ask("RSET\r\n").await, "250 2.0.0");
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0");
}

#[tokio::test]
async fn size_limits_recipient_limits_and_an_unknown_lmtp_greeting() {
    let mut s = settings();
    s.max_message_size = 100;
    s.max_recipients = 2;
    let (addr, keep) = server(s).await;
    let mut c = Client::connect(addr).await;
    c.ask("EHLO c\r\n").await;
    assert_eq!(
        c.ask("MAIL FROM:<a@b.example> SIZE=101\r\n").await,
        "552 5.3.4"
    );
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "250 2.1.0");
    assert_eq!(c.ask("RCPT TO:<1@b.example>\r\n").await, "250 2.1.5");
    assert_eq!(c.ask("RCPT TO:<2@b.example>\r\n").await, "250 2.1.5");
    assert_eq!(c.ask("RCPT TO:<3@b.example>\r\n").await, "452 4.5.3");
    assert_eq!(c.ask("DATA\r\n").await, "354");
    let body = format!("{}\r\n.\r\n", "y".repeat(300));
    assert_eq!(c.ask(&body).await, "552 5.3.4");
    assert!(keep.0.lock().unwrap().is_empty(), "nothing half-kept");
    // The session goes on.
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "250 2.1.0");
    assert_eq!(c.ask("LHLO c\r\n").await, "500 5.5.1");
}

#[tokio::test]
async fn bdat_chunks_are_read_whole_in_any_state_and_make_one_message() {
    let mut s = settings();
    s.max_message_size = 100;
    let (addr, keep) = server(s).await;
    let mut c = Client::connect(addr).await;
    c.send("EHLO c\r\n").await;
    assert!(c.reply().await.lines.iter().any(|l| l == "CHUNKING"));
    // A chunk is read even when refused: its bytes are never commands.
    assert_eq!(c.ask("BDAT 6\r\nQUIT\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0");
    // Two chunks, pipelined behind the envelope; a dot line is data.
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 6\r\na\r\n.\r\nBDAT 4 LAST\r\nbc\r\n")
        .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(short(&c.reply().await));
    }
    assert_eq!(got, ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]);
    // DATA may not follow BDAT in one transaction; BDAT 0 LAST ends it.
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 3\r\nxyz")
        .await;
    for want in ["250 2.1.0", "250 2.1.5", "250 2.0.0"] {
        assert_eq!(short(&c.reply().await), want);
    }
    assert_eq!(c.ask("DATA\r\n").await, "503 5.5.1");
    assert_eq!(c.ask("BDAT 0 LAST\r\n").await, "250 2.0.0");
    // Over the size limit across chunks: 552 at the last, nothing kept.
    let chunk = "y".repeat(80);
    c.send(&format!(
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 80\r\n{chunk}BDAT 80 LAST\r\n{chunk}"
    ))
    .await;
    for want in ["250 2.1.0", "250 2.1.5", "250 2.0.0", "552 5.3.4"] {
        assert_eq!(short(&c.reply().await), want);
    }
    // No valid recipient: the chunk is read and refused.
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<bad address>\r\nBDAT 3 LAST\r\nabc")
        .await;
    for want in ["250 2.1.0", "501 5.1.3", "554 5.5.1"] {
        assert_eq!(short(&c.reply().await), want);
    }
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0");
    let kept = keep.0.lock().unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].1, b"a\r\n.\r\nbc\r\n");
    assert_eq!(kept[1].1, b"xyz");
    assert!(kept.iter().all(|(env, _)| env.chunked));
}

#[tokio::test]
async fn without_chunking_bdat_is_not_offered_nor_taken() {
    let mut s = settings();
    s.chunking = false;
    let (addr, _) = server(s).await;
    let mut c = Client::connect(addr).await;
    c.send("EHLO c\r\n").await;
    assert!(!c.reply().await.lines.iter().any(|l| l == "CHUNKING"));
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "250 2.1.0");
    assert_eq!(c.ask("RCPT TO:<c@d.example>\r\n").await, "250 2.1.5");
    assert_eq!(c.ask("BDAT 0 LAST\r\n").await, "502 5.5.1");
}

#[tokio::test]
async fn lmtp_answers_once_per_recipient() {
    let mut s = settings();
    s.lmtp = true;
    let (addr, keep) = server(s).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask("EHLO c\r\n").await, "500 5.5.1");
    assert_eq!(c.ask("LHLO c\r\n").await, "250");
    c.send("MAIL FROM:<>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n")
        .await;
    for want in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"] {
        assert_eq!(short(&c.reply().await), want);
    }
    c.send("hi\r\n.\r\n").await;
    assert_eq!(short(&c.reply().await), "250 2.0.0");
    assert_eq!(short(&c.reply().await), "250 2.0.0");
    assert_eq!(keep.0.lock().unwrap()[0].0.mail_from, "");
}

#[tokio::test]
async fn limits_on_idle_commands_errors_and_time_close_the_session() {
    let mut s = settings();
    s.max_idle_commands = 3;
    s.max_errors = 2;
    s.command_timeout = Duration::from_millis(300);
    let (addr, _) = server(s).await;

    let mut c = Client::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0");
    }
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0");
    assert_eq!(short(&c.reply().await), "421 4.7.0");
    assert!(c.try_reply().await.is_none());

    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask("FROB\r\n").await, "500 5.5.2");
    assert_eq!(c.ask("FROB\r\n").await, "500 5.5.2");
    assert_eq!(c.ask("FROB\r\n").await, "500 5.5.2");
    assert_eq!(short(&c.reply().await), "421 4.7.0");

    let mut c = Client::connect(addr).await;
    assert_eq!(short(&c.reply().await), "421 4.4.2");
    assert!(c.try_reply().await.is_none());
}

#[tokio::test]
async fn starttls_resets_the_session_and_refuses_smuggled_commands() {
    let ca = TestCa::new().unwrap();
    let mut s = settings();
    s.tls = Some(ca.issue(&["mx.test"]).unwrap().server_config().unwrap());
    s.require_tls = true;
    let (addr, _) = server(s).await;
    let mut c = Client::connect(addr).await;
    c.send("EHLO c\r\n").await;
    assert!(c.reply().await.lines.iter().any(|l| l == "STARTTLS"));
    assert_eq!(c.ask("MAIL FROM:<a@b.example>\r\n").await, "530 5.7.0");
    // Commands after STARTTLS in the same packet must not be executed.
    c.send("STARTTLS\r\nMAIL FROM:<evil@b.example>\r\n").await;
    assert_eq!(short(&c.reply().await), "220 2.0.0");
    assert!(
        c.try_reply().await.is_none(),
        "connection closed, nothing smuggled"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn no_input_stops_the_server(garbage in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (addr, _) = server(settings()).await;
            let mut c = Client::connect(addr).await;
            c.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n").await;
            let _ = c.tcp.write_all(&garbage).await;
            drop(c);
            let mut again = Client::connect(addr).await;
            assert_eq!(again.ask("EHLO c\r\n").await, "250");
        });
    }
}

#[tokio::test]
async fn envelopes_are_valid_utf8_smtputf8_when_not_ascii_and_without_trailing_dots() {
    let (addr, keep) = server(settings()).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask("EHLO c\r\n").await, "250");
    // Invalid UTF-8 is refused, never replaced.
    c.tcp
        .write_all(b"MAIL FROM:<a\xff@x.test>\r\n")
        .await
        .unwrap();
    assert_eq!(short(&c.reply().await), "553 5.1.7");
    // Non-ASCII needs SMTPUTF8.
    assert_eq!(c.ask("MAIL FROM:<j\u{f6}rg@x.test>\r\n").await, "553 5.6.7");
    assert_eq!(c.ask("MAIL FROM:<s@x.test.>\r\n").await, "250 2.1.0");
    c.tcp
        .write_all(b"RCPT TO:<b\xfe@y.test>\r\n")
        .await
        .unwrap();
    assert_eq!(short(&c.reply().await), "553 5.1.3");
    assert_eq!(c.ask("RCPT TO:<m\u{fc}ller@y.test>\r\n").await, "553 5.6.7");
    assert_eq!(c.ask("RCPT TO:<r@Relay.Test.>\r\n").await, "250 2.1.5");
    assert_eq!(c.ask("RCPT TO:<Postmaster>\r\n").await, "250 2.1.5");
    assert_eq!(c.ask("DATA\r\n").await, "354");
    assert_eq!(c.ask("Subject: x\r\n\r\nx\r\n.\r\n").await, "250 2.0.0");
    assert_eq!(
        c.ask("MAIL FROM:<j\u{f6}rg@x.test> SMTPUTF8\r\n").await,
        "250 2.1.0"
    );
    assert_eq!(c.ask("RCPT TO:<m\u{fc}ller@y.test>\r\n").await, "250 2.1.5");
    let kept = keep.0.lock().unwrap().clone();
    let (envelope, _) = &kept[0];
    assert_eq!(envelope.mail_from, "s@x.test");
    assert_eq!(envelope.rcpt_to, ["r@Relay.Test", "postmaster@mx.test"]);
}

#[tokio::test]
async fn a_trickling_client_is_closed_by_the_command_deadline_and_idle_sessions_by_shutdown() {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut s = settings();
    s.command_timeout = Duration::from_millis(800);
    s.shutdown = Some(stopped);
    let (addr, _) = server(s).await;
    // One byte every 200 ms never completes a command within 800 ms.
    let mut c = Client::connect(addr).await;
    let started = std::time::Instant::now();
    for b in b"NOOP NOOP NOOP NOOP\r\n" {
        if c.tcp.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert_eq!(short(&c.reply().await), "421 4.4.2");
    assert!(c.try_reply().await.is_none());
    // Shutdown: an idle session gets 421 4.3.2 at once; one inside a
    // transaction goes on.
    let mut idle = Client::connect(addr).await;
    let mut busy = Client::connect(addr).await;
    assert_eq!(busy.ask("EHLO c\r\n").await, "250");
    assert_eq!(busy.ask("MAIL FROM:<s@x.test>\r\n").await, "250 2.1.0");
    stop.send(true).unwrap();
    assert_eq!(short(&idle.reply().await), "421 4.3.2");
    assert_eq!(busy.ask("RCPT TO:<r@y.test>\r\n").await, "250 2.1.5");
}
