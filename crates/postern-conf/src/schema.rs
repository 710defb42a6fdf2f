//! The directive table: every option Postern accepts, its type, the scopes
//! where it is valid, its default and its meaning.
//!
//! This one table drives validation, defaults, `postern config effective`
//! and the generated reference (`docs/config-reference.md`), so that what
//! the code accepts and what the documentation says cannot drift apart.

use std::fmt;

use crate::value::Kind;

/// A place where options can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The top level of the file.
    Global,
    /// `Binding_Group name { }`.
    BindingGroup,
    /// `Binding name { }`.
    Binding,
    /// `Domain name { }` or `Domain /regex/ { }`, at any level.
    Domain,
    /// `Host name { }`.
    Host,
    /// `ESMTP_Listener { }`.
    Listener,
    /// `Listen "addr:port" { }` inside the listener.
    Listen,
    /// `Resolver { }`.
    Resolver,
    /// `Auth name { }`.
    Auth,
    /// `Reply_Rule name { }`.
    ReplyRule,
    /// `Cluster { }`.
    Cluster,
    /// `HTTP_Listener { }`.
    HttpListener,
    /// `DKIM_Sign "domain" { }`.
    DkimSign,
    /// `Milter name { }`.
    Milter,
}

impl Scope {
    const ALL: [Scope; 14] = [
        Scope::Global,
        Scope::BindingGroup,
        Scope::Binding,
        Scope::Domain,
        Scope::Host,
        Scope::Listener,
        Scope::Listen,
        Scope::Resolver,
        Scope::Auth,
        Scope::ReplyRule,
        Scope::Cluster,
        Scope::HttpListener,
        Scope::DkimSign,
        Scope::Milter,
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The scope's name in messages and the reference.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::BindingGroup => "Binding_Group",
            Scope::Binding => "Binding",
            Scope::Domain => "Domain",
            Scope::Host => "Host",
            Scope::Listener => "ESMTP_Listener",
            Scope::Listen => "Listen",
            Scope::Resolver => "Resolver",
            Scope::Auth => "Auth",
            Scope::ReplyRule => "Reply_Rule",
            Scope::Cluster => "Cluster",
            Scope::HttpListener => "HTTP_Listener",
            Scope::DkimSign => "DKIM_Sign",
            Scope::Milter => "Milter",
        }
    }

    /// "the global scope" or "a Binding stanza": for "not valid in ...".
    pub fn phrase(self) -> &'static str {
        match self {
            Scope::Global => "the global scope",
            Scope::BindingGroup => "a Binding_Group stanza",
            Scope::Binding => "a Binding stanza",
            Scope::Domain => "a Domain stanza",
            Scope::Host => "a Host stanza",
            Scope::Listener => "the ESMTP_Listener stanza",
            Scope::Listen => "a Listen stanza",
            Scope::Resolver => "the Resolver stanza",
            Scope::Auth => "an Auth stanza",
            Scope::ReplyRule => "a Reply_Rule stanza",
            Scope::Cluster => "the Cluster stanza",
            Scope::HttpListener => "the HTTP_Listener stanza",
            Scope::DkimSign => "a DKIM_Sign stanza",
            Scope::Milter => "a Milter stanza",
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    /// True when `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in the set, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::name).collect();
        f.write_str(&names.join(", "))
    }
}

/// A directive's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default: unset means "not used".
    None,
    /// This value, in configuration syntax.
    Value(&'static str),
    /// Computed when the daemon starts; the text says from what.
    Computed(&'static str),
}

/// The reference's chapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Where mail goes.
    Routing,
    /// DNS.
    Resolver,
    /// Connection limits, throttles and timeouts.
    Connections,
    /// Retries, expiry and bounces.
    Retries,
    /// Outbound TLS and AUTH.
    Tls,
    /// The injection listener and relay control.
    Listener,
    /// `Auth` stanzas.
    Auth,
    /// The adaptive loop and `Reply_Rule` stanzas.
    Adaptive,
    /// The daemon itself.
    Daemon,
    /// DKIM signing.
    Dkim,
    /// Several nodes sharing limits through Redis.
    Cluster,
    /// Content filters and actions by spam level.
    Scanning,
}

impl Section {
    /// The chapter title.
    pub fn title(self) -> &'static str {
        match self {
            Section::Routing => "Routing",
            Section::Resolver => "DNS resolver",
            Section::Connections => "Connections and throttles",
            Section::Retries => "Retries, expiry, bounces",
            Section::Tls => "Outbound TLS and AUTH",
            Section::Listener => "Listener, relay control, inbound gateway",
            Section::Auth => "Credentials (Auth stanzas)",
            Section::Adaptive => "Adaptive delivery and reply rules",
            Section::Daemon => "Daemon",
            Section::Dkim => "DKIM signing (DKIM_Sign stanzas)",
            Section::Cluster => "Cluster (shared limits through Redis)",
            Section::Scanning => "Content scanning (Milter stanzas) and spam levels",
        }
    }
}

