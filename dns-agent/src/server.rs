//! The DNS listeners: UDP on dedicated threads, TCP on the async runtime. Both hand
//! raw bytes to [`Responder::respond`] and send back what it wrote.
//!
//! Decision: UDP is served by a few OS threads doing blocking `recv_from`/`send_to`
//! on clones of one socket, each with its own buffers. That is two system calls per
//! query and nothing else: no readiness polling, no task per packet, no channel to a
//! sender task (hickory-server's `Server` spawns a task per UDP packet and sends
//! each answer through a channel to the socket's task). With response rate limiting
//! on, each answer also asks the shared [`RateLimiter`] (a hash and a short lock on
//! one of its shards); with it off, nothing.
//!
//! TCP is rare (truncated answers, zone tooling) and is served by ordinary tasks,
//! bounded so that no client can hold what others need: a global connection limit
//! (more wait in the kernel's accept queue), a per-address limit (one more is closed
//! at once), a deadline for each query to arrive in full and one for each answer to
//! be written (a client that never reads, or never finishes a message, is
//! disconnected). Only UDP is rate-limited: TCP needs a handshake, so its source
//! cannot be spoofed, and it is where slipped (TC) answers send real clients.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use meridian_dns_core::handler::{Responder, Transport};
use meridian_dns_core::rrl::{RateLimiter, RrlAction};
use meridian_dns_core::wire;

/// The bounds on TCP connections.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections open at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections open at once from one address; more are closed when accepted.
    pub max_per_client: usize,
    /// Each query must arrive in full within this (from the start or the previous
    /// answer).
    pub idle_timeout: Duration,
    /// Each answer must be written within this.
    pub write_timeout: Duration,
}

/// How often a UDP thread wakes up to notice shutdown when no query arrives.
const UDP_POLL: Duration = Duration::from_millis(200);

/// Serves UDP on `threads` threads until `shutdown`, each answer first passing
/// `rrl` when given.
pub async fn serve_udp(
    socket: UdpSocket,
    threads: usize,
    responder: Arc<Responder>,
    rrl: Option<RateLimiter>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    socket
        .set_read_timeout(Some(UDP_POLL))
        .map_err(|e| format!("cannot set the UDP read timeout: {e}"))?;
    let rrl = rrl.map(|limiter| {
        Arc::new(UdpLimiter {
            limiter,
            epoch: Instant::now(),
            dropped: metrics::counter!(m::RRL, "action" => "drop"),
            slipped: metrics::counter!(m::RRL, "action" => "slip"),
        })
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let sock = socket
            .try_clone()
            .map_err(|e| format!("cannot clone the UDP socket: {e}"))?;
        let responder = responder.clone();
        let stop = stop.clone();
        let rrl = rrl.clone();
        let handle = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_loop(&sock, &responder, rrl.as_deref(), &stop))
            .map_err(|e| format!("cannot start a UDP thread: {e}"))?;
        handles.push(handle);
    }
    shutdown.cancelled().await;
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await
    .map_err(|e| format!("UDP threads did not stop: {e}"))
}

/// The rate limiter with its clock origin and counters.
struct UdpLimiter {
    limiter: RateLimiter,
    epoch: Instant,
    dropped: Counter,
    slipped: Counter,
}

impl UdpLimiter {
    /// Whether to send `out` (cut down to a truncated answer when it slips).
    fn admit(&self, client: IpAddr, out: &mut Vec<u8>) -> bool {
        match self.limiter.check(client, self.epoch.elapsed()) {
            RrlAction::Send => true,
            RrlAction::Slip => {
                self.slipped.increment(1);
                wire::truncate_response(out)
            }
            RrlAction::Drop => {
                self.dropped.increment(1);
                false
            }
        }
    }
}

fn udp_loop(sock: &UdpSocket, responder: &Responder, rrl: Option<&UdpLimiter>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                if responder.respond(&buf[..n], src.ip(), Transport::Udp, &mut out)
                    && rrl.is_none_or(|l| l.admit(src.ip(), &mut out))
                {
                    if let Err(e) = sock.send_to(&out, src) {
                        tracing::debug!(client = %src, error = %e, "cannot send a UDP answer");
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::debug!(error = %e, "UDP receive failed");
            }
        }
    }
}

