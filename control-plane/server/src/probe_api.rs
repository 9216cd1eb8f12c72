//! `ProbeService`: probe assignments out, probe results in.
//!
//! Authentication is the authorization layer's (`crate::authz`): a prober's bearer
//! token or client certificate names the prober and the one region it may report
//! for, and the layer puts that [`Principal`] on the request. A result claiming
//! another prober or region is rejected and counted, and never drops the rest of
//! its batch. Only with authorization off and no prober credentials configured is
//! ingest open (each prober trusted for the region it claims, loudly warned about).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use meridian_health::{ProbeOutcome, RejectReason, ReportRef, UnixMillis};
use meridian_proto::probe::outcome_from_wire;
use meridian_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::Principal;
use crate::config::ProberIdentity;
use crate::convert::{assignments, from_timestamp_ms};
use crate::health::HealthView;
use crate::topology::AppliedTopology;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) struct ProbeApi {
    pub health: Arc<HealthView>,
    /// Ingest without a prober credential is accepted (authorization off and no
    /// prober credentials configured).
    pub open: bool,
    pub topology: tokio::sync::watch::Receiver<AppliedTopology>,
    /// Probe streams open at once (`limits.max_probe_streams`).
    pub streams: Arc<crate::limits::StreamCap>,
}

/// Who is calling: authenticated, or (auth off) whoever they say they are.
enum Caller {
    Authenticated(ProberIdentity),
    Unauthenticated,
}

impl ProbeApi {
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        match req.extensions().get::<Principal>() {
            Some(Principal::Prober { identity, region }) => Ok(Caller::Authenticated(ProberIdentity {
                id: identity.to_string(),
                region: region.clone(),
            })),
            _ if self.open => Ok(Caller::Unauthenticated),
            other => {
                metrics::counter!("meridian_control_plane_prober_auth_failures_total").increment(1);
                Err(match other {
                    Some(p) => Status::permission_denied(format!("{p} is not a prober")),
                    None => Status::unauthenticated(
                        "probe ingest needs a prober credential: a client certificate with O=prober and OU=<region>, or a [[probers]] bearer token",
                    ),
                })
            }
        }
    }
}

/// Checks a claimed (prober, region) against the caller's credentials.
fn check_claim(caller: &Caller, prober: &str, region: &str) -> Result<(), String> {
    match caller {
        Caller::Unauthenticated => Ok(()),
        Caller::Authenticated(id) if id.id == prober && id.region == region => Ok(()),
        Caller::Authenticated(id) => Err(format!(
            "prober `{}` (authenticated for region `{}`) may not report as prober `{prober}` in region `{region}`",
            id.id, id.region
        )),
    }
}

