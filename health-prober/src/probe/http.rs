//! HTTP and HTTPS probes with reqwest (rustls, ring), on the same hyper 1 as tonic.
//!
//! Every probe opens a fresh connection (no idle pool): a health check must see a
//! refused connect or a broken TLS handshake, which a reused keep-alive connection
//! would hide. Redirects are not followed (a 3xx is a status like any other) and
//! proxies from the environment are ignored: the prober measures the PoP itself.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, HOST};

use super::classify::{chain, classify_error};
use super::{FailureClass, ProbeOutcome};
use crate::target::HttpCheck;

/// Request header naming the prober that sent a probe.
pub const PROBER_HEADER: &str = "x-meridian-prober";
/// Request header naming the region (vantage point) that sent a probe.
pub const REGION_HEADER: &str = "x-meridian-region";

/// How much of a body is searched for `body_contains`.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
pub(super) struct HttpProbe {
    client: reqwest::Client,
    url: reqwest::Url,
    host_header: Option<HeaderValue>,
    check: HttpCheck,
}

impl HttpProbe {
    pub(super) fn new(
        check: &HttpCheck,
        connect_timeout: Duration,
        response_timeout: Duration,
        prober_id: &str,
        region: &str,
    ) -> Result<Self, reqwest::Error> {
        let mut url = check.url.clone();
        let mut identity = reqwest::header::HeaderMap::new();
        for (name, value) in [(PROBER_HEADER, prober_id), (REGION_HEADER, region)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                identity.insert(name, v);
            }
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(connect_timeout + response_timeout)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .default_headers(identity)
            .user_agent(concat!("meridian-prober/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(check.insecure_skip_verify);
        let mut host_header = None;
        if let Some(host) = &check.host_header {
            host_header = HeaderValue::from_str(host).ok();
            // Probing a PoP by address with a site name: connect to the address but
            // let TLS use the name for SNI and certificate verification, like
            // `curl --resolve`. The URL keeps its port.
            let name =
                host.rsplit_once(':').map_or(
                    host.as_str(),
                    |(n, p)| if p.parse::<u16>().is_ok() { n } else { host.as_str() },
                );
            let url_ip: Option<IpAddr> = url
                .host_str()
                .and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
            if let (Some(ip), false) = (url_ip, name.parse::<IpAddr>().is_ok() || name.is_empty()) {
                if url.set_host(Some(name)).is_ok() {
                    builder = builder.resolve(name, SocketAddr::new(ip, 0));
                } else {
                    url = check.url.clone();
                }
            }
        }
        Ok(Self {
            client: builder.build()?,
            url,
            host_header,
            check: check.clone(),
        })
    }

    pub(super) async fn run(&self, start: Instant) -> ProbeOutcome {
        let mut request = self.client.request(self.check.method.clone(), self.url.clone());
        if let Some(host) = &self.host_header {
            request = request.header(HOST, host.clone());
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failure(start, &e),
        };
        let status = response.status();
        if !self.check.status_ok(status.as_u16()) {
            return ProbeOutcome::failed(
                start.elapsed(),
                FailureClass::HttpStatus,
                format!("status {status}, expected {}", self.check.expected_status_text()),
            );
        }
        let Some(needle) = self.check.body_contains.as_deref().filter(|n| !n.is_empty()) else {
            return ProbeOutcome::ok(start.elapsed());
        };
        let needle = needle.as_bytes();
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let from = body.len().saturating_sub(needle.len().saturating_sub(1));
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if contains(&body[from..], needle) {
                        return ProbeOutcome::ok(start.elapsed());
                    }
                    if body.len() >= MAX_BODY {
                        return ProbeOutcome::failed(
                            start.elapsed(),
                            FailureClass::BodyMismatch,
                            format!(
                                "body does not contain {:?} in its first {MAX_BODY} bytes",
                                self.check.body_contains.as_deref().unwrap_or("")
                            ),
                        );
                    }
                }
                Ok(None) => {
                    return ProbeOutcome::failed(
                        start.elapsed(),
                        FailureClass::BodyMismatch,
                        format!(
                            "body ({} bytes) does not contain {:?}",
                            body.len(),
                            self.check.body_contains.as_deref().unwrap_or("")
                        ),
                    )
                }
                Err(e) => return failure(start, &e),
            }
        }
    }
}

fn failure(start: Instant, err: &reqwest::Error) -> ProbeOutcome {
    let class = classify_error(err);
    ProbeOutcome::failed(start.elapsed(), class, chain(err))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_search() {
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"world"));
        assert!(!contains(b"", b"x"));
    }
}
