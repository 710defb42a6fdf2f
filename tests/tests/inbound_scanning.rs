//! The inbound gateway with a real content scanner: Debian's rspamd in
//! milter mode (the testkit's), the real daemon, a primary server (sink).
//! GTUBE is refused in the SMTP session with rspamd's reply; a clean
//! message is forwarded with the scan header; a medium one gets its
//! subject prefix; with rspamd stopped, `On_Failure` decides (451, or
//! accepted unscored). XCLIENT: a primary that offers it learns the
//! original client; one that does not gets none. `all_but_specified`
//! accepts every domain but the listed ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Setup, codes, fixture, free_addr, inject, wait_until};
use postern_testkit::dns::DnsServer;
use postern_testkit::rspamd::{GTUBE, MEDIUM_SUBJECT, RspamdServer};
use postern_testkit::sink::Sink;
use serde_json::{Value, json};

/// Plain, well-formed mail from a client that is not a relay host.
fn mail(port: u16, rcpt: &str, subject: &str, text: &str) -> Value {
    json!({
        "port": port,
        "count": 1,
        "source": "127.0.0.2",
        "helo": "client.example",
        "sender": "alice@example.org",
        "rcpts": [rcpt],
        "subject": subject,
        "text": text,
        "headers": {
            "From": "Alice <alice@example.org>",
            "To": rcpt,
            "Date": "Tue, 01 Dec 2026 08:00:00 +0000",
            "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=utf-8"
        }
    })
}

fn header(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
}

fn events<'a>(log: &'a [Value], event: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["event"] == event).collect()
}