/// One directive's entry in the table.
#[derive(Debug)]
pub struct Spec {
    /// Which directive.
    pub id: Directive,
    /// The canonical spelling (names are matched case-insensitively).
    pub name: &'static str,
    /// The value's type.
    pub kind: Kind,
    /// Where it may be written.
    pub scopes: Scopes,
    /// What applies when nothing sets it.
    pub default: DefaultValue,
    /// The reference chapter.
    pub section: Section,
    /// What it does, for the reference.
    pub help: &'static str,
}

macro_rules! directives {
    ($( $id:ident $name:literal $kind:ident [$($scope:ident)+] $default:expr, $section:ident, $help:literal; )+) => {
        /// Every directive Postern knows. The order is the table's order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Directive {
            $( #[doc = $help] $id, )+
        }

        /// The directive table, in [`Directive`] order.
        pub static DIRECTIVES: &[Spec] = &[
            $( Spec {
                id: Directive::$id,
                name: $name,
                kind: Kind::$kind,
                scopes: Scopes(0 $(| Scope::$scope.bit())+),
                default: $default,
                section: Section::$section,
                help: $help,
            }, )+
        ];
    };
}

use DefaultValue::{Computed, None as NoDefault, Value as V};

directives! {
    Gateway "Gateway" Gateway [Global BindingGroup Binding Domain] NoDefault, Routing,
        "Smart host: ignore the destination's MX records and send all its mail to this host. A name is resolved as MX first, then A/AAAA; an IP literal is used as is; `host:port` and `[v6]:port` set the port. Not together with `Routes` in one scope; the most specific scope that sets either decides.";
    Routes "Routes" Routes [Global Domain] NoDefault, Routing,
        "Routing table: host names, IP literals, `__mx__` (the domain's own MX records) and URLs `smtp|smtps|lmtp://HOST[:PORT]?pref=P&ttl=T&port=O&type=mx|a&tls=..&tls_verify=..&auth=NAME&status=disabled`. Items without `pref` sit one level after the items before them; equal levels share connections evenly. Unset: `( \"__mx__\" )`.";
    DeliveryMethod "Delivery_Method" DeliveryMethod [Global BindingGroup Binding Domain] V("ESMTP"), Routing,
        "Protocol towards the destination: `ESMTP`, `SMTP` (HELO, no extensions) or `LMTP`.";
    RemoteSmtpPort "Remote_SMTP_Port" Port [Global BindingGroup Binding Domain] V("25"), Routing,
        "Port for SMTP destinations whose route names no port.";
    LmtpPort "LMTP_Port" Port [Global BindingGroup Binding Domain] V("2003"), Routing,
        "Port for LMTP destinations whose route names no port.";
    ProhibitedHosts "Prohibited_Hosts" Cidrs [Global]
        V("0.0.0.0/8 169.254.0.0/16 224.0.0.0/4 255.255.255.255/32 ::/128 fe80::/10 ff00::/8"), Routing,
        "Addresses never connected to; a destination whose every address is prohibited fails permanently. Setting it replaces the default.";
    Nameservers "Nameservers" SocketAddrs [Resolver] Computed("the system's /etc/resolv.conf"), Resolver,
        "DNS servers (`address:port`) to ask instead of the system's.";
    ResolverTimeout "Timeout" Seconds [Resolver Milter] Computed("5 in Resolver, 30 in a Milter stanza"), Resolver,
        "`Resolver`: seconds before a DNS query is given up (a transient failure). `Milter`: seconds for connecting to the filter and for each of its answers (its `progress` replies restart it); then `On_Failure` applies.";
    MaxOutboundConnections "Max_Outbound_Connections" Count [Global BindingGroup Binding Domain Host] V("32"), Connections,
        "Most connections for one (binding, domain) queue. In a `Host` stanza: most connections to that one MX host across all queues (unlimited when unset).";
    ServerMaxOutboundConnections "Server_Max_Outbound_Connections" Count [Global] V("20000"), Connections,
        "Most outbound connections of the whole server.";
    OutboundThrottleMessages "Outbound_Throttle_Messages" Throttle [Global BindingGroup Binding Domain] V("0"), Connections,
        "Messages per period for everything that falls back to the scope that sets it: `\"N\"` per second or `\"N/S\"` per S seconds; 0 is unlimited.";
    OutboundThrottleConnections "Outbound_Throttle_Connections" Throttle [Global BindingGroup Binding Domain] V("0"), Connections,
        "New connections per period, written like `Outbound_Throttle_Messages`.";
    MaxDeliveriesPerConnection "Max_Deliveries_Per_Connection" Count [Global BindingGroup Binding Domain] V("0"), Connections,
        "Messages on one connection before it is closed; 0 is unlimited.";
    MaxQueuedInMemory "Max_Queued_In_Memory" PositiveCount [Global BindingGroup Binding Domain] V("2000"), Connections,
        "Postern. Batches a queue keeps in memory, ready and delayed. Its mail beyond them stays in the spool, in order, counted as ready, and is read back as the queue drains (from half of it): a destination that is down for hours holds a few MB of memory, not one envelope per queued message.";
    MaxRecipientsPerBatch "Max_Recipients_Per_Batch" PositiveCount [Global BindingGroup Binding Domain] V("100"), Connections,
        "Recipients sent in one SMTP transaction.";
    IdleTimeout "Idle_Timeout" Seconds [Global BindingGroup Binding Domain] V("5"), Connections,
        "Seconds an idle outbound connection waits for more mail before QUIT.";
    ConnectTimeout "Connect_Timeout" Seconds [Global BindingGroup Binding Domain] V("300"), Connections,
        "Seconds to establish the TCP connection and read the greeting.";
    EhloTimeout "EHLO_Timeout" Seconds [Global BindingGroup Binding Domain] V("300"), Connections,
        "Seconds to wait for the EHLO/HELO/LHLO reply (and STARTTLS, AUTH).";
    MailFromTimeout "MAIL_FROM_Timeout" Seconds [Global BindingGroup Binding Domain] V("300"), Connections,
        "Seconds to wait for the MAIL FROM reply.";
    RcptToTimeout "RCPT_TO_Timeout" Seconds [Global BindingGroup Binding Domain] V("300"), Connections,
        "Seconds to wait for each RCPT TO reply.";
    DataTimeout "Data_Timeout" Seconds [Global BindingGroup Binding Domain] V("600"), Connections,
        "Seconds to wait for the reply after the final dot of DATA.";
    HostFailureRetry "Host_Failure_Retry" Seconds [Global Domain] V("120"), Connections,
        "After a connect or protocol failure, the host address is not tried again for this many seconds.";
    MxFailuresToDelay "MX_Failures_To_Delay" PositiveCount [Global Domain] V("50"), Connections,
        "Consecutive connection failures across a domain's hosts after which its ready mail moves to the delayed queue with `421 4.4.0`.";
    BindAddress "Bind_Address" Ip [Global BindingGroup Binding] NoDefault, Connections,
        "Source address of outbound connections.";
    EventLoops "Event_Loops" PositiveCount [Global] Computed("the number of CPUs"), Connections,
        "Delivery event loops that outbound connections are spread over.";
    RetryInterval "Retry_Interval" Seconds [Global BindingGroup Binding Domain] V("1200"), Retries,
        "Wait before the first retry; retry n waits `Retry_Interval * 2^(n-1)`.";
    MaxRetryInterval "Max_Retry_Interval" Seconds [Global BindingGroup Binding Domain] V("43200"), Retries,
        "Longest wait between two attempts.";
    MaxRetries "Max_Retries" MaxRetries [Global BindingGroup Binding Domain] V("auto"), Retries,
        "`auto` (limited by `Message_Expiration` only) or the most retries, after which the message fails with `554 5.4.7`.";
    MessageExpiration "Message_Expiration" Seconds [Global BindingGroup Binding Domain] V("86400"), Retries,
        "Seconds after reception at which an undelivered message fails as expired.";
    GenerateBounces "Generate_Bounces" Bool [Global BindingGroup Binding Domain] V("true"), Retries,
        "Send an RFC 3464 delivery status notification to the sender of a failed message (never for a null sender).";
    SuspendDelivery "Suspend_Delivery" Bool [Global BindingGroup Binding Domain] V("false"), Retries,
        "Hold the queue without failing it.";
    Tls "TLS" Tls [Global BindingGroup Binding Domain] V("ifavailable"), Tls,
        "STARTTLS policy: `no`, `ifavailable`, or `required` (a host without STARTTLS gives `451 4.7.6` and the message is retried).";
    TlsVerify "TLS_Verify" TlsVerify [Global BindingGroup Binding Domain] V("no"), Tls,
        "Certificate checking: `no`, `ca` (trusted chain) or `host` (trusted chain naming the host).";
    TlsCa "TLS_CA" Path [Global BindingGroup Binding Domain] Computed("the system's trust store"), Tls,
        "PEM file of trusted CA certificates for `TLS_Verify`.";
    MtaSts "MTA_STS" Bool [Global BindingGroup Binding Domain] V("true"), Tls,
        "Postern. Follow the destination's MTA-STS policy (RFC 8461) when delivering to its own MX hosts (not through a `Gateway` or a `Routes` host): the policy named by its `_mta-sts` TXT record is fetched from `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (certificate verified with `TLS_CA` or the system's trust store) and kept for its `max_age`. `enforce`: only the MX hosts the policy names are used, with TLS required and the certificate verified for the MX name, whatever `TLS` and `TLS_Verify` say; when none is named, mail waits with `451 4.7.5`. `testing`: delivery as before, and the MX hosts the policy would not allow are logged. A policy that cannot be fetched leaves the cached one in force, else none (RFC 8461 5).";
    OutboundSmtpAuthType "Outbound_SMTP_AUTH_Type" AuthMech [Global BindingGroup Binding Domain] V("PLAIN"), Tls,
        "AUTH mechanism towards the destination: `PLAIN` or `LOGIN`.";
    OutboundSmtpAuthUser "Outbound_SMTP_AUTH_User" Text [Global BindingGroup Binding Domain] NoDefault, Tls,
        "User name for AUTH towards the destination (AUTH is sent only over TLS unless the route says `tls=no`).";
    OutboundSmtpAuthPass "Outbound_SMTP_AUTH_Pass" Secret [Global BindingGroup Binding Domain] NoDefault, Tls,
        "Password for AUTH towards the destination; never printed or logged.";
    OutboundXclient "Outbound_XCLIENT" Bool [Global BindingGroup Binding Domain] V("false"), Tls,
        "Postern. Before each message, tell a next hop that offers `XCLIENT` (Postfix's extension) who the original client was: `XCLIENT ADDR NAME HELO PROTO`, then EHLO again, so that the primary server sees the client, not Postern. The same client's next message on the connection needs no `XCLIENT` again; a message of no client after a client's gets `XCLIENT` with the connection's own address first. Where the next hop refuses that (or another client's), or no longer offers `XCLIENT`, the message goes on a new connection, with no attempt counted. Never sent to a host that does not offer it. The route parameter `xclient=yes|no` sets it for one route.";
    OutboundChunking "Outbound_Chunking" Bool [Global BindingGroup Binding Domain] V("true"), Tls,
        "Postern. Send each message to a host that offers `CHUNKING` and `PIPELINING` with one `BDAT LAST` (RFC 3030): the envelope and the body in one write, one round trip per message instead of two. The body goes as stored, line endings made CRLF, without dot-stuffing. `false` sends `DATA` to every host; set it for a destination whose `BDAT` is broken.";
    OutboundMessagesPerWrite "Outbound_Messages_Per_Write" PositiveCount [Global BindingGroup Binding Domain] V("4"), Tls,
        "Postern. Messages sent to a host in one write when it offers `CHUNKING` and `PIPELINING` (and `Outbound_Chunking` is true): each message's RSET, envelope, `BDAT LAST` and body follow the one before without waiting for its replies (RFC 2920, RFC 3030), so several messages cost one round trip. They are the next batches the host would hand out anyway, of any domains routed to it, each within its domain's limits and throttles. If the session breaks, the messages whose replies came keep their outcomes, the ones the server may have received wait for their retry, and the others go again at once without an attempt counted. `1` sends one message per round trip. A message larger than 64 KiB, or one that needs XCLIENT (a client other than the one the connection speaks for), goes in a round trip of its own, and one refused before `MAIL` (its size, or `SMTPUTF8`) is not sent; the runs of two or more messages before and after it still go together. A host keeps the value of the queue that first routed mail to it, as it does for `Max_Deliveries_Per_Connection`.";
    RelayHosts "Relay_Hosts" Cidrs [Listener Listen HttpListener] V(""), Listener,
        "Client addresses allowed to send to any domain. Unset: none. In `HTTP_Listener`: the clients that may inject at all (others get 403).";
    MaxMessageSize "Max_Message_Size" Size [Listener Listen HttpListener] V("26214400"), Listener,
        "Largest message accepted (`552` above it; over HTTP, a larger request body gets 413).";
    TlsCertificate "TLS_Certificate" Path [Listener Listen] NoDefault, Listener,
        "PEM certificate chain offered with STARTTLS (needs `TLS_Key`).";
    TlsKey "TLS_Key" Path [Listener Listen] NoDefault, Listener,
        "PEM private key for `TLS_Certificate`.";
    MaxInboundSessions "Max_Inbound_Sessions" Count [Listener] V("10000"), Listener,
        "Postern. Inbound SMTP sessions open at once over every `Listen` address; a connection beyond it gets `421 4.7.0` and is closed.";
    MaxSessionsPerClient "Max_Sessions_Per_Client" Count [Listener Listen] V("200"), Listener,
        "Postern. Inbound SMTP sessions open at once from one client address; beyond it `421 4.7.0`.";
    Chunking "Chunking" Bool [Listener Listen] V("true"), Listener,
        "Postern. Offer `CHUNKING` (RFC 3030): clients may send a message with `BDAT` instead of `DATA`, without dot-stuffing. `false`: `BDAT` gets `502 5.5.1`.";
    InboundCommandTimeout "Inbound_Command_Timeout" Seconds [Listener Listen] V("300"), Listener,
        "Postern. Seconds a client has to send one whole command (a client trickling bytes does not restart it); then `421 4.4.2`.";
    InboundDataTimeout "Inbound_Data_Timeout" Seconds [Listener Listen] V("600"), Listener,
        "Postern. Seconds a client has to send a whole message body, from `354` to the final dot.";
    DefaultBinding "Default_Binding" BindingName [Listener Listen HttpListener] V("default"), Listener,
        "Binding for mail without an `X-Binding` header.";
    AuthTokenFile "Auth_Token_File" Path [HttpListener] NoDefault, Listener,
        "Postern. A file whose content (surrounding whitespace trimmed) is the bearer token every HTTP injection request must send (`Authorization: Bearer TOKEN`; 401 without it, 403 with another); the admin API's control endpoints (flush, suspend, resume) then ask for it too.";
    RelayDomains "Relay_Domains" Domains [Global] V(""), Listener,
        "Recipient domains accepted from any client (inbound gateway): delivered by the `Gateway`/`Routes` of their `Domain` stanza.";
    RelayDomainVerification "Relay_Domain_Verification" DomainVerification [Global] V("specified"), Listener,
        "Postern. `specified`: `Relay_Domains` are the domains accepted from any client. `all_but_specified`: every domain is accepted from any client except those listed (and their mail goes by the routing of its `Domain` stanza, or the global `Gateway`).";
    RecipientVerification "Recipient_Verification" RecipientVerification [Global Domain] V("none"), Listener,
        "`callout`: before accepting a recipient of a relay domain, ask the domain's route with `RCPT TO` and answer as it did.";
    RecipientVerificationCache "Recipient_Verification_Cache" Seconds [Global Domain] V("600"), Listener,
        "Seconds a callout answer is remembered.";
    AuthType "Type" AuthMech [Auth] V("PLAIN"), Auth,
        "Mechanism: `PLAIN` or `LOGIN`.";
    AuthUser "User" Text [Auth] NoDefault, Auth,
        "User name.";
    AuthPassword "Password" Secret [Auth] NoDefault, Auth,
        "Password (or use `Password_File`); never printed or logged.";
    AuthPasswordFile "Password_File" Path [Auth] NoDefault, Auth,
        "File whose first line is the password.";
    Hostname "Hostname" HostName [Global] Computed("the system host name"), Daemon,
        "Name used in EHLO, `Received:` headers and bounces.";
    SpoolDir "Spool_Dir" Path [Global] V("/var/spool/postern"), Daemon,
        "Directory of the durable message spool.";
    SpoolSegmentSize "Spool_Segment_Size" Size [Global] V("67108864"), Daemon,
        "Postern. A new spool segment file starts past this size; any segment that is at most a quarter live is reclaimed.";
    SpoolReserve "Spool_Reserve" Size [Global] V("1048576"), Daemon,
        "Postern. Space kept back in `Spool_Dir` (a file of this size) so that delivery outcomes are still recorded on a full disk. The listener refuses new mail while less than this is free beside it.";
    SpoolZeroFill "Spool_Zero_Fill" Bool [Global] V("true"), Daemon,
        "Postern. The next spool segment is written full of zeros and made durable ahead of time, by a thread of its own, once the current one is a sixteenth full, unless a spare is there to take (`Spool_Spare_Segments`), and only while a segment more and `Spool_Reserve` stay free beside it. A commit then overwrites allocated blocks, and its fsync has no file size to journal: on ext4 it took 30 % less time. Turn it off on copy-on-write filesystems (btrfs, ZFS), where it only doubles the writes.";
    SpoolSpareSegments "Spool_Spare_Segments" Count [Global] V("2"), Daemon,
        "Postern. Reclaimed spool segments kept (renamed, not deleted) for later segments to overwrite, at most. A commit into a spare overwrites blocks written before, as into a zero-filled segment, without writing the zeros first. Spares are kept only while a segment more and `Spool_Reserve` stay free beside the spool, and are deleted when the disk is short of space. 0 deletes every reclaimed segment.";
    SpoolBodyCache "Spool_Body_Cache" Size [Global] V("67108864"), Daemon,
        "Postern. Bytes of message bodies kept in memory for delivery; the rest are read back from the spool when a connection takes them.";
    MaxReadyBatches "Max_Ready_Batches" Count [Global] V("2000000"), Listener,
        "Postern. Ready mail (batches waiting for a connection, in all queues, and stored messages the listener is still gathering for them) at which the listener refuses new mail with `452 4.3.1`; from half of it, its reply to `MAIL` is delayed, longer the fuller, up to `Backpressure_Delay`. 10,000 stores waiting for the disk count as full as well.";
    BackpressureDelay "Backpressure_Delay" Seconds [Global] V("2"), Listener,
        "Postern. The longest delay of a reply to `MAIL` while delivery is behind (see `Max_Ready_Batches`).";
    LogLevel "Log_Level" Text [Global] V("info"), Daemon,
        "Postern. The daemon's diagnostics on standard error (not the delivery log): `error`, `warn`, `info`, `debug` or `trace`, or a filter such as `info,postern_engine=debug`; the `POSTERN_LOG` environment variable overrides it.";
    LogFile "Log_File" LogTarget [Global] V("-"), Daemon,
        "JSON-lines delivery log; `-` is standard output.";
    MetricsListen "Metrics_Listen" SocketAddr [Global] V("127.0.0.1:9464"), Daemon,
        "Address of `/metrics` and the admin API.";
    AdaptiveDelivery "Adaptive_Delivery" Bool [Global BindingGroup Binding Domain] V("true"), Adaptive,
        "Postern. The closed loop per MX host: its connection limit and message rate start low, rise with successes, and fall when replies are classed too_many_connections or rate_limited. A host follows the setting of the first domain routed to it.";
    RuleClass "Class" ReplyClass [ReplyRule] NoDefault, Adaptive,
        "Postern. The class a matching reply gets (delivered, invalid_recipient, bad_domain, mailbox_full, too_many_connections, rate_limited, spam_block, spam_content, policy, authentication, tls, routing, timeout, connection_refused, other_transient, other_permanent); the shipped table's class when unset.";
    RuleCode "Code" ReplyCode [ReplyRule] NoDefault, Adaptive,
        "Postern. Reply codes the rule matches: a code (`421`, `4xx`) or an enhanced status (`4.7.28`, `5.7.*`); any code when unset.";
    RuleMatch "Match" Regex [ReplyRule] NoDefault, Adaptive,
        "Postern. A regular expression (`/.../` or plain) searched in the reply text, case-insensitive; any text when unset.";
    RuleAction "Action" RuleAction [ReplyRule] V("default"), Adaptive,
        "Postern. `default` (by the code; slow-down classes steer the host), `backoff` (slow the host down; the mail goes back without an attempt counted), `suspend` (hold the domain's queue for `Suspend_For`; no attempt counted) or `bounce` (fail the recipients now).";
    RuleSuspendFor "Suspend_For" Seconds [ReplyRule] V("600"), Adaptive,
        "Postern. How long `Action = suspend` holds the queue.";
    RuleForClass "For_Class" ReplyClass [ReplyRule] NoDefault, Adaptive,
        "Postern. The rule matches replies the shipped table puts in this class (with `Code` and `Match`, when set, as well).";
    RuleForBinding "For_Binding" BindingName [ReplyRule] NoDefault, Adaptive,
        "Postern. The rule applies to this binding's mail only.";
    RuleForDomain "For_Domain" HostName [ReplyRule] NoDefault, Adaptive,
        "Postern. The rule applies to mail for this destination domain only.";
    RuleForHost "For_Host" HostName [ReplyRule] NoDefault, Adaptive,
        "Postern. The rule applies to replies from this MX host (its name) only.";
    MetricsHostLabels "Metrics_Host_Labels" Count [Global] V("50"), Daemon,
        "Postern: how many of the busiest destination hosts get their own `host` label in the metrics; the rest are summed as `other`.";
    DkimSelector "Selector" Text [DkimSign] NoDefault, Dkim,
        "Postern. The selector (s=): the public key is published at `SELECTOR._domainkey.DOMAIN`. Required. A `DKIM_Sign \"example.com\"` stanza (global, or in a `Binding`, whose own stanzas win) signs, at reception, mail whose From: domain is that domain or a subdomain of it; when several match, the longest label wins. Bounces are signed too.";
    DkimKeyFile "Key_File" Path [DkimSign] NoDefault, Dkim,
        "Postern. The private key, PEM: RSA (rsa-sha256, PKCS#1 or PKCS#8) or Ed25519 (ed25519-sha256, PKCS#8). Required; `check-config` reads it.";
    DkimHeaders "Headers" HeaderNames [DkimSign] V("From To Subject Date Message-ID MIME-Version Content-Type"), Dkim,
        "Postern. The header fields signed (h=); From is always signed.";
    DkimCanonicalization "Canonicalization" Text [DkimSign] V("relaxed/relaxed"), Dkim,
        "Postern. `header/body` canonicalization: `relaxed` or `simple` each (`relaxed` alone is `relaxed/simple`, as RFC 6376 reads it).";
    MilterAddress "Address" SocketAddr [Milter] NoDefault, Scanning,
        "Postern. Where the filter listens (`address:port`; required). A `Milter name { }` stanza (top level) describes one content filter spoken to with the milter protocol: rspamd's proxy in milter mode, clamav-milter, any libmilter filter. Each message is one session, before the client's `250`: its reject or tempfail reply is the client's, its header and body changes are made before the message is stored.";
    MilterOnFailure "On_Failure" OnFailure [Milter] V("tempfail"), Scanning,
        "Postern. When the filter cannot be asked (refused, `Timeout`, a protocol error): `tempfail` answers `451 4.7.1` (the client retries; nothing is stored), `accept` takes the message unscanned (its level is unscored).";
    InboundMilters "Inbound_Milters" Names [Global Domain] V(""), Scanning,
        "Postern. The `Milter` stanzas that scan mail accepted for `Relay_Domains` (the inbound gateway), in order; the first that refuses decides. Read in the `Domain` of the message's first recipient.";
    SubmissionMilters "Submission_Milters" Names [Global] V(""), Scanning,
        "Postern. The `Milter` stanzas that scan submitted mail, in order: mail from `Relay_Hosts` clients over SMTP, and each message injected over HTTP (a refused one is a failed recipient of the request).";
    SpamLowScore "Spam_Low_Score" Score [Global Domain] V("5"), Scanning,
        "Postern. A scanned message whose score (from the filter's `X-Spamd-Result`, `X-Spam-Status: score=`, `X-Spam-Score` or `X-Rspamd-Score` header) is at least this is spam level Low.";
    SpamMediumScore "Spam_Medium_Score" Score [Global Domain] V("10"), Scanning,
        "Postern. The score from which a message is spam level Medium.";
    SpamHighScore "Spam_High_Score" Score [Global Domain] V("15"), Scanning,
        "Postern. The score from which a message is spam level High.";
    SpamLowAction "Spam_Low_Action" SpamAction [Global Domain] V("header"), Scanning,
        "Postern. What a Low message gets: `deliver` (as it is), `header` (`X-Spam-Level` and `X-Spam-Status` added), `prefix` (the headers, and `Spam_Subject_Prefix` before its subject), `quarantine` (delivered to `Spam_Quarantine` instead of its recipients) or `refuse` (`550 5.7.1` in the SMTP session; nothing stored).";
    SpamMediumAction "Spam_Medium_Action" SpamAction [Global Domain] V("prefix"), Scanning,
        "Postern. What a Medium message gets (as `Spam_Low_Action`).";
    SpamHighAction "Spam_High_Action" SpamAction [Global Domain] V("refuse"), Scanning,
        "Postern. What a High message gets (as `Spam_Low_Action`).";
    UnscoredAction "Unscored_Action" SpamAction [Global Domain] V("deliver"), Scanning,
        "Postern. What a message gets that was to be scanned but has no score: no filter gave one, or one could not be asked and its `On_Failure` is `accept`.";
    SpamSubjectPrefix "Spam_Subject_Prefix" Text [Global Domain] V("[SPAM]"), Scanning,
        "Postern. What the `prefix` action puts before the subject (with a space).";
    SpamQuarantine "Spam_Quarantine" Text [Global Domain] NoDefault, Scanning,
        "Postern. The address the `quarantine` action delivers to (its domain's route applies: a quarantine mailbox), also when a filter asks for quarantine (without it, such a message is refused with `550 5.7.1`). Required where an action is `quarantine`.";
    ClusterRedis "Redis" Text [Cluster] NoDefault, Cluster,
        "Postern. The Redis server the nodes share limits through: `redis://[:PASSWORD@]HOST[:PORT][/DB]` (required in a `Cluster` stanza). With a `Cluster` stanza, every `Host` stanza's `Max_Outbound_Connections` and every `Outbound_Throttle_*` counts the whole cluster: a node takes a lease per connection (not per message) and takes throttle tokens from one shared bucket per setting. When Redis does not answer within 250 ms, each node falls back to its share of each limit (the limit divided by the live nodes last seen, at least 1) and keeps delivering.";
    ClusterNodeName "Node_Name" Text [Cluster] Computed("`Hostname`"), Cluster,
        "Postern. This node's name in Redis and in `postern cluster`; unique per node.";
    LeaseTtl "Lease_TTL" Seconds [Cluster] V("10"), Cluster,
        "Postern. Seconds a lease lives in Redis unless renewed (nodes renew every third of it): the connections of a node that died stop counting after this. At least 3.";
}

