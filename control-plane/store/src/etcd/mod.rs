//! The etcd backend: [`EtcdStore`] maps the [`Store`] trait onto etcd's KV, Txn,
//! Watch and Lease APIs through `etcd-client`, and makes a cluster with a dead member
//! look healthy to callers.
//!
//! etcd-client keeps every configured endpoint in one load-balanced gRPC channel and
//! never drops a dead one: while a member is down, a share of requests fails with
//! `Unavailable … tcp connect error`. Two mechanisms hide that:
//!
//! * **Bounded retries** with exponential backoff and jitter ([`RetryPolicy`]), counted
//!   in `meridian_store_etcd_retries_total{op}`. Reads, puts, deletes and lease calls
//!   are retried on any transient failure. A transaction is retried only when the
//!   failure proves the request never reached a server (connect error, no leader,
//!   proposal dropped): an ambiguous failure (timeout, leader change, broken
//!   connection) may have committed it, and running a compare-and-swap twice is not
//!   idempotent, so the caller gets [`StoreError::Unavailable`] and re-reads. The
//!   price of retrying puts: one whose reply was lost can land twice (two revisions,
//!   same key and value), which watchers see as two events.
//! * **A health-check task** probes every configured endpoint once a second with its
//!   own short-lived connection (`Maintenance/Status`) and removes dead or leaderless
//!   members from the shared client (`remove_endpoint`), adding them back when they
//!   answer again (`add_endpoint`). The last endpoint is never removed. The task ends
//!   when the store is dropped.
//!
//! Watches resume transparently: when a watch stream breaks (its member died), it is
//! re-created from the revision after the last one delivered, on whatever member the
//! channel picks, so callers see neither a gap nor a duplicate. (If compaction passed
//! that revision while the watch was down, the caller gets [`StoreError::Compacted`]
//! and re-lists, as for any compacted start revision.) A watch without a start
//! revision starts after a linearizable read of the current revision, not at the
//! serving member's revision: that one lags on a slow follower, and the watch would
//! replay writes acknowledged before it was asked for.
//!
//! Layout: `config` (endpoints, TLS, timeouts), `retry` (failure classes, the retry
//! loop, pauses from `meridian_core::Backoff`), `health` (member probes, the
//! checker, the health report), `watch` (self-resuming watches), `convert` (type
//! mapping); this module holds [`EtcdStore`] and its [`Store`] impl.
//!
//! Rejected alternative: one client per endpoint with our own fail-over (pick a
//! member, stick to it until it fails). It duplicates the balancing etcd-client already
//! does, needs its own connection management, and still needs the same retry
//! classification; pruning the shared client's endpoint set keeps one channel and one
//! code path.

mod config;
mod convert;
mod health;
mod retry;
mod watch;

pub use self::config::{EtcdConfig, EtcdTls};
pub use self::health::{probe_endpoint, EndpointStatus};
pub use self::retry::{RetryPolicy, RETRIES_METRIC};

use std::time::Duration;

use etcd_client as ec;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::config::{normalize_endpoint, tls_options};
use self::convert::{convert_kv, convert_txn, header_revision, lease_seconds, txn_lease};
use self::health::{wait_for_any_member, HealthChecker};
use self::retry::RetryMode;
use self::watch::Watcher;
use crate::txn::{check_delete_prefix, check_key};
use crate::{
    BackendKind, KeyValue, Lease, LeaseId, RangeResponse, Revision, Store, StoreError, StoreHealth, Txn, TxnOpResponse,
    TxnResponse, WatchStream,
};

