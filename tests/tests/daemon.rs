//! The real daemon, fed by Python's smtplib, delivering to testkit sinks
//! with the testkit's DNS server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    ClosedPort, Setup, codes, inject, received_ids, script, segments_started, wait_until,
};
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use serde_json::{Value, json};

#[test]
fn mail_is_delivered_by_the_seed_routing_and_logged() {
    let smart = Sink::builder().start().unwrap();
    let mx = Sink::builder()
        .ip("127.0.0.2".parse().unwrap())
        .start()
        .unwrap();
    let dns = DnsServer::builder()
        .a("my.local.smart.host", "127.0.0.1".parse().unwrap())
        .mx("example.net", 10, "mx.example.net")
        .a("mx.example.net", "127.0.0.2".parse().unwrap())
        .start()
        .unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Remote_SMTP_Port = {}\nDomain \"example.com\" {{ Routes = ( \"smtp://my.local.smart.host:{}?pref=1\" \"__mx__\" ) }}\n\
             Domain \"example.net\" {{ Outbound_Chunking = false }}",
            mx.addr().port(),
            smart.addr().port()
        ),
    );
    let daemon = setup.start();
    let results = inject(json!({
        "port": setup.listen.port(),
        "count": 2,
        "rcpts": ["a@example.com", "b@example.net"],
    }));
    assert_eq!(codes(&results), [250, 250]);
    wait_until(Duration::from_secs(15), "delivery", || {
        smart.message_count() == 2 && mx.message_count() == 2
    });
    let got = smart.messages();
    assert_eq!(got[0].rcpt_to, ["a@example.com"]);
    assert_eq!(mx.messages()[0].rcpt_to, ["b@example.net"]);
    // BDAT where the sink offers CHUNKING, DATA where the domain says not to.
    assert!(got.iter().all(|m| m.chunked));
    assert!(mx.messages().iter().all(|m| !m.chunked));
    let body = String::from_utf8_lossy(&got[0].body);
    assert!(body.starts_with("Received: from "), "{body}");
    assert!(
        body.contains(" (127.0.0.1)\r\n\tby postern.test (Postern) with ESMTP id "),
        "{body}"
    );
    assert_eq!(daemon.terminate(), Some(0));
    let log = setup.log();
    let events: Vec<&str> = log.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events.iter().filter(|e| **e == "reception").count(),
        2,
        "{events:?}"
    );
    let delivery = log
        .iter()
        .find(|e| e["event"] == "delivery" && e["domain"] == "example.net")
        .unwrap();
    for field in [
        "time",
        "queue_id",
        "message_id",
        "binding",
        "sender",
        "rcpt",
        "host",
        "ip",
        "port",
        "code",
        "enhanced_code",
        "reply",
        "attempt",
    ] {
        assert!(!delivery[field].is_null(), "{field} in {delivery}");
    }
    assert_eq!(delivery["host"], "mx.example.net");
    assert_eq!(delivery["code"], 250);
}

/// What the spool's segments are when the kill comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segments {
    /// One large segment, appended to.
    Appended,
    /// Small segments, the destination down: the spool moves to
    /// zero-filled segments after a few kilobytes.
    ZeroFilled,
    /// Small segments, the destination up: delivered mail is reclaimed
    /// and its segments are overwritten as spares.
    Reused,
}

#[test]
fn kill_9_during_injection_loses_no_accepted_message() {
    kill_9_during_injection(Segments::Appended);
}

#[test]
fn kill_9_while_commits_overwrite_zero_filled_segments_loses_nothing() {
    kill_9_during_injection(Segments::ZeroFilled);
}

#[test]
fn kill_9_while_commits_overwrite_reused_segments_loses_nothing() {
    kill_9_during_injection(Segments::Reused);
}