impl Directive {
    /// The directive's table entry.
    pub fn spec(self) -> &'static Spec {
        // `directives!` builds the enum and the table from one list in one
        // order, so the discriminant is the index.
        #[allow(clippy::indexing_slicing)]
        &DIRECTIVES[self as usize]
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Looks a name up case-insensitively.
    pub fn from_name(name: &str) -> Option<Directive> {
        DIRECTIVES
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.id)
    }

    /// The known name closest to a misspelt one, if any is close.
    pub fn suggest(name: &str) -> Option<&'static str> {
        closest(name, DIRECTIVES.iter().map(|s| s.name))
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stanza names, and the scope each stanza's body is.
const STANZAS: [(&str, Scope); 13] = [
    ("Binding_Group", Scope::BindingGroup),
    ("Binding", Scope::Binding),
    ("Domain", Scope::Domain),
    ("Host", Scope::Host),
    ("ESMTP_Listener", Scope::Listener),
    ("Listen", Scope::Listen),
    ("Resolver", Scope::Resolver),
    ("Auth", Scope::Auth),
    ("Reply_Rule", Scope::ReplyRule),
    ("Cluster", Scope::Cluster),
    ("HTTP_Listener", Scope::HttpListener),
    ("DKIM_Sign", Scope::DkimSign),
    ("Milter", Scope::Milter),
];

