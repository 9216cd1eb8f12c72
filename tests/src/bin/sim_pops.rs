//! `sim_pops`: simulated PoPs for the local stack and the failover benchmark.
//!
//! Each PoP is a real HTTP server (`GET /health` → 200 "ok") on its own loopback
//! address. A small control API fails and heals them the way real failures look:
//!
//! * `POST /fail/POP`   — stop listening: probes see "connection refused" (a dead server)
//! * `POST /silence/POP` — go silent: connections are still accepted (the handshake
//!   completes) but never answered and never closed (no RST, no FIN), so every health
//!   check times out — a PoP whose packets are dropped after a power or network loss
//! * `POST /heal/POP`   — answer again: listen again on the same address, end
//!   silence and flakiness (connections held while silent are dropped)
//! * `POST /flaky/POP?refuse=0.1` — refuse (reset) that share of connections at random
//! * `GET  /status`     — every PoP and its mode (`healthy`, `failed`, `silent`,
//!   `flaky SHARE`), as JSON
//!
//! Each request sets the PoP's mode: silencing a flaky or failed PoP makes it silent
//! (listening again), making a silent PoP flaky ends its silence.
//!
//! `curl -X POST http://127.0.0.1:7490/fail/fra1` is the documented way to kill one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Run simulated PoPs (HTTP health endpoints on loopback addresses) with a control API
/// to fail, silence, heal or make them flaky.
#[derive(Debug, Parser)]
struct Args {
    /// PoPs as NAME=ADDR, comma-separated, e.g. fra1=127.0.0.11:8080,iad1=127.0.0.12:8080.
    #[arg(long, value_delimiter = ',', required = true)]
    pops: Vec<String>,
    /// Control API listener.
    #[arg(long, default_value = "127.0.0.1:7490")]
    control: SocketAddr,
}

#[derive(Debug)]
struct Pop {
    addr: SocketAddr,
    /// Share of connections to reset at random (0.0: healthy).
    refuse: f64,
    /// Silent: connections are accepted and held in `held`, never answered.
    silent: bool,
    /// The connections accepted while silent, held open (not read, not closed) until
    /// the PoP leaves silence; dropping them then resets them.
    held: Vec<TcpStream>,
    task: Option<JoinHandle<()>>,
}

impl Pop {
    /// Ends silence and drops the connections it held.
    fn unsilence(&mut self) {
        self.silent = false;
        self.held.clear();
    }
}

type Pops = Arc<Mutex<BTreeMap<String, Pop>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let pops: Pops = Arc::default();
    for spec in &args.pops {
        let (name, addr) = spec
            .split_once('=')
            .ok_or_else(|| format!("--pops entry `{spec}`: expected NAME=ADDR"))?;
        let addr: SocketAddr = addr.parse().map_err(|e| format!("--pops entry `{spec}`: {e}"))?;
        let pop = Pop {
            addr,
            refuse: 0.0,
            silent: false,
            held: Vec::new(),
            task: None,
        };
        pops.lock().map_err(|e| e.to_string())?.insert(name.to_string(), pop);
        start(&pops, name).await?;
    }
    let control = TcpListener::bind(args.control)
        .await
        .map_err(|e| format!("cannot bind control API {}: {e}", args.control))?;
    eprintln!(
        "sim_pops: {} PoPs up; control API on http://{}",
        args.pops.len(),
        args.control
    );
    loop {
        let Ok((sock, _)) = control.accept().await else {
            continue;
        };
        let pops = pops.clone();
        tokio::spawn(async move {
            let _ = control_request(sock, pops).await;
        });
    }
}

/// Starts (or restarts) a PoP's listener.
async fn start(pops: &Pops, name: &str) -> Result<(), String> {
    let addr = {
        let map = pops.lock().map_err(|e| e.to_string())?;
        map.get(name).ok_or_else(|| format!("unknown PoP `{name}`"))?.addr
    };
    // A listener closed a moment ago may still hold the port briefly.
    let mut listener = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let listener = listener.ok_or_else(|| format!("cannot bind {addr} for PoP `{name}`"))?;
    let (pops2, name2) = (pops.clone(), name.to_string());
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let refuse = {
                let Ok(mut m) = pops2.lock() else { continue };
                let Some(p) = m.get_mut(&name2) else { continue };
                if p.silent {
                    // Hold the connection: the client's request sits unread in the
                    // kernel's buffer and no answer, FIN or RST ever comes, so the
                    // client times out.
                    p.held.push(sock);
                    continue;
                }
                p.refuse
            };
            if refuse > 0.0 && rand::random::<f64>() < refuse {
                // Reset the connection: SO_LINGER 0 then drop sends an RST at once
                // (the deprecation is about non-zero linger blocking on drop).
                #[allow(deprecated)]
                let _ = sock.set_linger(Some(std::time::Duration::ZERO));
                drop(sock);
                continue;
            }
            tokio::spawn(serve_health(sock));
        }
    });
    if let Some(old) = pops
        .lock()
        .map_err(|e| e.to_string())?
        .get_mut(name)
        .and_then(|p| p.task.replace(task))
    {
        old.abort();
    }
    Ok(())
}