fn kill_9_during_injection(segments: Segments) {
    let spool = if segments == Segments::Appended {
        ""
    } else {
        "\nSpool_Segment_Size = 65536"
    };
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let sink_addr = destination.addr;
    let setup = Setup::new(&dns, &format!("Gateway = \"{sink_addr}\"{spool}"));
    // Reused segments need deliveries (and reclaiming) while the mail
    // comes in; otherwise the destination is down until the restart:
    // `Ok` holds the sink that is up, `Err` the port still closed.
    let destination = if segments == Segments::Reused {
        Ok(destination.open(Sink::builder()))
    } else {
        Err(destination)
    };
    let daemon = setup.start();
    let mut injector = Command::new("python3")
        .arg(script())
        .arg(
            json!({"port": setup.listen.port(), "count": 4000, "rcpts": ["r@dest.example"]})
                .to_string(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let acked = acked.clone();
        let out = injector.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["code"] == 250 {
                    acked
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_owned());
                }
            }
        })
    };
    let wanted = match segments {
        Segments::Appended => "",
        Segments::ZeroFilled => "zero_filled",
        Segments::Reused => "reused",
    };
    wait_until(
        Duration::from_secs(60),
        "500 accepted messages and a segment started as wanted",
        || {
            acked.lock().unwrap().len() >= 500
                && (wanted.is_empty() || segments_started(&setup, wanted) >= 1)
        },
    );
    daemon.kill_9();
    let _ = injector.wait();
    reader.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < 4000, "the kill came during the injection");

    let sink = destination.unwrap_or_else(|closed| closed.open(Sink::builder()));
    let daemon = setup.start();
    wait_until(Duration::from_secs(60), "every accepted message", || {
        let ids = received_ids(&sink);
        acked.iter().all(|id| ids.contains_key(id))
    });
    let ids = received_ids(&sink);
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9: {} messages got 250, {} arrived, {duplicates} duplicates",
        acked.len(),
        ids.len()
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn relay_control_and_the_inbound_gateway() {
    let primary = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Relay_Domains = ( \"inbound.test\" )\nDomain \"inbound.test\" {{ Gateway = \"{}\" }}",
            primary.addr()
        ),
    );
    let daemon = setup.start();
    let outsider = json!({"port": setup.listen.port(), "count": 1, "source": "127.0.0.2"});
    let mut spec = outsider.clone();
    spec["rcpts"] = json!(["someone@elsewhere.test"]);
    let denied = inject(spec);
    assert_eq!(codes(&denied), [550]);
    assert!(
        denied[0]["error"].as_str().unwrap().contains("5.7.1"),
        "{denied:?}"
    );
    let mut spec = outsider;
    spec["rcpts"] = json!(["user@inbound.test"]);
    assert_eq!(codes(&inject(spec)), [250]);
    wait_until(Duration::from_secs(15), "forwarding", || {
        primary.message_count() == 1
    });
    assert_eq!(primary.messages()[0].rcpt_to, ["user@inbound.test"]);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn relay_domain_recipients_are_verified_by_callout_and_starttls_is_offered() {
    let primary = Sink::builder()
        .permfail_rcpt("nobody@inbound.test")
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let ca = postern_testkit::tls::TestCa::new().unwrap();
    let setup = Setup::new(&dns, "");
    let (cert, key) = ca
        .issue(&["postern.test"])
        .unwrap()
        .write(setup.dir.path())
        .unwrap();
    let extra = format!(
        "Relay_Domains = ( \"inbound.test\" )\nDomain \"inbound.test\" {{\n  Gateway = \"{}\"\n  Recipient_Verification = callout\n}}\n\
         ESMTP_Listener {{ TLS_Certificate = \"{}\" TLS_Key = \"{}\" }}\n",
        primary.addr(),
        cert.display(),
        key.display()
    );
    let mut text = std::fs::read_to_string(setup.config()).unwrap();
    text.push_str(&extra);
    std::fs::write(setup.config(), text).unwrap();
    let daemon = setup.start();
    let spec = |rcpt: &str| json!({"port": setup.listen.port(), "count": 1, "source": "127.0.0.2", "rcpts": [rcpt], "starttls": true});
    let refused = inject(spec("nobody@inbound.test"));
    assert_eq!(codes(&refused), [550]);
    assert!(
        refused[0]["error"].as_str().unwrap().contains("5.1.1"),
        "{refused:?}"
    );
    assert_eq!(codes(&inject(spec("user@inbound.test"))), [250]);
    wait_until(Duration::from_secs(15), "forwarding", || {
        primary.message_count() == 1
    });
    // The callouts sent no mail: the one message is the accepted one.
    assert_eq!(primary.messages()[0].rcpt_to, ["user@inbound.test"]);
    let body = String::from_utf8_lossy(&primary.messages()[0].body).into_owned();
    assert!(body.contains("with ESMTPS id"), "received over TLS: {body}");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn x_binding_picks_the_source_address_and_gateway_and_is_removed() {
    let general = Sink::builder().start().unwrap();
    let receipts = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Gateway = \"{}\"\nBinding \"receipts\" {{\n  Bind_Address = \"127.0.0.71\"\n  Gateway = \"{}\"\n}}",
            general.addr(),
            receipts.addr()
        ),
    );
    let daemon = setup.start();
    let base = json!({"port": setup.listen.port(), "count": 1, "rcpts": ["c@shop.example"]});
    let mut tagged = base.clone();
    tagged["headers"] = json!({"X-Binding": "receipts"});
    tagged["start"] = json!(1);
    assert_eq!(codes(&inject(tagged)), [250]);
    assert_eq!(codes(&inject(base)), [250]);
    wait_until(Duration::from_secs(15), "both messages", || {
        receipts.message_count() == 1 && general.message_count() == 1
    });
    let m = &receipts.messages()[0];
    assert_eq!(m.peer.ip().to_string(), "127.0.0.71");
    let body = String::from_utf8_lossy(&m.body);
    assert!(!body.to_ascii_lowercase().contains("x-binding"), "{body}");
    assert!(body.contains("Message-ID: <1.inject@test>"));
    assert_ne!(general.messages()[0].peer.ip().to_string(), "127.0.0.71");

    let mut unknown = json!({"port": setup.listen.port(), "count": 1, "rcpts": ["c@shop.example"]});
    unknown["headers"] = json!({"X-Binding": "nosuch"});
    let refused = inject(unknown);
    assert_eq!(codes(&refused), [550]);
    assert!(
        refused[0]["error"].as_str().unwrap().contains("nosuch"),
        "{refused:?}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn oversize_mail_gets_552() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(&dns, &format!("Gateway = \"{}\"", sink.addr()));
    let daemon = setup.start();
    let results = inject(
        json!({"port": setup.listen.port(), "count": 1, "rcpts": ["a@b.example"], "size": 50000}),
    );
    assert_eq!(codes(&results), [552]);
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(sink.message_count(), 0);
}