impl Scope {
    /// The scope opened by the stanza named `name` (case-insensitive).
    pub fn from_stanza_name(name: &str) -> Option<Scope> {
        STANZAS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
    }

    /// The known stanza name closest to a misspelt one.
    pub fn suggest_stanza(name: &str) -> Option<&'static str> {
        closest(name, STANZAS.iter().map(|(n, _)| *n))
    }

    /// Whether the stanza opening this scope takes a label.
    pub fn has_label(self) -> bool {
        !matches!(
            self,
            Scope::Global
                | Scope::Listener
                | Scope::Resolver
                | Scope::Cluster
                | Scope::HttpListener
        )
    }

    /// Whether the stanza opening this scope may appear inside `parent`.
    pub fn allowed_in(self, parent: Scope) -> bool {
        use Scope as S;
        match self {
            S::Global => false,
            S::BindingGroup
            | S::Listener
            | S::Resolver
            | S::Auth
            | S::ReplyRule
            | S::Cluster
            | S::HttpListener
            | S::Milter => parent == S::Global,
            S::Binding => matches!(parent, S::Global | S::BindingGroup),
            S::Domain | S::Host => matches!(parent, S::Global | S::BindingGroup | S::Binding),
            S::DkimSign => matches!(parent, S::Global | S::Binding),
            S::Listen => matches!(parent, S::Listener | S::HttpListener),
        }
    }
}

