//! Several transactions in one write (`Session::send_many`), against the
//! testkit's sink and against scripted servers for where a session breaks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod scripted;

use std::net::SocketAddr;
use std::time::Duration;

use postern_smtp::client::{
    ClientSettings, Outcome, Phase, Sent, Session, SessionError, Transaction,
};
use postern_smtp::xclient::Xclient;
use postern_testkit::sink::Sink;

fn settings() -> ClientSettings {
    let mut s = ClientSettings::new("postern.test", "x");
    s.timeouts.ehlo = Duration::from_secs(5);
    s.timeouts.mail_from = Duration::from_secs(5);
    s.timeouts.rcpt_to = Duration::from_secs(5);
    s.timeouts.data = Duration::from_secs(5);
    s
}

fn tx<'a>(to: &'a [String], body: &'a [u8]) -> Transaction<'a> {
    Transaction {
        sender: "s@example.org",
        recipients: to,
        body,
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    }
}

fn codes(outcomes: &[Vec<Outcome>]) -> Vec<Vec<u16>> {
    outcomes
        .iter()
        .map(|o| o.iter().map(|x| x.reply().code).collect())
        .collect()
}

/// The first recipient's reply of each transaction, as text.
fn finals(outcomes: &[Vec<Outcome>]) -> Vec<String> {
    outcomes.iter().map(|o| o[0].reply().to_string()).collect()
}

/// A scripted server's greeting and EHLO, then `steps`.
fn greeted(steps: &[&[(&'static str, &'static str)]]) -> Vec<(&'static str, &'static str)> {
    let mut script = vec![("", "220 x\r\n"), EHLO];
    for part in steps {
        script.extend_from_slice(part);
    }
    script
}

/// A scripted transaction of one recipient and the body `x`: MAIL and
/// RCPT accepted, `BDAT 3 LAST` answered with `queued`.
fn accepted(queued: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("MAIL", "250 ok\r\n"),
        ("RCPT", "250 ok\r\n"),
        ("BDAT 3 LAST", queued),
        ("x", ""),
    ]
}

const RSET: (&str, &str) = ("RSET", "250 ok\r\n");

const EHLO: (&str, &str) = ("EHLO", "250-x\r\n250-PIPELINING\r\n250 CHUNKING\r\n");

#[tokio::test]
async fn messages_go_together_and_each_keeps_its_outcomes() {
    let sink = Sink::builder()
        .permfail_rcpt("bad@example.com")
        .start()
        .unwrap();
    let mut s = Session::connect(sink.addr(), &settings()).await.unwrap();
    let (a, bad, c) = (
        vec!["a@example.com".to_owned()],
        vec!["bad@example.com".to_owned()],
        vec!["c@example.com".to_owned(), "bad@example.com".to_owned()],
    );
    let sent = s
        .send_many(&[tx(&a, b"one\r\n"), tx(&bad, b"two\r\n"), tx(&c, b"three\n")])
        .await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    assert_eq!(sent.written, 3);
    assert_eq!(
        codes(&sent.outcomes),
        [vec![250], vec![550], vec![250, 550]]
    );
    // A large body goes in a write of its own; the messages before and
    // after it still go together.
    let big = vec![b'x'; 70 * 1024];
    let sent = s
        .send_many(&[
            tx(&a, b"four"),
            tx(&a, b"five"),
            tx(&a, &big),
            tx(&a, b"six"),
            tx(&a, b"seven"),
        ])
        .await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    assert_eq!(sent.written, 5);
    assert_eq!(codes(&sent.outcomes), vec![vec![250]; 5]);
    s.quit().await.unwrap();
    let got = sink.messages();
    let pipelined: Vec<bool> = got.iter().map(|m| m.pipelined).collect();
    // The first of each write follows a read of the replies before it.
    assert_eq!(pipelined, [false, true, false, true, false, false, true]);
    assert!(got[4].body.starts_with(&big));
    assert_eq!(got[1].body, b"three\r\n");
    assert_eq!(got[1].rcpt_to, ["c@example.com"]);
}

