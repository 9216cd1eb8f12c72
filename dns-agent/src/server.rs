//! The DNS listeners: UDP on dedicated threads, TCP on the async runtime. Both hand
//! raw bytes to [`Responder::respond`] and send back what it wrote.
//!
//! Decision: UDP is served by a few OS threads doing blocking `recv_from`/`send_to`
//! on clones of one socket, each with its own buffers. That is two system calls per
//! query and nothing else: no readiness polling, no task per packet, no channel to a
//! sender task (hickory-server's `Server` spawns a task per UDP packet and sends
//! each answer through a channel to the socket's task). TCP is rare (truncated
//! answers, zone tooling) and is served by ordinary tasks with an idle timeout and
//! a connection limit.

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use meridian_dns_core::handler::{Responder, Transport};

/// How often a UDP thread wakes up to notice shutdown when no query arrives.
const UDP_POLL: Duration = Duration::from_millis(200);

/// Serves UDP on `threads` threads until `shutdown`.
pub async fn serve_udp(
    socket: UdpSocket,
    threads: usize,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    socket
        .set_read_timeout(Some(UDP_POLL))
        .map_err(|e| format!("cannot set the UDP read timeout: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let sock = socket
            .try_clone()
            .map_err(|e| format!("cannot clone the UDP socket: {e}"))?;
        let responder = responder.clone();
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_loop(&sock, &responder, &stop))
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

fn udp_loop(sock: &UdpSocket, responder: &Responder, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                if responder.respond(&buf[..n], src.ip(), Transport::Udp, &mut out) {
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
/// (RFC 7766); it is closed after `idle` without one.
pub async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    max_connections: usize,
    idle: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let responder = responder.clone();
        let shutdown = shutdown.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let n = open.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!(m::TCP_CONNECTIONS).set(n as f64);
            tokio::select! {
                r = tcp_connection(stream, peer.ip(), &responder, idle) => {
                    if let Err(e) = r {
                        tracing::debug!(client = %peer, error = %e, "TCP connection ended");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            let n = open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            metrics::gauge!(m::TCP_CONNECTIONS).set(n as f64);
            drop(permit);
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: std::net::IpAddr,
    responder: &Responder,
    idle: Duration,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4098);
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let body = &mut buf[..len];
        match tokio::time::timeout(idle, stream.read_exact(body)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        if !responder.respond(body, peer, Transport::Tcp, &mut out) {
            // Not a query: nothing sensible to say on this connection.
            return Ok(());
        }
        framed.clear();
        framed.extend_from_slice(&(out.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}