#[test]
fn sigterm_stops_cleanly_and_loses_nothing() {
    let sink = Sink::builder()
        .delay(Duration::from_millis(30))
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(&dns, &format!("Gateway = \"{}\"", sink.addr()));
    let daemon = setup.start();
    let results =
        inject(json!({"port": setup.listen.port(), "count": 40, "rcpts": ["a@b.example"]}));
    assert_eq!(codes(&results), vec![250; 40]);
    let stderr = daemon.stderr.clone();
    assert_eq!(daemon.terminate(), Some(0), "{}", stderr.lock().unwrap());
    assert!(stderr.lock().unwrap().contains("postern: stopped"));
    let daemon = setup.start();
    wait_until(Duration::from_secs(30), "all 40 messages", || {
        received_ids(&sink).len() == 40
    });
    assert_eq!(daemon.terminate(), Some(0));
    assert!(Path::new(&setup.dir.path().join("spool")).is_dir());
}

#[test]
fn a_callout_counts_against_the_host_limit() {
    let primary = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Relay_Domains = ( \"inbound.test\" )\nIdle_Timeout = 4\n\
             Domain \"inbound.test\" {{\n  Gateway = \"{}\"\n  Recipient_Verification = callout\n}}\n\
             Host \"127.0.0.1\" {{ Max_Outbound_Connections = 1 }}",
            primary.addr()
        ),
    );
    let daemon = setup.start();
    // A delivery's connection to the primary server, idle for 4 s after
    // it: the host is at its limit of one.
    let relayed = json!({"port": setup.listen.port(), "count": 1, "rcpts": ["a@inbound.test"]});
    assert_eq!(codes(&inject(relayed)), [250]);
    assert!(primary.wait_for(1, Duration::from_secs(15)));
    let outside = |rcpt: &str| json!({"port": setup.listen.port(), "count": 1, "start": 1, "source": "127.0.0.2", "rcpts": [rcpt]});
    let busy = inject(outside("b@inbound.test"));
    assert_eq!(codes(&busy), [451], "{busy:?}");
    assert!(
        busy[0]["error"]
            .as_str()
            .unwrap()
            .contains("connection limit"),
        "{busy:?}"
    );
    // Once the delivery's connection has gone, the callout goes through.
    wait_until(Duration::from_secs(30), "the callout to pass", || {
        codes(&inject(outside("b@inbound.test"))) == [250]
    });
    assert_eq!(daemon.terminate(), Some(0));
}
