//! The probes: HTTP(S), TCP connect and DNS. Each returns a [`ProbeOutcome`] and
//! never hangs past its timeouts (every probe also runs under an outer deadline),
//! never panics on what a target sends, and maps errors to a [`FailureClass`].

mod classify;
mod dns;
mod http;
mod tcp;

use std::time::{Duration, Instant};

pub(crate) use classify::chain as error_chain;
pub use classify::classify_error;
/// The one outcome type, shared with the control plane (see `meridian_core::probe`).
pub use meridian_core::probe::{FailureClass, ProbeOutcome};

use crate::target::{Check, TargetSpec};

/// A target made ready to probe: the HTTP client (with its TLS settings and
/// connection policy) is built once per target, not per probe.
#[derive(Debug)]
pub struct PreparedProbe {
    check: PreparedCheck,
    connect_timeout: Duration,
    response_timeout: Duration,
}

#[derive(Debug)]
enum PreparedCheck {
    Http(http::HttpProbe),
    Tcp(crate::target::TcpCheck),
    Dns(crate::target::DnsCheck),
    /// The probe could not be set up (for example the TLS stack failed to
    /// initialise); every probe reports this as a failure of class `other`.
    Broken(String),
}

impl PreparedProbe {
    /// Prepares the probe of `spec` for the prober `prober_id` in `region` (HTTP
    /// probes announce both in request headers, so PoP operators can tell probe
    /// traffic apart and see which vantage point sent it).
    pub fn new(spec: &TargetSpec, prober_id: &str, region: &str) -> Self {
        let check = match &spec.check {
            Check::Http(c) => {
                match http::HttpProbe::new(c, spec.connect_timeout, spec.response_timeout, prober_id, region) {
                    Ok(p) => PreparedCheck::Http(p),
                    Err(e) => PreparedCheck::Broken(format!("cannot set up the HTTP client: {}", classify::chain(&e))),
                }
            }
            Check::Tcp(c) => PreparedCheck::Tcp(c.clone()),
            Check::Dns(c) => PreparedCheck::Dns(c.clone()),
        };
        Self {
            check,
            connect_timeout: spec.connect_timeout,
            response_timeout: spec.response_timeout,
        }
    }

    /// Runs one probe. It ends within `connect_timeout + response_timeout` (plus a
    /// small margin for the outer guard), whatever the target does.
    pub async fn run(&self) -> ProbeOutcome {
        let start = Instant::now();
        let budget = self.connect_timeout + self.response_timeout;
        let probe = async {
            match &self.check {
                PreparedCheck::Http(p) => p.run(start).await,
                PreparedCheck::Tcp(c) => tcp::probe(c, self.connect_timeout, start).await,
                PreparedCheck::Dns(c) => dns::probe(c, self.response_timeout, start).await,
                PreparedCheck::Broken(why) => ProbeOutcome::failed(start.elapsed(), FailureClass::Other, why.clone()),
            }
        };
        // The outer guard: each probe has its own timeouts; this one only makes sure
        // that a bug or an unforeseen wait in a library can never stick a target.
        match tokio::time::timeout(budget + Duration::from_millis(250), probe).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::failed(
                start.elapsed(),
                FailureClass::Timeout,
                format!("no result within {budget:?}"),
            ),
        }
    }
}