/// Errors of our own about what etcd sent.
#[derive(Debug, thiserror::Error)]
enum EtcdProtocolError {
    #[error("etcd sent a {0} response without a header")]
    MissingHeader(&'static str),
    #[error("etcd returned a key that is not UTF-8: {0:?}")]
    NonUtf8Key(String),
    #[error("etcd lease grant failed: {0}")]
    LeaseGrant(String),
    #[error("etcd watch was canceled by the server: {0}")]
    WatchCanceled(String),
    #[error("etcd watch stream did not confirm creation")]
    WatchNotCreated,
}

/// A store on an etcd cluster. See the module docs for how failures are handled.
pub struct EtcdStore {
    client: ec::Client,
    /// Normalized endpoints, as configured.
    endpoints: Vec<String>,
    /// `endpoints` joined with commas, for errors.
    endpoints_label: String,
    /// Options of the short-lived probe connections (health checks).
    probe_options: ec::ConnectOptions,
    request_timeout: Duration,
    retry: RetryPolicy,
    /// Cancelled on drop: ends the health-check task and every watch.
    shutdown: CancellationToken,
    _shutdown_on_drop: DropGuard,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster and checks that at least one member answers within
    /// `connect_timeout` (etcd-client itself connects lazily and would not notice an
    /// unreachable cluster until the first request). Members that do not answer are
    /// left out of the client until the health check sees them back.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let config = config.validate()?;
        let use_tls = config.tls.is_some();
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, use_tls))
            .collect();
        let endpoints_label = endpoints.join(",");

        let mut options = ec::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the cluster refuses requests (and closes watches)
            // instead of serving stale data; we retry elsewhere.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = ec::Client::connect(&endpoints, Some(options.clone()))
            .await
            .map_err(|e| match e {
                ec::Error::InvalidArgs(_) | ec::Error::InvalidUri(_) => {
                    StoreError::InvalidRequest(format!("etcd endpoints {endpoints_label}: {e}"))
                }
                other => StoreError::Backend(Box::new(other)),
            })?;

        // Probes must see a leaderless member answer (status reports leader 0) rather
        // than be refused, to tell "electing" from "down".
        let probe_options = options.clone().with_require_leader(false);
        let answered = wait_for_any_member(&endpoints, &probe_options, config.connect_timeout, &config.retry)
            .await
            .map_err(|source| StoreError::Unavailable {
                endpoints: endpoints_label.clone(),
                source: Box::new(source),
            })?;

        let shutdown = CancellationToken::new();
        let mut checker = HealthChecker::new(
            client.clone(),
            probe_options.clone(),
            config
                .request_timeout
                .clamp(Duration::from_millis(500), Duration::from_secs(2)),
            &endpoints,
        );
        // Take the members that did not answer out right away.
        checker.apply(&answered).await;
        tokio::spawn(checker.run(shutdown.clone()));

        tracing::info!(endpoints = %endpoints_label, "connected to etcd");
        Ok(EtcdStore {
            client,
            endpoints,
            endpoints_label,
            probe_options,
            request_timeout: config.request_timeout,
            retry: config.retry,
            _shutdown_on_drop: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// The configured endpoints, normalized (with scheme).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> BackendKind {
        BackendKind::Etcd
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let response = self
            .call("get", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                async move { client.get(key, None).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        response.kvs().first().map(convert_kv).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        let response = self
            .call("range", RetryMode::Idempotent, |mut client| {
                let prefix = prefix.to_owned();
                async move { client.get(prefix, Some(ec::GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        let kvs = response.kvs().iter().map(convert_kv).collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResponse {
            kvs,
            revision: header_revision(response.header(), "range")?,
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
        check_key(key)?;
        let response = self
            .call("put", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                let value = value.clone();
                let options = lease.map(|lease| ec::PutOptions::new().with_lease(lease));
                async move { client.put(key, value, options).await }
            })
            .await
            .map_err(|failed| self.error(failed, lease))?;
        header_revision(response.header(), "put")
    }

    async fn delete(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let response = self
            .call("delete", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                async move { client.delete(key, None).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        Ok(u64::try_from(response.deleted()).unwrap_or(0))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        check_delete_prefix(prefix)?;
        let response = self
            .call("delete_prefix", RetryMode::Idempotent, |mut client| {
                let prefix = prefix.to_owned();
                async move {
                    client
                        .delete(prefix, Some(ec::DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        Ok(u64::try_from(response.deleted()).unwrap_or(0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        crate::txn::validate(&txn)?;
        let response = self
            .call("txn", RetryMode::NotSentOnly, |mut client| {
                let request = convert_txn(&txn);
                async move { client.txn(request).await }
            })
            .await
            .map_err(|failed| self.error(failed, txn_lease(&txn)))?;
        let mut responses = Vec::new();
        for op in response.op_responses() {
            responses.push(match op {
                ec::TxnOpResponse::Put(_) => TxnOpResponse::Put,
                ec::TxnOpResponse::Delete(delete) => TxnOpResponse::Delete {
                    deleted: u64::try_from(delete.deleted()).unwrap_or(0),
                },
                ec::TxnOpResponse::Get(get) => TxnOpResponse::Get(get.kvs().first().map(convert_kv).transpose()?),
                // We never send nested transactions.
                ec::TxnOpResponse::Txn(_) => {
                    return Err(StoreError::Backend(
                        "etcd answered a nested transaction we did not send".into(),
                    ))
                }
            });
        }
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: header_revision(response.header(), "txn")?,
            responses,
        })
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream, StoreError> {
        if let Some(start) = start_revision {
            if start < 1 {
                return Err(StoreError::InvalidRequest(format!(
                    "watch start revision {start} must be at least 1"
                )));
            }
        }
        let watcher = Watcher {
            client: self.client.clone(),
            prefix: prefix.to_owned(),
            request_timeout: self.request_timeout,
            retry: self.retry.clone(),
            endpoints_label: self.endpoints_label.clone(),
        };
        // "From the next revision on" must mean after every write acknowledged so far.
        // etcd's own default (the revision of the member that serves the watch) would
        // replay recent writes when that member lags behind the leader, so read the
        // current revision linearizably (through the leader) and watch from after it.
        let start = match start_revision {
            Some(start) => start,
            None => {
                let response = self
                    .call("watch", RetryMode::Idempotent, |mut client| {
                        // Any key will do; an empty one is not allowed.
                        let key = if prefix.is_empty() {
                            "\0".to_owned()
                        } else {
                            prefix.to_owned()
                        };
                        async move {
                            client
                                .get(key, Some(ec::GetOptions::new().with_keys_only().with_limit(1)))
                                .await
                        }
                    })
                    .await
                    .map_err(|failed| self.error(failed, None))?;
                header_revision(response.header(), "range")? + 1
            }
        };
        let opened = self
            .call("watch", RetryMode::Idempotent, |client| {
                let watcher = watcher.clone();
                async move { watcher.open(client, start).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watcher.run(opened, tx, self.shutdown.child_token()));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidRequest("lease TTL must be positive".into()));
        }
        let seconds = lease_seconds(ttl);
        let response = self
            .call("lease_grant", RetryMode::Idempotent, |mut client| async move {
                client.lease_grant(seconds, None).await
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        if !response.error().is_empty() {
            return Err(StoreError::Backend(Box::new(EtcdProtocolError::LeaseGrant(
                response.error().to_owned(),
            ))));
        }
        Ok(Lease {
            id: response.id(),
            ttl: Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0)),
        })
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let ttl = self
            .call("lease_keep_alive", RetryMode::Idempotent, |mut client| async move {
                // The first round trip refreshes the lease and fails with "lease not
                // found" on a TTL of 0, but etcd-client keeps that response to itself;
                // a second one on the same stream reads the remaining TTL.
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(response) if response.ttl() > 0 => Ok(response.ttl()),
                    Some(_) => Err(ec::Error::LeaseKeepAliveError("lease not found".into())),
                    None => Err(ec::Error::LeaseKeepAliveError("keep-alive stream closed".into())),
                }
            })
            .await
            .map_err(|failed| self.error(failed, Some(lease)))?;
        Ok(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .call("lease_revoke", RetryMode::Idempotent, |mut client| async move {
                client.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // An earlier attempt that timed out did revoke it.
            Err(failed) if failed.maybe_applied && failed.failure.is_lease_not_found() => Ok(()),
            Err(failed) => Err(self.error(failed, Some(lease))),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision < 1 {
            return Err(StoreError::InvalidRequest(format!(
                "compact revision {revision} must be at least 1"
            )));
        }
        match self
            .call("compact", RetryMode::Idempotent, |mut client| async move {
                client.compact(revision, None).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // History before `revision` is already gone: what was asked for holds.
            Err(failed)
                if failed
                    .failure
                    .message()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(failed)
                if failed
                    .failure
                    .message()
                    .contains("required revision is a future revision") =>
            {
                Err(StoreError::InvalidRequest(format!(
                    "cannot compact at revision {revision}: beyond the current revision"
                )))
            }
            Err(failed) => Err(self.error(failed, None)),
        }
    }

    async fn health(&self) -> StoreHealth {
        health::report(&self.endpoints, &self.probe_options, self.request_timeout).await
    }
}
