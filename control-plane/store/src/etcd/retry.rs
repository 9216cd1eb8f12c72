//! Bounded retries for etcd requests: how a failure is classified (provably not sent,
//! ambiguous, fatal), which requests may be retried on which class, and the pause
//! between attempts ([`meridian_core::Backoff`], the one backoff of the workspace).

use std::future::Future;
use std::time::Duration;

use etcd_client as ec;
use meridian_core::Backoff;

use super::{EtcdProtocolError, EtcdStore};
use crate::{LeaseId, StoreError};

/// Counter of retried etcd requests, labelled by `op`.
pub const RETRIES_METRIC: &str = "meridian_store_etcd_retries_total";

/// Bounded retries with exponential backoff and jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Pause before the first retry; doubles on each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of a pause.
    pub max_backoff: Duration,
    /// Attempts to re-create a broken watch before the stream fails. Larger than
    /// `max_attempts` because a watch outlives elections.
    pub watch_resume_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            watch_resume_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// A fresh backoff for one request, one watch resume or the wait at connect:
    /// [`meridian_core::Backoff`] from `initial_backoff`, doubling up to `max_backoff`,
    /// each pause drawn from the upper half of its step ("equal jitter") so clients
    /// that failed together do not retry together. Draw each pause with a uniform random
    /// number in `[0, 1)`.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
    }
}

/// The next pause of `backoff`, with its jitter drawn here (the backoff itself is pure).
pub(super) fn pause(backoff: &mut Backoff) -> Duration {
    backoff.next_delay(rand::random::<f64>())
}

/// A request timed out on our side.
#[derive(Debug, thiserror::Error)]
#[error("etcd request timed out after {0:?}")]
pub(super) struct TimedOut(Duration);

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    Etcd(ec::Error),
    Timeout(Duration),
    Protocol(EtcdProtocolError),
}

/// Whether an attempt may have had an effect on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// The request provably did not take effect (never reached a server, or was
    /// refused before being proposed): safe to retry anything.
    NotSent,
    /// It may or may not have taken effect: retry only idempotent requests.
    Ambiguous,
    /// Retrying will not help.
    Fatal,
}

/// Which failures a request may be retried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RetryMode {
    /// Reads and writes whose repetition is harmless (or harmless enough: a repeated
    /// put rewrites the same value).
    Idempotent,
    /// Compare-and-swap transactions.
    NotSentOnly,
}

pub(super) fn message_of(e: &ec::Error) -> String {
    match e {
        ec::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    }
}

impl Failure {
    pub(super) fn class(&self) -> Class {
        match self {
            Failure::Timeout(_) => Class::Ambiguous,
            Failure::Protocol(_) => Class::Fatal,
            Failure::Etcd(ec::Error::TransportError(_)) => Class::NotSent,
            Failure::Etcd(ec::Error::GRpcStatus(status)) => classify_status(i32::from(status.code()), status.message()),
            Failure::Etcd(_) => Class::Fatal,
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            Failure::Etcd(e) => message_of(e),
            Failure::Timeout(d) => TimedOut(*d).to_string(),
            Failure::Protocol(p) => p.to_string(),
        }
    }

    pub(super) fn is_lease_not_found(&self) -> bool {
        matches!(self, Failure::Etcd(_)) && self.message().contains("lease not found")
    }

    /// Maps the failure to the store's error, naming `endpoints` when unreachable.
    pub(super) fn into_store_error(self, endpoints: &str, lease: Option<LeaseId>) -> StoreError {
        let message = self.message();
        if let (Failure::Etcd(_), Some(lease)) = (&self, lease) {
            if message.contains("lease not found") {
                return StoreError::LeaseNotFound(lease);
            }
        }
        if message.contains("required revision is a future revision") {
            return StoreError::InvalidRequest(format!("revision is beyond the current revision ({message})"));
        }
        match self.class() {
            Class::NotSent | Class::Ambiguous => {
                let source: Box<dyn std::error::Error + Send + Sync> = match self {
                    Failure::Etcd(e) => Box::new(e),
                    Failure::Timeout(d) => Box::new(TimedOut(d)),
                    Failure::Protocol(p) => Box::new(p),
                };
                StoreError::Unavailable {
                    endpoints: endpoints.to_owned(),
                    source,
                }
            }
            Class::Fatal => match self {
                Failure::Etcd(ec::Error::GRpcStatus(status)) if i32::from(status.code()) == GRPC_INVALID_ARGUMENT => {
                    StoreError::InvalidRequest(status.message().to_owned())
                }
                Failure::Etcd(ec::Error::InvalidArgs(args)) => StoreError::InvalidRequest(args),
                Failure::Etcd(e) => StoreError::Backend(Box::new(e)),
                Failure::Timeout(d) => StoreError::Backend(Box::new(TimedOut(d))),
                Failure::Protocol(p) => StoreError::Backend(Box::new(p)),
            },
        }
    }
}