#[tokio::test]
async fn a_run_cut_at_its_second_message_sends_its_first_with_the_body_already_made() {
    let sink = Sink::builder().start().unwrap();
    let mut s = Session::connect(sink.addr(), &settings()).await.unwrap();
    let a = vec!["a@example.com".to_owned()];
    let big = vec![b'y'; 70 * 1024];
    // The first message's canonical body, made when looking for a run,
    // is the one that goes when the run ends at the large message.
    let sent = s
        .send_many(&[tx(&a, b"eight\nlines\n"), tx(&a, &big)])
        .await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    assert_eq!(sent.written, 2);
    assert_eq!(codes(&sent.outcomes), vec![vec![250]; 2]);
    s.quit().await.unwrap();
    let got = sink.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, b"eight\r\nlines\r\n");
    assert!(got[1].body.starts_with(&big));
    assert!(got.iter().all(|m| !m.pipelined));
}

#[tokio::test]
async fn every_message_is_written_before_any_reply_is_read() {
    // The server answers nothing until it has read both messages: a
    // client that waited for the first one's replies would time out.
    let server = scripted::start(&[
        ("", "220 x\r\n"),
        EHLO,
        ("MAIL", ""),
        ("RCPT", ""),
        ("BDAT 3 LAST", ""),
        ("x", ""),
        ("RSET", ""),
        ("MAIL", ""),
        ("RCPT", ""),
        ("BDAT 3 LAST", ""),
        (
            "y",
            "250 ok\r\n250 ok\r\n250 queued 1\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 queued 2\r\n",
        ),
    ]);
    let mut s = Session::connect(server, &settings()).await.unwrap();
    let to = vec!["a@example.com".to_owned()];
    let sent = s.send_many(&[tx(&to, b"x"), tx(&to, b"y")]).await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    assert_eq!(finals(&sent.outcomes), ["250 queued 1", "250 queued 2"]);
}

/// Two messages in one write to a server that follows `second` after
/// answering the first: what completed, and where the session broke.
async fn break_at_second(second: &[(&'static str, &'static str)]) -> (usize, SessionError, usize) {
    let server = scripted::start(&greeted(&[&accepted("250 queued\r\n"), second]));
    let mut s = Session::connect(server, &settings()).await.unwrap();
    let to = vec!["a@example.com".to_owned()];
    let sent = s
        .send_many(&[tx(&to, b"x"), tx(&to, b"x"), tx(&to, b"x")])
        .await;
    (sent.outcomes.len(), sent.broke.unwrap(), sent.written)
}

#[tokio::test]
async fn where_the_session_breaks_decides_the_fate_of_the_messages_behind() {
    // Closed before RSET was answered: the server was reading on behind
    // the first message, so the second may have arrived.
    let (done, e, written) = break_at_second(&[("QUIT", "")]).await;
    assert_eq!((done, e.phase(), written), (1, Some(Phase::DataEnd), 3));
    // 421 to MAIL: the server refused and closes.
    let (done, e, _) =
        break_at_second(&[("RSET", "250 ok\r\n"), ("MAIL", "421 4.7.0 slow down\r\n")]).await;
    assert_eq!(done, 1);
    assert!(
        matches!(&e, SessionError::Rejected { reply, .. } if reply.code == 421),
        "{e:?}"
    );
    // Lost after MAIL was answered: the message was sent, it may have
    // arrived.
    let (done, e, written) =
        break_at_second(&[("RSET", "250 ok\r\n"), ("MAIL", "250 ok\r\n"), ("QUIT", "")]).await;
    assert_eq!((done, e.phase(), written), (1, Some(Phase::DataEnd), 3));
}

#[tokio::test]
async fn a_message_that_goes_alone_leaves_the_ones_after_it_together() {
    // The second message would be refused before MAIL (SMTPUTF8 is not
    // offered), so the first goes alone and the last two together; the
    // session breaks behind the third.
    let server = scripted::start(&greeted(&[
        &accepted("250 queued 1\r\n"),
        &[RSET],
        &accepted("250 queued 3\r\n"),
        &[("QUIT", "")],
    ]));
    let mut s = Session::connect(server, &settings()).await.unwrap();
    let to = vec!["a@example.com".to_owned()];
    let mut utf8 = tx(&to, b"x");
    utf8.smtputf8 = true;
    let sent = s
        .send_many(&[tx(&to, b"x"), utf8, tx(&to, b"x"), tx(&to, b"x")])
        .await;
    let finals = finals(&sent.outcomes);
    assert_eq!(finals.len(), 3, "{finals:?}");
    assert_eq!(finals[0], "250 queued 1");
    assert!(finals[1].starts_with("553 5.6.7"), "{finals:?}");
    assert_eq!(finals[2], "250 queued 3");
    // The fourth was written with the third: it may have arrived.
    assert_eq!(sent.written, 4);
    assert_eq!(sent.broke.unwrap().phase(), Some(Phase::DataEnd));
}

