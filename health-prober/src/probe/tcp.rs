//! TCP connect probes: success when the three-way handshake completes in time.

use std::time::{Duration, Instant};

use super::classify::{chain, classify_error};
use super::{FailureClass, ProbeOutcome};
use crate::target::TcpCheck;

pub(super) async fn probe(check: &TcpCheck, connect_timeout: Duration, start: Instant) -> ProbeOutcome {
    let attempt = async {
        // Usually an `ip:port`; a name is resolved inside the same deadline.
        let mut addrs = tokio::net::lookup_host(check.address.as_str()).await?;
        let addr = addrs.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", check.address),
            )
        })?;
        tokio::net::TcpStream::connect(addr).await
    };
    match tokio::time::timeout(connect_timeout, attempt).await {
        Ok(Ok(stream)) => {
            let latency = start.elapsed();
            drop(stream);
            ProbeOutcome::ok(latency)
        }
        Ok(Err(e)) => ProbeOutcome::failed(
            start.elapsed(),
            classify_error(&e),
            format!("connect to {}: {}", check.address, chain(&e)),
        ),
        Err(_) => ProbeOutcome::failed(
            start.elapsed(),
            FailureClass::Timeout,
            format!("connect to {} timed out after {connect_timeout:?}", check.address),
        ),
    }
}