#[test]
fn rspamd_refuses_gtube_forwards_clean_mail_prefixes_medium_and_on_failure_decides() {
    let mut rspamd = RspamdServer::start().unwrap();
    let http = free_addr("127.0.0.1");
    let primary = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let body = format!(
        "Relay_Domains = ( \"inbound.test\" \"open.test\" )\n\
         Gateway = \"{primary}\"\n\
         Milter \"rspamd\" {{ Address = \"{rspamd}\" Timeout = 30 On_Failure = tempfail }}\n\
         Milter \"rspamd-or-accept\" {{ Address = \"{rspamd}\" Timeout = 30 On_Failure = accept }}\n\
         Inbound_Milters = ( \"rspamd\" )\n\
         Submission_Milters = ( \"rspamd\" )\n\
         Domain \"open.test\" {{ Inbound_Milters = ( \"rspamd-or-accept\" ) }}\n\
         HTTP_Listener {{ Listen \"{http}\" {{ }} Relay_Hosts = ( \"127.0.0.1/32\" ) }}\n",
        primary = primary.addr(),
        rspamd = rspamd.addr(),
    );
    let setup = Setup::new(&dns, &body);
    let daemon = setup.start();
    let port = setup.listen.port();

    let spam = inject(mail(
        port,
        "bob@inbound.test",
        "hello",
        &format!("Here:\r\n{GTUBE}"),
    ));
    assert_eq!(codes(&spam), [554], "{spam:?}");
    let error = spam[0]["error"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        error.contains("5.7.1") && error.contains("gtube"),
        "rspamd's reply: {error}"
    );

    let clean = inject(mail(
        port,
        "bob@inbound.test",
        "Lunch on Friday",
        "Shall we meet at noon?",
    ));
    assert_eq!(codes(&clean), [250], "{clean:?}");
    let medium = inject(mail(port, "carol@inbound.test", MEDIUM_SUBJECT, "Buy now."));
    assert_eq!(codes(&medium), [250], "{medium:?}");
    wait_until(Duration::from_secs(30), "both forwarded", || {
        primary.message_count() == 2
    });

    let forwarded = primary.messages();
    let clean_copy = forwarded
        .iter()
        .find(|m| m.rcpt_to == ["bob@inbound.test"])
        .unwrap();
    assert!(
        header(&clean_copy.body, "X-Spamd-Result").is_some(),
        "scan headers added"
    );
    assert_eq!(
        header(&clean_copy.body, "Subject").as_deref(),
        Some("Lunch on Friday")
    );
    assert!(!String::from_utf8_lossy(&clean_copy.body).contains(GTUBE));
    let medium_copy = forwarded
        .iter()
        .find(|m| m.rcpt_to == ["carol@inbound.test"])
        .unwrap();
    let subject = header(&medium_copy.body, "Subject").unwrap();
    assert_eq!(subject, format!("[SPAM] {MEDIUM_SUBJECT}"));
    assert!(
        header(&medium_copy.body, "X-Spam-Status")
            .unwrap()
            .contains("level=medium")
    );

    // Injected over HTTP, the mail is submitted: Submission_Milters.
    let post = |content: &str| {
        let spec = json!({"port": http.port(), "body": {
            "envelope_sender": "alice@example.org",
            "recipients": [{"email": "frank@inbound.test"}],
            "content": format!("From: alice@example.org\r\nTo: frank@inbound.test\r\nSubject: http\r\nDate: Tue, 01 Dec 2026 08:00:00 +0000\r\n\r\n{content}\r\n"),
        }});
        fixture("http_inject.py", &spec).remove(0)
    };
    let refused_http = post(&format!("Here:\r\n{GTUBE}"));
    assert_eq!(refused_http["status"], 200, "{refused_http}");
    assert_eq!(refused_http["body"]["fail_count"], 1, "{refused_http}");
    let error = refused_http["body"]["errors"][0].as_str().unwrap();
    assert!(error.contains("554 5.7.1"), "{error}");
    let clean_http = post("Hello over HTTP.");
    assert_eq!(clean_http["body"]["success_count"], 1, "{clean_http}");
    wait_until(
        Duration::from_secs(30),
        "the HTTP message forwarded",
        || primary.message_count() == 3,
    );

    let log = setup.log();
    let refused = events(&log, "scan");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["scan"]["scanner"], "rspamd");
    assert_eq!(refused[0]["scan"]["verdict"], "reject");
    let receptions = events(&log, "reception");
    let levels: Vec<&Value> = receptions.iter().map(|r| &r["scan"]["level"]).collect();
    assert_eq!(levels, ["none", "medium", "none"], "{receptions:?}");
    assert_eq!(receptions[1]["scan"]["action"], "prefix");
    assert!(receptions[1]["scan"]["score"].as_f64().unwrap() >= 10.0);

    // The scanner stopped: tempfail (nothing stored), or accept unscored.
    rspamd.stop();
    let waiting = inject(mail(port, "dave@inbound.test", "Later", "Hello."));
    assert_eq!(codes(&waiting), [451], "{waiting:?}");
    let unscanned = inject(mail(port, "erin@open.test", "Unscanned", "Hello."));
    assert_eq!(codes(&unscanned), [250], "{unscanned:?}");
    wait_until(
        Duration::from_secs(30),
        "the unscanned message forwarded",
        || primary.message_count() == 4,
    );
    assert!(
        primary
            .messages()
            .iter()
            .all(|m| m.rcpt_to != ["dave@inbound.test"])
    );
    let log = setup.log();
    let failed = events(&log, "scan");
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[2]["scan"]["verdict"], "failed");
    assert!(
        failed[2]["reply"]
            .as_str()
            .unwrap()
            .starts_with("451 4.7.1")
    );
    let last = events(&log, "reception").pop().unwrap().clone();
    assert_eq!(last["scan"]["level"], "unscored");

    let (status, metrics) = common::get(setup.metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("postern_scans_total{verdict=\"reject\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("postern_spam_levels_total{level=\"medium\"} 1"));
    assert!(metrics.contains("postern_milter_failures_total 2"));
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn quarantined_mail_goes_to_the_quarantine_mailbox_instead() {
    let rspamd = RspamdServer::start_quarantining().unwrap();
    let primary = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let body = format!(
        "Relay_Domains = ( \"inbound.test\" )\n\
         Gateway = \"{primary}\"\n\
         Milter \"rspamd\" {{ Address = \"{rspamd}\" }}\n\
         Inbound_Milters = ( \"rspamd\" )\n\
         Spam_Medium_Action = quarantine\n\
         Spam_Quarantine = \"quarantine@inbound.test\"\n",
        primary = primary.addr(),
        rspamd = rspamd.addr(),
    );
    let setup = Setup::new(&dns, &body);
    let daemon = setup.start();
    let port = setup.listen.port();

    // rspamd asks for quarantine (instead of its reject); the medium
    // level's action is quarantine.
    let held = inject(mail(
        port,
        "bob@inbound.test",
        "hello",
        &format!("Here:\r\n{GTUBE}"),
    ));
    assert_eq!(codes(&held), [250], "{held:?}");
    let medium = inject(mail(port, "carol@inbound.test", MEDIUM_SUBJECT, "Buy now."));
    assert_eq!(codes(&medium), [250], "{medium:?}");
    wait_until(Duration::from_secs(30), "both quarantined", || {
        primary.message_count() == 2
    });
    for m in primary.messages() {
        assert_eq!(m.rcpt_to, ["quarantine@inbound.test"]);
    }
    let log = setup.log();
    let receptions = events(&log, "reception");
    let verdicts: Vec<(&Value, &Value)> = receptions
        .iter()
        .map(|r| (&r["scan"]["verdict"], &r["scan"]["action"]))
        .collect();
    assert_eq!(
        verdicts,
        [
            (&json!("quarantine"), &json!("quarantine")),
            (&json!("accept"), &json!("quarantine"))
        ]
    );
    let gtube_copy = primary
        .messages()
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.body).contains(GTUBE))
        .unwrap();
    assert!(header(&gtube_copy.body, "X-Quarantine-Reason").is_some());
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn xclient_goes_only_to_a_next_hop_that_offers_it_and_all_but_specified_relays() {
    let offers = Sink::builder().xclient().start().unwrap();
    let plain = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let body = format!(
        "Relay_Domain_Verification = all_but_specified\n\
         Relay_Domains = ( \"blocked.test\" )\n\
         Domain \"xc.test\" {{ Routes = ( \"smtp://{offers}?xclient=yes\" ) }}\n\
         Domain \"plain.test\" {{ Gateway = \"{plain}\" Outbound_XCLIENT = true }}\n",
        offers = offers.addr(),
        plain = plain.addr(),
    );
    let setup = Setup::new(&dns, &body);
    let daemon = setup.start();
    let port = setup.listen.port();

    assert_eq!(codes(&inject(mail(port, "a@xc.test", "one", "x"))), [250]);
    assert_eq!(
        codes(&inject(mail(port, "b@plain.test", "two", "y"))),
        [250]
    );
    let blocked = inject(mail(port, "c@blocked.test", "three", "z"));
    assert_eq!(codes(&blocked), [550], "{blocked:?}");
    wait_until(Duration::from_secs(30), "both delivered", || {
        offers.message_count() == 1 && plain.message_count() == 1
    });

    let told = &offers.messages()[0].xclient;
    let get = |name: &str| {
        told.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("ADDR"), Some("127.0.0.2"), "{told:?}");
    assert_eq!(get("HELO"), Some("client.example"));
    assert_eq!(get("NAME"), Some("[UNAVAILABLE]"));
    assert_eq!(get("PROTO"), Some("ESMTP"));
    // The session went on after XCLIENT: EHLO again, then the message.
    assert_eq!(offers.messages()[0].helo, "postern.test");
    assert!(
        plain.messages()[0].xclient.is_empty(),
        "no XCLIENT to a host that does not offer it"
    );
    assert_eq!(daemon.terminate(), Some(0));
}