#[tonic::async_trait]
impl pb::probe_service_server::ProbeService for ProbeApi {
    type WatchAssignmentsStream = BoxStream<pb::AssignmentUpdate>;
    type ReportResultsStream = BoxStream<pb::ProbeResultAck>;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let caller = self.caller(&req)?;
        let body = req.into_inner();
        if body.prober_id.is_empty() || body.region.is_empty() {
            return Err(Status::invalid_argument("prober_id and region are required"));
        }
        check_claim(&caller, &body.prober_id, &body.region).map_err(Status::permission_denied)?;
        tracing::info!(prober = %body.prober_id, region = %body.region, "prober subscribed to assignments");
        // The full desired set now, then again whenever the topology changes; between
        // them, every region's first failures to confirm now.
        let slot = self.streams.acquire()?;
        let region = body.region;
        let topology = tokio_stream::wrappers::WatchStream::new(self.topology.clone()).map(move |applied| {
            pb::assignment_update::Update::Assignments(assignments(
                &applied.doc,
                applied.revision.max(0) as u64,
                &region,
            ))
        });
        let confirmations =
            tokio_stream::wrappers::BroadcastStream::new(self.health.confirmations()).filter_map(|r| async move {
                match r {
                    Ok(batch) => Some(pb::assignment_update::Update::ProbeNow(probe_now(&batch))),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        metrics::counter!("meridian_control_plane_confirmation_requests_dropped_total").increment(n);
                        None
                    }
                }
            });
        // The slot lives as long as the stream.
        let stream = futures::stream::select(topology, confirmations).map(move |update| {
            let _held = &slot;
            Ok(pb::AssignmentUpdate { update: Some(update) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_results(
        &self,
        req: Request<Streaming<pb::ProbeResultBatch>>,
    ) -> Result<Response<Self::ReportResultsStream>, Status> {
        let caller = self.caller(&req)?;
        let slot = self.streams.acquire()?;
        let health = self.health.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _slot = slot;
            while let Some(batch) = inbound.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(status) => {
                        tracing::debug!(error = %status, "probe result stream ended with an error");
                        break;
                    }
                };
                let ack = ingest(&health, &caller, batch);
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Confirmation requests on the wire.
fn probe_now(batch: &[crate::health::ConfirmRequest]) -> pb::ProbeNow {
    pb::ProbeNow {
        targets: batch
            .iter()
            .map(|c| pb::ProbeNowTarget {
                pop: c.pop.clone(),
                endpoint: c.endpoint.clone(),
                region: c.region.clone(),
                failure_class: meridian_proto::probe::failure_class_to_wire(c.class),
            })
            .collect(),
    }
}

/// Converts, checks and ingests one batch; one bad result never drops the others.
fn ingest(health: &HealthView, caller: &Caller, batch: pb::ProbeResultBatch) -> pb::ProbeResultAck {
    metrics::counter!("meridian_control_plane_probe_batches_total").increment(1);
    let sequence = batch.sequence;
    // Late probes: only from a caller allowed to speak for the batch's region.
    if !batch.suspects.is_empty() {
        match check_claim(caller, &batch.prober_id, &batch.region) {
            Ok(()) => {
                let late: Vec<(&str, &str)> = batch
                    .suspects
                    .iter()
                    .map(|s| (s.pop.as_str(), s.endpoint.as_str()))
                    .collect();
                health.suspects(&batch.region, &late);
            }
            Err(msg) => health.reject_outside(RejectReason::Invalid, batch.suspects.len() as u64, &msg),
        }
    }
    let mut refused = 0u32;
    let mut refused_errors = Vec::new();
    // Time and outcome per result; every string stays in the decoded batch.
    let parsed: Vec<Result<(UnixMillis, ProbeOutcome), String>> = batch.results.iter().map(parse_result).collect();
    let mut reports = Vec::with_capacity(batch.results.len());
    for (r, parsed) in batch.results.iter().zip(&parsed) {
        // The batch's identity stands for every result that does not name its own.
        let prober = if r.prober_id.is_empty() {
            &batch.prober_id
        } else {
            &r.prober_id
        };
        let region = if r.region.is_empty() { &batch.region } else { &r.region };
        if let Err(msg) = check_claim(caller, prober, region) {
            refused += 1;
            health.reject_outside(RejectReason::Invalid, 1, &msg);
            if refused_errors.len() < 10 {
                refused_errors.push(msg);
            }
            continue;
        }
        reports.push(match parsed {
            Ok((observed_at, outcome)) => Ok(ReportRef {
                prober,
                region,
                pop: &r.pop,
                endpoint: &r.endpoint,
                observed_at: *observed_at,
                outcome,
            }),
            Err(msg) => Err(msg.clone()),
        });
    }
    let mut out = health.ingest_batch(&reports);
    out.rejected += refused;
    refused_errors.extend(out.errors);
    refused_errors.truncate(10);
    pb::ProbeResultAck {
        sequence,
        accepted: out.accepted,
        rejected: out.rejected,
        errors: refused_errors,
    }
}

/// A wire result's time and outcome, or why it is malformed (naming the field). The
/// outcome part (success, latency, class, detail) converts in `meridian-proto`, the
/// one place that conversion exists; the ids stay borrowed from the batch.
fn parse_result(r: &pb::ProbeResult) -> Result<(UnixMillis, ProbeOutcome), String> {
    let at = |what: &str| format!("result for pop `{}` endpoint `{}`: {what}", r.pop, r.endpoint);
    let observed_at = r
        .observed_at
        .as_ref()
        .and_then(from_timestamp_ms)
        .ok_or_else(|| at("observed_at: missing or invalid"))?;
    let outcome = outcome_from_wire(r).map_err(|e| at(&e.to_string()))?;
    Ok((UnixMillis(observed_at), outcome))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meridian_health::FailureClass;

    use super::*;

    #[test]
    fn claims_are_checked_against_the_credential() {
        let caller = Caller::Authenticated(ProberIdentity {
            id: "p1".into(),
            region: "eu-west".into(),
        });
        assert!(check_claim(&caller, "p1", "eu-west").is_ok());
        let err = check_claim(&caller, "p1", "us-east").unwrap_err();
        assert!(
            err.contains("authenticated for region `eu-west`") && err.contains("us-east"),
            "{err}"
        );
        assert!(check_claim(&caller, "p2", "eu-west").is_err());
        assert!(check_claim(&Caller::Unauthenticated, "anyone", "anywhere").is_ok());
    }

    #[test]
    fn malformed_results_are_rejected_with_a_reason() {
        let base = pb::ProbeResult {
            prober_id: "p1".into(),
            region: "r".into(),
            pop: "fra1".into(),
            endpoint: "http".into(),
            observed_at: Some(meridian_proto::prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            success: true,
            latency: None,
            failure_class: 0,
            detail: String::new(),
        };
        let ok = parse_result(&base).unwrap();
        assert_eq!(ok.0, UnixMillis(1_700_000_000_000));
        assert_eq!(ok.1, ProbeOutcome::ok(Duration::ZERO));
        let mut r = base.clone();
        r.observed_at = None;
        assert_eq!(
            parse_result(&r).unwrap_err(),
            "result for pop `fra1` endpoint `http`: observed_at: missing or invalid"
        );
        let mut r = base.clone();
        r.observed_at = Some(meridian_proto::prost_types::Timestamp { seconds: -5, nanos: 0 });
        assert!(parse_result(&r).unwrap_err().contains("observed_at"));
        let mut r = base.clone();
        r.failure_class = 999;
        assert_eq!(
            parse_result(&r).unwrap_err(),
            "result for pop `fra1` endpoint `http`: failure_class: unknown value 999"
        );
        // A failure without a class is malformed; it used to become `other` silently.
        let mut r = base.clone();
        r.success = false;
        assert!(parse_result(&r)
            .unwrap_err()
            .contains("failure_class: a failed probe needs a failure class, got FAILURE_CLASS_UNSPECIFIED"));
        // A classified failure keeps the prober's detail.
        let mut r = base;
        r.success = false;
        r.failure_class = pb::FailureClass::HttpStatus as i32;
        r.detail = "status 503, expected 200".into();
        let failed = parse_result(&r).unwrap();
        assert_eq!(
            failed.1,
            ProbeOutcome::failed(Duration::ZERO, FailureClass::HttpStatus, "status 503, expected 200")
        );
    }
}
