//! Endpoint health for the etcd backend: one status probe per member over a
//! connection of its own, the background checker that takes dead or leaderless
//! members out of the shared client's rotation (and puts them back), the wait for a
//! first answering member at connect time, and the health report.

use std::time::Duration;

use etcd_client as ec;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use super::config::{normalize_endpoint, tls_options, EtcdTls};
use super::retry::{self, Failure, RetryPolicy};
use super::EtcdProtocolError;
use crate::{BackendKind, Revision, StoreError, StoreHealth};

/// How often the background task probes each endpoint.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Consecutive probes a member may answer without knowing a leader (an election in
/// progress) before it is taken out of the client.
const LEADERLESS_PROBES_TOLERATED: u32 = 3;

/// What one member said about itself (`Maintenance/Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    /// The answering member's id.
    pub member_id: u64,
    /// The leader this member knows of; 0 while there is none.
    pub leader_id: u64,
    /// The store revision this member has applied.
    pub revision: Revision,
    pub raft_term: u64,
}

impl EndpointStatus {
    pub fn is_leader(&self) -> bool {
        self.member_id != 0 && self.member_id == self.leader_id
    }

    pub fn has_leader(&self) -> bool {
        self.leader_id != 0
    }
}

/// Asks the single member at `endpoint` for its status over a connection of its own,
/// bounded by `timeout`. Used by the health checks and by tooling that needs to know
/// which member leads.
pub async fn probe_endpoint(
    endpoint: &str,
    tls: Option<&EtcdTls>,
    timeout: Duration,
) -> Result<EndpointStatus, StoreError> {
    let endpoint = normalize_endpoint(endpoint, tls.is_some());
    let mut options = ec::ConnectOptions::new().with_connect_timeout(timeout);
    if let Some(tls) = tls {
        options = options.with_tls(tls_options(tls)?);
    }
    probe(&endpoint, &options, timeout)
        .await
        .map_err(|failure| failure.into_store_error(&endpoint, None))
}

/// One status round trip to one member.
pub(super) async fn probe(
    endpoint: &str,
    options: &ec::ConnectOptions,
    timeout: Duration,
) -> Result<EndpointStatus, Failure> {
    let attempt = async {
        let mut client = ec::Client::connect([endpoint], Some(options.clone())).await?;
        client.status().await
    };
    let status = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Failure::Etcd(e)),
        Err(_) => return Err(Failure::Timeout(timeout)),
    };
    let header = status
        .header()
        .ok_or(Failure::Protocol(EtcdProtocolError::MissingHeader("status")))?;
    Ok(EndpointStatus {
        endpoint: endpoint.to_owned(),
        member_id: header.member_id(),
        leader_id: status.leader(),
        revision: header.revision(),
        raft_term: status.raft_term(),
    })
}

/// No endpoint answered while connecting.
#[derive(Debug, thiserror::Error)]
#[error("no etcd endpoint answered a status request within {timeout:?}: {detail}")]
pub(super) struct NoEndpointAnswered {
    timeout: Duration,
    detail: String,
}