#[tokio::test]
async fn a_lone_message_that_breaks_leaves_the_ones_behind_unwritten() {
    // Two messages go together; the large third goes alone and the
    // server closes while its body comes: the fourth was never written.
    let server = scripted::start(&greeted(&[
        &accepted("250 queued 1\r\n"),
        &[RSET],
        &accepted("250 queued 2\r\n"),
        &[
            RSET,
            ("MAIL", "250 ok\r\n"),
            ("RCPT", "250 ok\r\n"),
            ("BDAT", ""),
            ("QUIT", ""),
        ],
    ]));
    let mut s = Session::connect(server, &settings()).await.unwrap();
    let to = vec!["a@example.com".to_owned()];
    let big = vec![b'x'; 70 * 1024];
    let sent = s
        .send_many(&[tx(&to, b"x"), tx(&to, b"x"), tx(&to, &big), tx(&to, b"x")])
        .await;
    assert_eq!(codes(&sent.outcomes), [vec![250], vec![250]]);
    assert!(sent.broke.is_some());
    assert_eq!(sent.written, 2);
}

#[tokio::test]
async fn a_refused_first_message_leaves_a_fresh_session_without_rset() {
    // The first message is refused before MAIL and never sent, so the
    // two behind it open the session's first transaction: no RSET.
    let server = scripted::start(&greeted(&[
        &accepted("250 queued 1\r\n"),
        &[RSET],
        &accepted("250 queued 2\r\n"),
    ]));
    let mut s = Session::connect(server, &settings()).await.unwrap();
    let to = vec!["a@example.com".to_owned()];
    let mut utf8 = tx(&to, b"x");
    utf8.smtputf8 = true;
    let sent = s.send_many(&[utf8, tx(&to, b"x"), tx(&to, b"x")]).await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    let finals = finals(&sent.outcomes);
    assert!(finals[0].starts_with("553 5.6.7"), "{finals:?}");
    assert_eq!(finals[1..], ["250 queued 1", "250 queued 2"]);
}

/// A session to `addr` that tells next hops the original client.
async fn xclient_session(addr: SocketAddr) -> Session {
    let mut settings = settings();
    settings.xclient = true;
    Session::connect(addr, &settings).await.unwrap()
}

/// [`tx`] of the original client `client`.
fn of_client<'a>(client: &'a Xclient, to: &'a [String], body: &'a [u8]) -> Transaction<'a> {
    Transaction {
        xclient: Some(client),
        ..tx(to, body)
    }
}

/// An original client, at 127.0.0.5.
fn a_client() -> Xclient {
    Xclient {
        addr: "127.0.0.5".parse().unwrap(),
        name: None,
        helo: "client.test".to_owned(),
        proto: "ESMTP".to_owned(),
    }
}

#[tokio::test]
async fn client_details_for_a_host_without_xclient_do_not_break_up_a_write() {
    let sink = Sink::builder().start().unwrap();
    let mut s = xclient_session(sink.addr()).await;
    let to = vec!["a@example.com".to_owned()];
    let client = a_client();
    let first = of_client(&client, &to, b"one\r\n");
    let sent = s.send_many(&[first, tx(&to, b"two\r\n")]).await;
    assert_eq!(codes(&sent.outcomes), [vec![250], vec![250]]);
    s.quit().await.unwrap();
    let pipelined: Vec<bool> = sink.messages().iter().map(|m| m.pipelined).collect();
    assert_eq!(pipelined, [false, true]);
}

