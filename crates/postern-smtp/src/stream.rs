//! A TCP connection, plain or TLS (either side), with its read buffer and
//! per-call deadlines.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// The byte stream under a session.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Client(Box<client::TlsStream<TcpStream>>),
    Server(Box<server::TlsStream<TcpStream>>),
    /// Left behind while the connection is being upgraded to TLS.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

/// A connection: its stream and the bytes read but not parsed yet.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    /// Unparsed input.
    pub(crate) buf: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    /// The session's one timer for the time limits of its reads and
    /// writes, made on first need (see [`within`]).
    timer: Option<Pin<Box<Sleep>>>,
}

const READ_CHUNK: usize = 16 * 1024;

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

/// How far a limit too long to represent reaches (30 years, as
/// `tokio::time::timeout` does): a timeout configured in the billions of
/// seconds means "none", not a panic.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The instant `limit` from now.
pub(crate) fn deadline(limit: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(limit).unwrap_or(now + FAR_FUTURE)
}

/// Runs `op` for at most `limit`, on the session's one timer. A timer
/// armed afresh for each read is registered with the event loop's timer
/// wheel each time, and a registration can wake the loop's driver (a
/// write to its eventfd: about one a message, measured). So the timer
/// stays where it is while it is due no later than this operation's
/// deadline; when it fires early it moves to the deadline, and it moves
/// earlier only for a deadline before it.
async fn within<T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    op: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let deadline = Instant::from_std(deadline(limit));
    let mut op = std::pin::pin!(op);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = op.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(timed_out()));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

impl Conn {
    pub(crate) fn new(tcp: TcpStream) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        Ok(Self {
            peer: tcp.peer_addr()?,
            local: tcp.local_addr()?,
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(READ_CHUNK),
            timer: None,
        })
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Client(_) | Stream::Server(_))
    }

    /// The server's certificates, on a client TLS connection.
    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match &self.stream {
            Stream::Client(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// The TLS version and cipher suite, for a person reading a trace.
    pub(crate) fn tls_description(&self) -> String {
        let (version, suite) = match &self.stream {
            Stream::Client(s) => (
                s.get_ref().1.protocol_version(),
                s.get_ref().1.negotiated_cipher_suite(),
            ),
            Stream::Server(s) => (
                s.get_ref().1.protocol_version(),
                s.get_ref().1.negotiated_cipher_suite(),
            ),
            Stream::Plain(_) | Stream::Closed => return "no TLS".into(),
        };
        let version = version.map_or_else(|| "?".into(), |v| format!("{v:?}"));
        let suite = suite.map_or_else(|| "?".into(), |s| format!("{:?}", s.suite()));
        format!("{version}, {suite}")
    }

    /// Takes the connection out for an upgrade, leaving a closed one.
    pub(crate) fn take(&mut self) -> Conn {
        let closed = Conn {
            stream: Stream::Closed,
            buf: Vec::new(),
            peer: self.peer,
            local: self.local,
            timer: None,
        };
        std::mem::replace(self, closed)
    }

    /// Reads what is there (at least one byte) into `buf`; `Ok(0)` at the
    /// end of the stream.
    pub(crate) async fn read_more(&mut self, limit: Duration) -> io::Result<usize> {
        // `read_buf` appends into spare capacity: nothing is zeroed first.
        self.buf.reserve(READ_CHUNK);
        within(&mut self.timer, limit, self.stream.read_buf(&mut self.buf)).await
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        within(&mut self.timer, limit, write).await
    }

    /// Closes the write side (sends TLS close_notify first).
    pub(crate) async fn shutdown(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
    }

    /// Whether input arrived that nobody has parsed: after STARTTLS that
    /// would be plaintext smuggled into the TLS session (CVE-2011-0411).
    fn refuse_buffered(&self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data sent after STARTTLS before the TLS handshake",
            ))
        }
    }

    /// TLS as a client (STARTTLS or implicit).
    pub(crate) async fn client_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        limit: Duration,
    ) -> io::Result<Self> {
        self.refuse_buffered()?;
        let Stream::Plain(tcp) = self.stream else {
            return Err(io::Error::other("TLS is already active"));
        };
        let handshake = TlsConnector::from(config).connect(name, tcp);
        let tls = tokio::time::timeout(limit, handshake)
            .await
            .unwrap_or_else(|_| Err(timed_out()))?;
        Ok(Self {
            stream: Stream::Client(Box::new(tls)),
            ..self
        })
    }

    /// TLS as a server (STARTTLS).
    pub(crate) async fn server_tls(
        self,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> io::Result<Self> {
        self.refuse_buffered()?;
        let Stream::Plain(tcp) = self.stream else {
            return Err(io::Error::other("TLS is already active"));
        };
        let handshake = TlsAcceptor::from(config).accept(tcp);
        let tls = tokio::time::timeout(limit, handshake)
            .await
            .unwrap_or_else(|_| Err(timed_out()))?;
        Ok(Self {
            stream: Stream::Server(Box::new(tls)),
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;

    fn timed_out_in<T: std::fmt::Debug>(r: io::Result<T>) -> bool {
        r.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
    }

    #[tokio::test]
    async fn one_timer_keeps_each_operations_own_limit() {
        let mut timer = None;
        let short = Duration::from_millis(50);
        let long = Duration::from_secs(30);
        assert!(timed_out_in(
            within(&mut timer, short, pending::<io::Result<()>>()).await
        ));
        // The timer fired for the short limit: an operation that takes
        // longer than that but less than its own limit is not cut off.
        let slow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        };
        within(&mut timer, long, slow)
            .await
            .expect("within its limit");
        // The timer now waits for the long deadline: a short limit after
        // it still ends its operation in time, not 30 s later.
        let bounded = tokio::time::timeout(
            Duration::from_secs(10),
            within(&mut timer, short, pending::<io::Result<()>>()),
        )
        .await
        .expect("the short limit, not the long one");
        assert!(timed_out_in(bounded));
        // A limit too long to represent is no limit, not a panic.
        within(&mut timer, Duration::MAX, async { Ok(()) })
            .await
            .expect("done");
        let waiting = tokio::time::timeout(
            Duration::from_millis(100),
            within(&mut timer, Duration::MAX, pending::<io::Result<()>>()),
        )
        .await;
        assert!(waiting.is_err(), "still waiting");
    }
}