/// Probes every endpoint until one answers or `timeout` passes; returns each
/// endpoint's last probe result.
pub(super) async fn wait_for_any_member(
    endpoints: &[String],
    options: &ec::ConnectOptions,
    timeout: Duration,
    retry: &RetryPolicy,
) -> Result<Vec<Result<EndpointStatus, String>>, NoEndpointAnswered> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = retry.backoff();
    loop {
        let remaining = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        let results: Vec<Result<EndpointStatus, String>> =
            join_all(endpoints.iter().map(|endpoint| probe(endpoint, options, remaining)))
                .await
                .into_iter()
                .map(|r| r.map_err(|failure| failure.message()))
                .collect();
        if results.iter().any(Result::is_ok) {
            return Ok(results);
        }
        let pause = retry::pause(&mut backoff);
        if tokio::time::Instant::now() + pause >= deadline {
            let detail = endpoints
                .iter()
                .zip(&results)
                .map(|(endpoint, result)| match result {
                    Ok(_) => format!("{endpoint}: ok"),
                    Err(e) => format!("{endpoint}: {e}"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(NoEndpointAnswered { timeout, detail });
        }
        tokio::time::sleep(pause).await;
    }
}

/// The health checker's view of one endpoint.
#[derive(Debug)]
struct EndpointState {
    endpoint: String,
    /// Whether it is in the shared client's endpoint set.
    in_client: bool,
    /// Whether the last probe found it usable.
    good: bool,
    /// Consecutive probes that answered without a leader.
    leaderless: u32,
}

/// Keeps the shared client's endpoint set to the members that answer.
pub(super) struct HealthChecker {
    client: ec::Client,
    options: ec::ConnectOptions,
    probe_timeout: Duration,
    endpoints: Vec<EndpointState>,
}

impl HealthChecker {
    /// A checker that starts out with every endpoint in the client and good.
    pub(super) fn new(
        client: ec::Client,
        options: ec::ConnectOptions,
        probe_timeout: Duration,
        endpoints: &[String],
    ) -> Self {
        HealthChecker {
            client,
            options,
            probe_timeout,
            endpoints: endpoints
                .iter()
                .map(|endpoint| EndpointState {
                    endpoint: endpoint.clone(),
                    in_client: true,
                    good: true,
                    leaderless: 0,
                })
                .collect(),
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
            }
            let probes = join_all(
                self.endpoints
                    .iter()
                    .map(|state| probe(&state.endpoint, &self.options, self.probe_timeout)),
            );
            let results = tokio::select! {
                _ = shutdown.cancelled() => return,
                results = probes => results,
            };
            let results: Vec<_> = results
                .into_iter()
                .map(|r| r.map_err(|failure| failure.message()))
                .collect();
            self.apply(&results).await;
        }
    }

    /// Adds endpoints that came back and removes those that went bad, never the last.
    pub(super) async fn apply(&mut self, results: &[Result<EndpointStatus, String>]) {
        for index in 0..self.endpoints.len() {
            let Some(result) = results.get(index) else { continue };
            let state = &mut self.endpoints[index];
            let good = match result {
                Ok(status) if status.has_leader() => {
                    state.leaderless = 0;
                    true
                }
                Ok(_) => {
                    state.leaderless += 1;
                    state.leaderless < LEADERLESS_PROBES_TOLERATED
                }
                Err(_) => false,
            };
            let was_good = state.good;
            state.good = good;
            if good && !was_good {
                // Re-insert even if it never left (it was the last one): a fresh
                // connection replaces whatever broken one the channel holds.
                match self.client.add_endpoint(&state.endpoint).await {
                    Ok(()) => {
                        tracing::info!(endpoint = %state.endpoint, "etcd endpoint answers again; using it");
                        state.in_client = true;
                    }
                    Err(e) => tracing::warn!(endpoint = %state.endpoint, error = %e, "could not add etcd endpoint"),
                }
            } else if !good && state.in_client {
                let in_client = self.endpoints.iter().filter(|s| s.in_client).count();
                let state = &mut self.endpoints[index];
                let why = match result {
                    Ok(_) => "no leader".to_owned(),
                    Err(e) => e.clone(),
                };
                if in_client <= 1 {
                    if was_good {
                        tracing::warn!(endpoint = %state.endpoint, error = %why, "last etcd endpoint is failing; keeping it");
                    }
                    continue;
                }
                match self.client.remove_endpoint(&state.endpoint).await {
                    Ok(()) => {
                        tracing::warn!(endpoint = %state.endpoint, error = %why, "etcd endpoint failing; not using it");
                        state.in_client = false;
                    }
                    Err(e) => tracing::warn!(endpoint = %state.endpoint, error = %e, "could not remove etcd endpoint"),
                }
            }
        }
    }
}

/// Probes every member for [`crate::Store::health`]: healthy when a quorum of the
/// configured members answers and knows a leader.
pub(super) async fn report(
    endpoints: &[String],
    options: &ec::ConnectOptions,
    request_timeout: Duration,
) -> StoreHealth {
    let timeout = request_timeout.min(Duration::from_secs(2));
    let results = join_all(endpoints.iter().map(|endpoint| probe(endpoint, options, timeout))).await;
    let mut answered = Vec::new();
    let mut failed = Vec::new();
    let mut revision = None;
    for (endpoint, result) in endpoints.iter().zip(results) {
        match result {
            Ok(status) if status.has_leader() => {
                revision = revision.max(Some(status.revision));
                let role = if status.is_leader() { "leader" } else { "follower" };
                answered.push(format!("{endpoint} ({role}, revision {})", status.revision));
            }
            Ok(_) => failed.push(format!("{endpoint}: answers but has no leader")),
            Err(failure) => failed.push(format!("{endpoint}: {}", failure.message())),
        }
    }
    let quorum = endpoints.len() / 2 + 1;
    let healthy = answered.len() >= quorum;
    let mut detail = format!(
        "{}/{} etcd endpoints answered (quorum {quorum})",
        answered.len(),
        endpoints.len()
    );
    if !answered.is_empty() {
        detail.push_str(&format!("; ok: {}", answered.join(", ")));
    }
    if !failed.is_empty() {
        detail.push_str(&format!("; failed: {}", failed.join("; ")));
    }
    StoreHealth {
        backend: BackendKind::Etcd,
        healthy,
        detail,
        revision,
        endpoints: endpoints.to_vec(),
    }
}
