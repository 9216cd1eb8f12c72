//! Simulated PoP targets on loopback addresses: an HTTP server that can be killed,
//! healed, or made to fail for chosen prober regions only (it reads the
//! `x-meridian-region` header probers send); a TCP listener; a DNS responder.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// Binds a TCP listener on `ip` at a free port.
async fn bind_tcp(ip: Ipv4Addr, port: u16) -> TcpListener {
    TcpListener::bind(SocketAddr::from((ip, port)))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"))
}

/// An HTTP health endpoint of a simulated PoP.
pub struct HttpTarget {
    pub addr: SocketAddr,
    failing_regions: Arc<Mutex<HashSet<String>>>,
    task: Option<JoinHandle<()>>,
}

impl HttpTarget {
    pub async fn start(ip: Ipv4Addr) -> Self {
        let listener = bind_tcp(ip, 0).await;
        let addr = listener.local_addr().unwrap();
        let mut t = HttpTarget {
            addr,
            failing_regions: Default::default(),
            task: None,
        };
        t.serve(listener);
        t
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let failing = self.failing_regions.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let failing = failing.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut n = 0;
                    while n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let region = request
                        .lines()
                        .find_map(|l| l.strip_prefix("x-meridian-region:"))
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default();
                    let fail = failing.lock().unwrap().contains(&region);
                    let resp: &[u8] = if fail {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nsick"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    };
                    let _ = sock.write_all(resp).await;
                    let _ = sock.shutdown().await;
                });
            }
        }));
    }

    /// Stops listening: connections are refused, like a dead server.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn heal(&mut self) {
        self.kill();
        // The aborted task drops the old listener asynchronously; retry the bind.
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("cannot re-bind {}", self.addr);
    }

    /// Answers 503 to probers of these regions only.
    pub fn fail_for(&self, regions: &[&str]) {
        let mut set = self.failing_regions.lock().unwrap();
        set.clear();
        set.extend(regions.iter().map(|r| r.to_string()));
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP endpoint that accepts and closes.
pub struct TcpTarget {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpTarget {
    pub async fn start(ip: Ipv4Addr) -> Self {
        let listener = bind_tcp(ip, 0).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((sock, _)) = listener.accept().await {
                    drop(sock);
                }
            }
        });
        TcpTarget { addr, task }
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS server that answers every query NOERROR with no records.
pub struct DnsTarget {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DnsTarget {
    pub async fn start(ip: Ipv4Addr) -> Self {
        let sock = UdpSocket::bind(SocketAddr::from((ip, 0))).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let mut resp = buf[..n].to_vec();
                resp[2] = 0x84 | (buf[2] & 0x01); // QR, AA, keep RD
                resp[3] = 0x00; // RA=0, rcode NOERROR
                let _ = sock.send_to(&resp, from).await;
            }
        });
        DnsTarget { addr, task }
    }
}

impl Drop for DnsTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