async fn serve_health(mut sock: TcpStream) {
    let mut buf = [0u8; 2048];
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
    let _ = sock
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
        .await;
    let _ = sock.shutdown().await;
}

async fn control_request(mut sock: TcpStream, pops: Pops) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await?;
    let request = String::from_utf8_lossy(&buf[..n]).to_string();
    let line = request.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let known = |name: &str| pops.lock().map(|m| m.contains_key(name)).unwrap_or(false);
    let (code, body) = match (method, segments.as_slice()) {
        ("GET", ["status"]) => (200, status_json(&pops)),
        ("POST", [_, name]) if !known(name) => (404, format!("{{\"error\": \"unknown PoP {name}\"}}\n")),
        ("POST", [action, name]) => act(&pops, action, name, query).await,
        _ => (
            404,
            "{\"error\": \"use GET /status or POST /fail|silence|heal|flaky/POP\"}\n".to_string(),
        ),
    };
    let reason = if code == 200 { "OK" } else { "Error" };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

async fn act(pops: &Pops, action: &str, name: &str, query: &str) -> (u16, String) {
    match action {
        "fail" => {
            if let Ok(mut m) = pops.lock() {
                if let Some(p) = m.get_mut(name) {
                    p.unsilence();
                    if let Some(t) = p.task.take() {
                        t.abort();
                    }
                }
            }
            eprintln!("sim_pops: {name} failed (connections refused)");
            (200, format!("{{\"pop\": \"{name}\", \"mode\": \"failed\"}}\n"))
        }
        "heal" => {
            if let Ok(mut m) = pops.lock() {
                if let Some(p) = m.get_mut(name) {
                    p.refuse = 0.0;
                    p.unsilence();
                }
            }
            if let Err(e) = ensure_listening(pops, name).await {
                return (500, format!("{{\"error\": \"{e}\"}}\n"));
            }
            eprintln!("sim_pops: {name} healed");
            (200, format!("{{\"pop\": \"{name}\", \"mode\": \"healthy\"}}\n"))
        }
        "flaky" => {
            let refuse = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("refuse="))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| (0.0..=1.0).contains(v));
            let Some(refuse) = refuse else {
                return (
                    400,
                    "{\"error\": \"give ?refuse=SHARE with SHARE in [0, 1]\"}\n".to_string(),
                );
            };
            if let Ok(mut m) = pops.lock() {
                if let Some(p) = m.get_mut(name) {
                    p.refuse = refuse;
                    p.unsilence();
                }
            }
            eprintln!("sim_pops: {name} refuses {:.0}% of connections", refuse * 100.0);
            (
                200,
                format!("{{\"pop\": \"{name}\", \"mode\": \"flaky\", \"refuse\": {refuse}}}\n"),
            )
        }
        "silence" => {
            if let Ok(mut m) = pops.lock() {
                if let Some(p) = m.get_mut(name) {
                    p.refuse = 0.0;
                    p.silent = true;
                }
            }
            // A failed PoP goes silent too: its address accepts connections again.
            if let Err(e) = ensure_listening(pops, name).await {
                return (500, format!("{{\"error\": \"{e}\"}}\n"));
            }
            eprintln!("sim_pops: {name} silent (connections accepted, never answered)");
            (200, format!("{{\"pop\": \"{name}\", \"mode\": \"silent\"}}\n"))
        }
        _ => (
            404,
            format!("{{\"error\": \"unknown action {action}: use fail, silence, heal or flaky\"}}\n"),
        ),
    }
}

/// Starts the PoP's listener unless it is running.
async fn ensure_listening(pops: &Pops, name: &str) -> Result<(), String> {
    let running = pops
        .lock()
        .map(|m| m.get(name).is_some_and(|p| p.task.is_some()))
        .unwrap_or(false);
    if running {
        return Ok(());
    }
    start(pops, name).await
}

fn status_json(pops: &Pops) -> String {
    let Ok(m) = pops.lock() else { return "{}".into() };
    let entries: Vec<String> = m
        .iter()
        .map(|(name, p)| {
            let mode = match (&p.task, p.silent, p.refuse) {
                (None, _, _) => "failed".to_string(),
                (Some(_), true, _) => "silent".to_string(),
                (Some(_), false, r) if r > 0.0 => format!("flaky {r}"),
                _ => "healthy".to_string(),
            };
            let held = if p.silent {
                format!(", \"held_connections\": {}", p.held.len())
            } else {
                String::new()
            };
            format!("\"{name}\": {{\"addr\": \"{}\", \"mode\": \"{mode}\"{held}}}", p.addr)
        })
        .collect();
    format!("{{{}}}\n", entries.join(", "))
}