/// gRPC's InvalidArgument code (tonic is not a direct dependency of this crate).
pub(super) const GRPC_INVALID_ARGUMENT: i32 = 3;

/// Classifies a gRPC status from etcd or from the transport.
pub(super) fn classify_status(code: i32, message: &str) -> Class {
    let message = message.to_ascii_lowercase();
    // Refused before reaching raft: nothing was proposed.
    let not_sent = [
        "connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
        "etcdserver: no leader",
        "etcdserver: too many requests",
        "raft proposal dropped",
        "etcdserver: not capable",
    ];
    if not_sent.iter().any(|m| message.contains(m)) {
        return Class::NotSent;
    }
    // 1 Cancelled (tonic's own timeout), 4 DeadlineExceeded, 14 Unavailable (leader
    // changed, request timed out, connection lost).
    if matches!(code, 1 | 4 | 14) {
        return Class::Ambiguous;
    }
    // 2 Unknown, 13 Internal: a connection that broke mid-request.
    let transport = [
        "transport error",
        "connection",
        "broken pipe",
        "h2 protocol error",
        "stream closed",
        "reset",
    ];
    if matches!(code, 2 | 13) && transport.iter().any(|m| message.contains(m)) {
        return Class::Ambiguous;
    }
    Class::Fatal
}

/// A request that failed after its retries.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) failure: Failure,
    /// An earlier attempt failed ambiguously and may have been applied.
    pub(super) maybe_applied: bool,
}

impl EtcdStore {
    /// Runs one request with the retry policy: each attempt bounded by the request
    /// timeout, retried as `mode` allows. On failure, also says whether an earlier
    /// attempt may have taken effect.
    pub(super) async fn call<T, F, Fut>(&self, op: &'static str, mode: RetryMode, mut attempt: F) -> Result<T, Failed>
    where
        F: FnMut(ec::Client) -> Fut,
        Fut: Future<Output = Result<T, ec::Error>>,
    {
        let mut maybe_applied = false;
        let mut attempts = 0;
        let mut backoff = self.retry.backoff();
        loop {
            attempts += 1;
            let failure = match tokio::time::timeout(self.request_timeout, attempt(self.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Failure::Etcd(e),
                Err(_) => Failure::Timeout(self.request_timeout),
            };
            let class = failure.class();
            let retry = match class {
                Class::NotSent => true,
                Class::Ambiguous => mode == RetryMode::Idempotent,
                Class::Fatal => false,
            };
            if !retry || attempts >= self.retry.max_attempts {
                return Err(Failed { failure, maybe_applied });
            }
            maybe_applied |= class == Class::Ambiguous;
            metrics::counter!(RETRIES_METRIC, "op" => op).increment(1);
            let pause = pause(&mut backoff);
            tracing::debug!(op, attempt = attempts, ?pause, error = %failure.message(), "retrying etcd request");
            tokio::time::sleep(pause).await;
        }
    }

    pub(super) fn error(&self, failed: Failed, lease: Option<LeaseId>) -> StoreError {
        failed.failure.into_store_error(&self.endpoints_label, lease)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        let mut backoff = policy.backoff();
        for retry in 1..=10 {
            let step = (policy.initial_backoff * (1 << (retry - 1))).min(policy.max_backoff);
            let pause = pause(&mut backoff);
            assert!(
                pause >= step / 2 && pause <= step,
                "retry {retry}: {pause:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        for _ in 0..100 {
            assert!(pause(&mut backoff) <= policy.max_backoff);
        }
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(classify_status(14, "tcp connect error"), Class::NotSent);
        assert_eq!(classify_status(14, "etcdserver: no leader"), Class::NotSent);
        assert_eq!(classify_status(14, "etcdserver: leader changed"), Class::Ambiguous);
        assert_eq!(classify_status(14, "etcdserver: request timed out"), Class::Ambiguous);
        assert_eq!(classify_status(4, "deadline"), Class::Ambiguous);
        assert_eq!(classify_status(2, "transport error"), Class::Ambiguous);
        assert_eq!(
            classify_status(9, "etcdserver: requested lease not found"),
            Class::Fatal
        );
        assert_eq!(classify_status(3, "etcdserver: key is not provided"), Class::Fatal);
    }
}
