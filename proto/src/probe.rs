//! The one conversion between probe outcomes ([`meridian_core::probe`]) and their
//! wire form: the prober (domain → wire), the control plane's ingest (wire →
//! domain, validated) and `explain` (domain → wire) all go through here.
//!
//! Decision: an unknown or `FAILURE_CLASS_UNSPECIFIED` class on a failed probe is an
//! error, never silently `other` or `none`; only a *successful* probe may leave the
//! class unspecified (proto3's default), which means [`FailureClass::None`].

use std::time::Duration;

use meridian_core::probe::{FailureClass, ProbeOutcome};

use crate::v1 as pb;

/// The longest latency accepted from the wire; anything longer is a broken clock or
/// a broken prober, not a measurement.
pub const MAX_WIRE_LATENCY: Duration = Duration::from_secs(86_400);

/// A wire failure class that has no domain value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FailureClassError {
    #[error("FAILURE_CLASS_UNSPECIFIED is not a failure class")]
    Unspecified,
    #[error("unknown failure class {0}")]
    Unknown(i32),
}

/// Why the outcome fields of a wire `ProbeResult` were rejected; every variant
/// names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    #[error("failure_class: unknown value {0}")]
    UnknownClass(i32),
    #[error("failure_class: a failed probe needs a failure class, got {0}")]
    FailureWithoutClass(&'static str),
    #[error("failure_class: a successful probe has no failure class, got `{0}`")]
    SuccessWithClass(FailureClass),
    #[error("latency: {0}")]
    Latency(String),
}

impl OutcomeError {
    /// The wire field at fault.
    pub const fn field(&self) -> &'static str {
        match self {
            OutcomeError::UnknownClass(_)
            | OutcomeError::FailureWithoutClass(_)
            | OutcomeError::SuccessWithClass(_) => "failure_class",
            OutcomeError::Latency(_) => "latency",
        }
    }
}

impl From<FailureClass> for pb::FailureClass {
    fn from(class: FailureClass) -> Self {
        match class {
            FailureClass::None => pb::FailureClass::None,
            FailureClass::Timeout => pb::FailureClass::Timeout,
            FailureClass::Refused => pb::FailureClass::Refused,
            FailureClass::Reset => pb::FailureClass::Reset,
            FailureClass::Tls => pb::FailureClass::Tls,
            FailureClass::HttpStatus => pb::FailureClass::HttpStatus,
            FailureClass::BodyMismatch => pb::FailureClass::BodyMismatch,
            FailureClass::DnsRcode => pb::FailureClass::DnsRcode,
            FailureClass::DnsAnswer => pb::FailureClass::DnsAnswer,
            FailureClass::Other => pb::FailureClass::Other,
        }
    }
}

impl TryFrom<pb::FailureClass> for FailureClass {
    type Error = FailureClassError;

    fn try_from(class: pb::FailureClass) -> Result<Self, Self::Error> {
        Ok(match class {
            pb::FailureClass::Unspecified => return Err(FailureClassError::Unspecified),
            pb::FailureClass::None => FailureClass::None,
            pb::FailureClass::Timeout => FailureClass::Timeout,
            pb::FailureClass::Refused => FailureClass::Refused,
            pb::FailureClass::Reset => FailureClass::Reset,
            pb::FailureClass::Tls => FailureClass::Tls,
            pb::FailureClass::HttpStatus => FailureClass::HttpStatus,
            pb::FailureClass::BodyMismatch => FailureClass::BodyMismatch,
            pb::FailureClass::DnsRcode => FailureClass::DnsRcode,
            pb::FailureClass::DnsAnswer => FailureClass::DnsAnswer,
            pb::FailureClass::Other => FailureClass::Other,
        })
    }
}

/// The wire value (as prost stores it in a message) of a failure class.
pub fn failure_class_to_wire(class: FailureClass) -> i32 {
    pb::FailureClass::from(class) as i32
}

/// A failure class from its wire value as prost stores it in a message. (A
/// `TryFrom<i32>` impl is not allowed here: both types are foreign to this crate.)
pub fn failure_class_from_wire(value: i32) -> Result<FailureClass, FailureClassError> {
    pb::FailureClass::try_from(value)
        .map_err(|_| FailureClassError::Unknown(value))?
        .try_into()
}

