//! What a prober reports: one probe of one endpoint of one PoP.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// The result of one probe, already converted from the wire by the gRPC adapter.
///
/// The adapter checks the prober's authenticated identity against `prober` and
/// `region`; the core checks everything else (see [`crate::Rejection`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeOutcome {
    pub prober: String,
    pub region: String,
    pub pop: String,
    pub endpoint: String,
    /// The prober's wall clock when the probe finished.
    pub observed_at: UnixMillis,
    pub success: bool,
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// `None` exactly when `success` is true.
    pub failure: FailureClass,
}

/// Why a probe failed. `None` for a successful probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    #[default]
    None,
    Timeout,
    Refused,
    Reset,
    Tls,
    HttpStatus,
    BodyMismatch,
    DnsRcode,
    DnsAnswer,
    Other,
}

impl FailureClass {
    pub const ALL: [FailureClass; 10] = [
        FailureClass::None,
        FailureClass::Timeout,
        FailureClass::Refused,
        FailureClass::Reset,
        FailureClass::Tls,
        FailureClass::HttpStatus,
        FailureClass::BodyMismatch,
        FailureClass::DnsRcode,
        FailureClass::DnsAnswer,
        FailureClass::Other,
    ];

    /// The snake_case name, as used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::None => "none",
            FailureClass::Timeout => "timeout",
            FailureClass::Refused => "refused",
            FailureClass::Reset => "reset",
            FailureClass::Tls => "tls",
            FailureClass::HttpStatus => "http_status",
            FailureClass::BodyMismatch => "body_mismatch",
            FailureClass::DnsRcode => "dns_rcode",
            FailureClass::DnsAnswer => "dns_answer",
            FailureClass::Other => "other",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_class_display_matches_serde_name() {
        for class in FailureClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{class}\""));
            let back: FailureClass = serde_json::from_str(&json).unwrap();
            assert_eq!(back, class);
        }
    }

    #[test]
    fn outcome_round_trips_through_json_with_readable_latency() {
        let o = ProbeOutcome {
            prober: "p1".into(),
            region: "eu-west".into(),
            pop: "fra".into(),
            endpoint: "https".into(),
            observed_at: UnixMillis(1_700_000_000_123),
            success: false,
            latency: Duration::from_micros(1_500),
            failure: FailureClass::HttpStatus,
        };
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains(r#""latency":"1ms 500us""#), "{json}");
        assert!(json.contains(r#""failure":"http_status""#), "{json}");
        assert_eq!(serde_json::from_str::<ProbeOutcome>(&json).unwrap(), o);
    }
}