/// Serves TCP until `shutdown`: each connection may send queries one after another
/// (RFC 7766) within the [`TcpLimits`].
pub async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(ClientTable {
        limit: limits.max_per_client.max(1),
        open: Mutex::new(HashMap::new()),
    });
    let refused_per_client = metrics::counter!(m::TCP_CONN_REFUSED, "reason" => "per_client");
    let timeouts = TimeoutCounters {
        idle: metrics::counter!(m::TCP_TIMEOUTS, "phase" => "idle"),
        read: metrics::counter!(m::TCP_TIMEOUTS, "phase" => "read"),
        write: metrics::counter!(m::TCP_TIMEOUTS, "phase" => "write"),
    };
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(|e| format!("connection limiter closed: {e}"))?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(client) = ClientTable::open(&clients, peer.ip()) else {
            // Dropping the stream closes it; the permit goes back with it.
            refused_per_client.increment(1);
            tracing::debug!(client = %peer, limit = clients.limit, "too many TCP connections from this address; closed");
            continue;
        };
        let responder = responder.clone();
        let shutdown = shutdown.clone();
        let open = open.clone();
        let timeouts = timeouts.clone();
        tokio::spawn(async move {
            let n = open.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!(m::TCP_CONNECTIONS).set(n as f64);
            tokio::select! {
                r = tcp_connection(stream, peer.ip(), &responder, limits, &timeouts) => {
                    if let Err(e) = r {
                        tracing::debug!(client = %peer, error = %e, "TCP connection ended");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            let n = open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            metrics::gauge!(m::TCP_CONNECTIONS).set(n as f64);
            drop(client);
            drop(permit);
        });
    }
}

/// `meridian_dns_tcp_timeouts_total` by phase.
#[derive(Clone)]
struct TimeoutCounters {
    idle: Counter,
    read: Counter,
    write: Counter,
}

/// Open TCP connections per client address. Entries exist only while a connection
/// is open, so the table is bounded by the global connection limit.
struct ClientTable {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted in the [`ClientTable`]; dropping it uncounts it.
struct ClientSlot {
    table: Arc<ClientTable>,
    ip: IpAddr,
}

impl ClientTable {
    /// Counts a new connection from `ip`, or `None` when it already has `limit`. An
    /// IPv4-mapped address (a dual-stack listener) counts as the IPv4 address.
    fn open(table: &Arc<ClientTable>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = table.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= table.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: IpAddr,
    responder: &Responder,
    limits: TcpLimits,
    timeouts: &TimeoutCounters,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4098);
    loop {
        let mut started = false;
        let read = tokio::time::timeout(limits.idle_timeout, read_message(&mut stream, &mut buf, &mut started)).await;
        let len = match read {
            Ok(Ok(Some(len))) => len,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) if started => {
                timeouts.read.increment(1);
                tracing::debug!(client = %peer, "TCP query not received in full in time; closing");
                return Ok(());
            }
            Err(_) => {
                timeouts.idle.increment(1);
                return Ok(());
            }
        };
        let body = &buf[..len];
        if !responder.respond(body, peer, Transport::Tcp, &mut out) {
            // Not a query: nothing sensible to say on this connection.
            return Ok(());
        }
        framed.clear();
        framed.extend_from_slice(&(out.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(limits.write_timeout, stream.write_all(&framed)).await {
            Ok(written) => written?,
            Err(_) => {
                timeouts.write.increment(1);
                tracing::debug!(client = %peer, "TCP answer not taken in time (the client does not read); closing");
                return Ok(());
            }
        }
    }
}

/// Reads one length-prefixed message into `buf`, returning its length, or `None`
/// when the client closed the connection between messages. `started` turns true
/// with the first byte, so the caller can tell an idle connection from a slow one.
async fn read_message(stream: &mut TcpStream, buf: &mut [u8], started: &mut bool) -> io::Result<Option<usize>> {
    let mut prefix = [0u8; 2];
    let n = stream.read(&mut prefix).await?;
    if n == 0 {
        return Ok(None);
    }
    *started = true;
    if n == 1 {
        stream.read_exact(&mut prefix[1..]).await?;
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    let body = buf
        .get_mut(..len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "message longer than the buffer"))?;
    stream.read_exact(body).await?;
    Ok(Some(len))
}