/// The outcome fields of a wire `ProbeResult` (success, latency, failure class,
/// detail) as a domain value.
///
/// A success may leave the class unspecified or say `NONE`; a failure must name
/// its class. A missing latency reads as zero; a negative one or one longer than
/// [`MAX_WIRE_LATENCY`] is rejected. The detail is kept (cut to
/// [`meridian_core::probe::MAX_DETAIL`]) on a failure and dropped on a success.
pub fn outcome_from_wire(r: &pb::ProbeResult) -> Result<ProbeOutcome, OutcomeError> {
    let latency = match r.latency {
        None => Duration::ZERO,
        Some(d) => Duration::try_from(d)
            .ok()
            .filter(|d| *d <= MAX_WIRE_LATENCY)
            .ok_or_else(|| {
                OutcomeError::Latency(format!(
                    "{}s {}ns is negative, malformed or longer than {}s",
                    d.seconds,
                    d.nanos,
                    MAX_WIRE_LATENCY.as_secs()
                ))
            })?,
    };
    let class = match failure_class_from_wire(r.failure_class) {
        Ok(class) => Some(class),
        Err(FailureClassError::Unspecified) => None,
        Err(FailureClassError::Unknown(v)) => return Err(OutcomeError::UnknownClass(v)),
    };
    match (r.success, class) {
        (true, None | Some(FailureClass::None)) => Ok(ProbeOutcome::ok(latency)),
        (true, Some(class)) => Err(OutcomeError::SuccessWithClass(class)),
        (false, None) => Err(OutcomeError::FailureWithoutClass(
            pb::FailureClass::Unspecified.as_str_name(),
        )),
        (false, Some(FailureClass::None)) => {
            Err(OutcomeError::FailureWithoutClass(pb::FailureClass::None.as_str_name()))
        }
        (false, Some(class)) => Ok(ProbeOutcome::failed(latency, class, r.detail.clone())),
    }
}

#[cfg(test)]
mod tests {
    use meridian_core::probe::MAX_DETAIL;

    use super::*;

    #[test]
    fn every_failure_class_round_trips_through_the_wire() {
        for class in FailureClass::ALL {
            let wire = failure_class_to_wire(class);
            assert_eq!(failure_class_from_wire(wire), Ok(class), "{class}");
            assert_eq!(FailureClass::try_from(pb::FailureClass::from(class)), Ok(class));
        }
        // Every wire value but UNSPECIFIED has a domain value, and no two domain
        // values share one.
        let mut wires: Vec<i32> = FailureClass::ALL.into_iter().map(failure_class_to_wire).collect();
        wires.sort_unstable();
        wires.dedup();
        assert_eq!(wires, (1..=10).collect::<Vec<i32>>());
    }

    #[test]
    fn wire_names_match_the_domain_names() {
        for class in FailureClass::ALL {
            let name = pb::FailureClass::from(class).as_str_name();
            assert_eq!(
                name.strip_prefix("FAILURE_CLASS_").map(str::to_lowercase),
                Some(class.as_str().to_string())
            );
        }
    }

    #[test]
    fn unknown_and_unspecified_classes_are_errors() {
        assert_eq!(failure_class_from_wire(0), Err(FailureClassError::Unspecified));
        assert_eq!(failure_class_from_wire(11), Err(FailureClassError::Unknown(11)));
        assert_eq!(failure_class_from_wire(-1), Err(FailureClassError::Unknown(-1)));
        assert_eq!(
            FailureClass::try_from(pb::FailureClass::Unspecified),
            Err(FailureClassError::Unspecified)
        );
    }

    fn result(success: bool, class: i32, detail: &str) -> pb::ProbeResult {
        pb::ProbeResult {
            success,
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: 7_000_000,
            }),
            failure_class: class,
            detail: detail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_convert_with_their_detail() {
        let ms7 = Duration::from_millis(7);
        let tls = pb::FailureClass::Tls as i32;
        assert_eq!(
            outcome_from_wire(&result(false, tls, "certificate expired")),
            Ok(ProbeOutcome::failed(ms7, FailureClass::Tls, "certificate expired"))
        );
        // A success: UNSPECIFIED (proto3's default) and NONE both mean no class; a
        // stray detail is dropped.
        for class in [0, pb::FailureClass::None as i32] {
            assert_eq!(
                outcome_from_wire(&result(true, class, "ignored")),
                Ok(ProbeOutcome::ok(ms7))
            );
        }
        let mut r = result(true, 0, "");
        r.latency = None;
        assert_eq!(outcome_from_wire(&r), Ok(ProbeOutcome::ok(Duration::ZERO)));
        // A long detail is cut as the prober cuts it.
        let long = outcome_from_wire(&result(false, tls, &"x".repeat(10_000))).unwrap();
        assert_eq!(long.detail.len(), MAX_DETAIL + '…'.len_utf8());
    }

    #[test]
    fn malformed_outcomes_are_rejected_naming_the_field() {
        let cases = [
            (
                result(false, 0, "x"),
                "failure_class: a failed probe needs a failure class, got FAILURE_CLASS_UNSPECIFIED",
            ),
            (
                result(false, pb::FailureClass::None as i32, "x"),
                "failure_class: a failed probe needs a failure class, got FAILURE_CLASS_NONE",
            ),
            (result(false, 999, "x"), "failure_class: unknown value 999"),
            (result(true, 999, ""), "failure_class: unknown value 999"),
            (
                result(true, pb::FailureClass::Reset as i32, ""),
                "failure_class: a successful probe has no failure class, got `reset`",
            ),
        ];
        for (r, want) in cases {
            let err = outcome_from_wire(&r).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(err.field(), "failure_class");
        }
        for bad in [
            prost_types::Duration { seconds: -1, nanos: 0 },
            prost_types::Duration {
                seconds: 86_401,
                nanos: 0,
            },
        ] {
            let mut r = result(true, 0, "");
            r.latency = Some(bad);
            let err = outcome_from_wire(&r).unwrap_err();
            assert_eq!(err.field(), "latency", "{err}");
            assert!(err.to_string().starts_with("latency: "), "{err}");
        }
    }
}