fn closest(name: &str, candidates: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse_default;

    #[test]
    fn table_and_enum_agree() {
        for (i, spec) in DIRECTIVES.iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{}", spec.name);
            assert_eq!(Directive::from_name(spec.name), Some(spec.id));
            assert_eq!(
                Directive::from_name(&spec.name.to_uppercase()),
                Some(spec.id)
            );
        }
    }

    #[test]
    fn every_default_parses_as_its_kind() {
        for spec in DIRECTIVES {
            if let DefaultValue::Value(text) = spec.default {
                parse_default(spec.kind, text)
                    .unwrap_or_else(|e| panic!("{}: default {text:?}: {e}", spec.name));
            }
        }
    }

    #[test]
    fn names_are_unique() {
        for a in DIRECTIVES {
            let same = DIRECTIVES
                .iter()
                .filter(|b| b.name.eq_ignore_ascii_case(a.name))
                .count();
            assert_eq!(same, 1, "{}", a.name);
            assert!(
                Scope::from_stanza_name(a.name).is_none(),
                "{} is also a stanza",
                a.name
            );
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(Directive::suggest("Gatway"), Some("Gateway"));
        assert_eq!(
            Directive::suggest("max_outbound_conections"),
            Some("Max_Outbound_Connections")
        );
        assert_eq!(Directive::suggest("zzzz"), None);
        assert_eq!(Scope::suggest_stanza("Bindng"), Some("Binding"));
    }
}
