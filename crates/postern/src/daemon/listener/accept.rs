//! The accept loop of one `Listen` address: the session limits
//! (`Max_Inbound_Sessions` over every address, `Max_Sessions_Per_Client`
//! per client address; `421 4.7.0` beyond them), and a back-off on accept
//! errors, so that a process out of descriptors waits instead of spinning
//! (as tokio's mini-redis does: 1 ms doubling to 1 s, then again).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postern_dns::Dns;
use postern_smtp::server::serve;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::Inbound;
use super::{Place, Shared};
use crate::daemon::stats::{Rejection, Totals};

/// Longest pause after accept errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Sessions open per client address, over every `Listen` address.
#[derive(Debug, Default)]
pub(crate) struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One session's place in the counts; dropping it gives it back.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
        let mut clients = self
            .shared
            .clients
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// A slot for a session from `ip`, or the reason it is refused.
fn admit(shared: &Arc<Shared>, place: &Place, ip: IpAddr) -> Result<Slot, Rejection> {
    let mut clients = shared
        .clients
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if shared.sessions.load(Ordering::SeqCst) >= place.max_sessions {
        return Err(Rejection::TooManySessions);
    }
    let from_client = clients.entry(ip).or_default();
    if *from_client >= place.max_per_client {
        return Err(Rejection::ClientLimit);
    }
    *from_client += 1;
    shared.sessions.fetch_add(1, Ordering::SeqCst);
    Ok(Slot {
        shared: shared.clone(),
        ip,
    })
}

/// `421` and close, without waiting long for a client that does not read.
async fn refuse(mut tcp: TcpStream, why: Rejection) {
    Totals::rejected(why);
    let text = match why {
        Rejection::ClientLimit => "421 4.7.0 too many connections from your address\r\n",
        _ => "421 4.7.0 too many connections, try again later\r\n",
    };
    let write = async {
        tcp.write_all(text.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

pub(super) async fn accept(
    socket: TcpListener,
    place: Arc<Place>,
    shared: Arc<Shared>,
    dns: Option<Arc<Dns>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(1);
    let mut last_warning: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(1);
                    a
                }
                Err(e) => {
                    // Out of descriptors or memory: wait for sessions to
                    // end rather than spin; warn at most once a minute.
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "listener: accept failed; backing off");
                        last_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let slot = match admit(&shared, &place, peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                actix::spawn(refuse(tcp, why));
                continue;
            }
        };
        let mut handler = Inbound {
            relay_client: place.relay_hosts.iter().any(|n| n.contains(&peer.ip())),
            default_binding: place.default_binding.clone(),
            shared: shared.clone(),
            dns: dns.clone(),
            peer_ip: None,
        };
        let settings = place.settings.clone();
        Totals::session();
        actix::spawn(async move {
            if let Err(e) = serve(tcp, settings, &mut handler).await {
                tracing::debug!(peer = %peer, error = %e, "inbound session ended");
            }
            drop(slot);
        });
    }
}
