//! What a prober reports: one probe of one endpoint of one PoP, located.

use serde::{Deserialize, Serialize};

pub use meridian_core::probe::{FailureClass, ProbeOutcome};

use crate::time::UnixMillis;

/// One probe result with where and when it was observed, already converted from the
/// wire by the gRPC adapter.
///
/// The adapter checks the prober's authenticated identity against `prober` and
/// `region`; the core checks everything else (see [`crate::Rejection`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    pub prober: String,
    pub region: String,
    pub pop: String,
    pub endpoint: String,
    /// The prober's wall clock when the probe finished.
    pub observed_at: UnixMillis,
    /// What the probe observed, exactly as the prober classified it.
    pub outcome: ProbeOutcome,
}

/// A [`ProbeReport`] borrowed from wherever it was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportRef<'a> {
    pub prober: &'a str,
    pub region: &'a str,
    pub pop: &'a str,
    pub endpoint: &'a str,
    pub observed_at: UnixMillis,
    pub outcome: &'a ProbeOutcome,
}

impl ProbeReport {
    pub fn as_ref(&self) -> ReportRef<'_> {
        ReportRef {
            prober: &self.prober,
            region: &self.region,
            pop: &self.pop,
            endpoint: &self.endpoint,
            observed_at: self.observed_at,
            outcome: &self.outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn report_round_trips_through_json_with_readable_latency_and_detail() {
        let r = ProbeReport {
            prober: "p1".into(),
            region: "eu-west".into(),
            pop: "fra".into(),
            endpoint: "https".into(),
            observed_at: UnixMillis(1_700_000_000_123),
            outcome: ProbeOutcome::failed(Duration::from_micros(1_500), FailureClass::HttpStatus, "status 503"),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""latency":"1ms 500us""#), "{json}");
        assert!(json.contains(r#""class":"http_status""#), "{json}");
        assert!(json.contains(r#""detail":"status 503""#), "{json}");
        assert_eq!(serde_json::from_str::<ProbeReport>(&json).unwrap(), r);
    }
}
