//! Watches on etcd that survive the death of the member serving them: when the
//! stream breaks, the watch is re-created from the revision after the last one
//! delivered, so callers see neither a gap nor a duplicate.

use std::time::Duration;

use etcd_client as ec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::convert_event;
use super::retry::{self, Class, Failure, RetryPolicy, RETRIES_METRIC};
use super::EtcdProtocolError;
use crate::{Revision, StoreError, WatchBatch};

/// Everything a watch task needs to (re-)create its etcd watch.
#[derive(Clone)]
pub(super) struct Watcher {
    pub(super) client: ec::Client,
    pub(super) prefix: String,
    pub(super) request_timeout: Duration,
    pub(super) retry: RetryPolicy,
    pub(super) endpoints_label: String,
}

/// A created etcd watch.
pub(super) struct Opened {
    stream: ec::WatchStream,
    watch_id: i64,
    /// The first revision this watch will deliver.
    next_revision: Revision,
    /// Set when etcd refused the start revision as compacted (newer etcd versions say
    /// so in the created response; 3.4 sends a separate canceled response).
    compacted: Option<Revision>,
}

impl Watcher {
    /// Creates the etcd watch and waits for etcd to confirm it.
    pub(super) async fn open(&self, mut client: ec::Client, start: Revision) -> Result<Opened, ec::Error> {
        let options = ec::WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        let created = match stream.message().await? {
            Some(created) if created.created() => created,
            Some(other) if other.canceled() => return Err(ec::Error::WatchError(other.cancel_reason().to_owned())),
            Some(_) => return Err(ec::Error::WatchError(EtcdProtocolError::WatchNotCreated.to_string())),
            None => return Err(ec::Error::WatchError("watch stream closed before creation".into())),
        };
        let compacted = (created.compact_revision() > 0).then_some(created.compact_revision());
        if created.canceled() && compacted.is_none() {
            return Err(ec::Error::WatchError(created.cancel_reason().to_owned()));
        }
        Ok(Opened {
            stream,
            watch_id: created.watch_id(),
            next_revision: start,
            compacted,
        })
    }

    /// Forwards batches until the receiver goes away, the store shuts down, or the
    /// watch fails for good; re-creates the etcd watch when its stream breaks.
    pub(super) async fn run(
        self,
        opened: Opened,
        tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
        shutdown: CancellationToken,
    ) {
        let Opened {
            mut stream,
            mut watch_id,
            mut next_revision,
            mut compacted,
        } = opened;
        loop {
            if let Some(compact_revision) = compacted {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        requested: next_revision,
                        compact_revision,
                    }))
                    .await;
                return;
            }
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.cancel(stream, watch_id).await;
                    return;
                }
                _ = tx.closed() => {
                    self.cancel(stream, watch_id).await;
                    return;
                }
                message = stream.message() => message,
            };
            let broken = match message {
                Ok(Some(response)) => {
                    if response.watch_id() != watch_id {
                        continue;
                    }
                    if response.compact_revision() > 0 {
                        let error = StoreError::Compacted {
                            requested: next_revision,
                            compact_revision: response.compact_revision(),
                        };
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                    if response.canceled() {
                        let reason = response.cancel_reason().to_owned();
                        let _ = tx
                            .send(Err(StoreError::Backend(Box::new(EtcdProtocolError::WatchCanceled(
                                reason,
                            )))))
                            .await;
                        return;
                    }
                    let mut events = Vec::with_capacity(response.events().len());
                    for event in response.events() {
                        match convert_event(event) {
                            // Skip anything already delivered before a resume.
                            Ok(Some(event)) if event.revision() >= next_revision => events.push(event),
                            Ok(_) => {}
                            Err(error) => {
                                let _ = tx.send(Err(error)).await;
                                self.cancel(stream, watch_id).await;
                                return;
                            }
                        }
                    }
                    if let Some(last) = events.last() {
                        next_revision = last.revision() + 1;
                        if tx.send(Ok(WatchBatch { events })).await.is_err() {
                            self.cancel(stream, watch_id).await;
                            return;
                        }
                    }
                    continue;
                }
                Ok(None) => Failure::Etcd(ec::Error::WatchError("watch stream ended".into())),
                Err(e) => Failure::Etcd(e),
            };
            if broken.class() == Class::Fatal && !matches!(broken, Failure::Etcd(ec::Error::WatchError(_))) {
                let _ = tx.send(Err(broken.into_store_error(&self.endpoints_label, None))).await;
                return;
            }
            tracing::info!(prefix = %self.prefix, next_revision, error = %broken.message(), "etcd watch broke; resuming");
            match self.resume(next_revision, &tx, &shutdown).await {
                Some(Ok(opened)) => {
                    stream = opened.stream;
                    watch_id = opened.watch_id;
                    compacted = opened.compacted;
                }
                Some(Err(error)) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
                None => return,
            }
        }
    }

    /// Re-creates the watch from `next_revision`, with backoff. `None`: the receiver
    /// or the store went away meanwhile.
    async fn resume(
        &self,
        next_revision: Revision,
        tx: &mpsc::Sender<Result<WatchBatch, StoreError>>,
        shutdown: &CancellationToken,
    ) -> Option<Result<Opened, StoreError>> {
        let mut last = None;
        let mut backoff = self.retry.backoff();
        for attempt in 1..=self.retry.watch_resume_attempts.max(1) {
            metrics::counter!(RETRIES_METRIC, "op" => "watch").increment(1);
            let pause = retry::pause(&mut backoff);
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tx.closed() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tx.closed() => return None,
                opened = tokio::time::timeout(self.request_timeout, self.open(self.client.clone(), next_revision)) => opened,
            };
            let failure = match opened {
                Ok(Ok(opened)) => return Some(Ok(opened)),
                Ok(Err(e)) => Failure::Etcd(e),
                Err(_) => Failure::Timeout(self.request_timeout),
            };
            tracing::debug!(prefix = %self.prefix, attempt, error = %failure.message(), "etcd watch resume failed");
            last = Some(failure);
        }
        let failure = last.unwrap_or(Failure::Timeout(self.request_timeout));
        Some(Err(failure.into_store_error(&self.endpoints_label, None)))
    }

    /// Cancels the etcd watch, waiting briefly for etcd to confirm.
    async fn cancel(&self, mut stream: ec::WatchStream, watch_id: i64) {
        let confirm = async {
            stream.cancel(watch_id).await?;
            while let Some(response) = stream.message().await? {
                if response.canceled() && response.watch_id() == watch_id {
                    break;
                }
            }
            Ok::<(), ec::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), confirm).await;
    }
}