#[tokio::test]
async fn a_message_without_client_details_is_not_sent_as_the_last_client() {
    // After one client's XCLIENT, a message of no client (a bounce, say)
    // tells the server the session's own address again.
    let sink = Sink::builder().xclient().start().unwrap();
    let mut s = xclient_session(sink.addr()).await;
    let to = vec!["a@example.com".to_owned()];
    let client = a_client();
    let first = of_client(&client, &to, b"one\r\n");
    let sent = s
        .send_many(&[
            first,
            tx(&to, b"two\r\n"),
            tx(&to, b"three\r\n"),
            tx(&to, b"four\r\n"),
        ])
        .await;
    assert_eq!(codes(&sent.outcomes), vec![vec![250]; 4]);
    s.quit().await.unwrap();
    let got = sink.messages();
    assert_eq!(got[0].xclient_addr(), Some("127.0.0.5"));
    assert_eq!(got[1].xclient_addr(), Some("127.0.0.1"));
    assert_eq!(got[3].xclient_addr(), Some("127.0.0.1"));
    // Once the session speaks for itself again, the next two share a
    // write.
    let pipelined: Vec<bool> = got.iter().map(|m| m.pipelined).collect();
    assert_eq!(pipelined, [false, false, false, true]);
}

const EHLO_XCLIENT: (&str, &str) = (
    "EHLO",
    "250-x\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 XCLIENT ADDR NAME HELO PROTO\r\n",
);

/// One client's message through XCLIENT (the server then answering EHLO
/// with `ehlo`), then `rest`, for `second` (another client, or none) and
/// a message of no client behind it.
async fn after_xclient(
    ehlo: (&'static str, &'static str),
    rest: &[(&'static str, &'static str)],
    second: Option<&Xclient>,
) -> Sent {
    let mut script = vec![("", "220 x\r\n"), EHLO_XCLIENT];
    script.extend([("XCLIENT", "220 ok\r\n"), ehlo]);
    script.extend(accepted("250 queued 1\r\n"));
    script.extend_from_slice(rest);
    let mut s = xclient_session(scripted::start(&script)).await;
    let to = vec!["a@example.com".to_owned()];
    let client = a_client();
    let then = Transaction {
        xclient: second,
        ..tx(&to, b"x")
    };
    s.send_many(&[of_client(&client, &to, b"x"), then, tx(&to, b"x")])
        .await
}

#[tokio::test]
async fn a_session_that_speaks_for_another_client_does_not_carry_the_message() {
    let another = Xclient {
        addr: "127.0.0.6".parse().unwrap(),
        ..a_client()
    };
    // The server refuses the next XCLIENT, or stops offering it after
    // the first: either way the session still speaks for 127.0.0.5.
    let refused = [("XCLIENT", "550 5.7.0 not authorized\r\n")];
    for second in [None, Some(&another)] {
        for (ehlo, rest) in [(EHLO_XCLIENT, &refused[..]), (EHLO, &[][..])] {
            let sent = after_xclient(ehlo, rest, second).await;
            assert_eq!(finals(&sent.outcomes), ["250 queued 1"], "{second:?}");
            assert!(
                matches!(sent.broke, Some(SessionError::OtherClient(_))),
                "{second:?}, {ehlo:?}: {:?}",
                sent.broke
            );
            assert_eq!(sent.written, 1, "{second:?}: nothing behind was sent");
        }
    }
}

#[tokio::test]
async fn messages_of_the_client_the_session_speaks_for_need_no_xclient_again() {
    // The server takes XCLIENT once a connection: the same client's
    // messages after the first go on as they are, and share a write.
    let sink = Sink::builder().xclient_once().start().unwrap();
    let mut s = xclient_session(sink.addr()).await;
    let to = vec!["a@example.com".to_owned()];
    let client = a_client();
    let txs: Vec<Transaction<'_>> = [&b"one\r\n"[..], b"two\r\n", b"three\r\n"]
        .into_iter()
        .map(|body| of_client(&client, &to, body))
        .collect();
    let sent = s.send_many(&txs).await;
    assert!(sent.broke.is_none(), "{:?}", sent.broke);
    assert_eq!(codes(&sent.outcomes), vec![vec![250]; 3]);
    s.quit().await.unwrap();
    let got = sink.messages();
    assert!(
        got.iter().all(|m| m.xclient_addr() == Some("127.0.0.5")),
        "{got:?}"
    );
    let pipelined: Vec<bool> = got.iter().map(|m| m.pipelined).collect();
    assert_eq!(pipelined, [false, false, true]);
    assert_eq!(sink.connections(), 1);
}
