//! What one probe observed, shared by the prober (which produces it) and the control
//! plane (which aggregates it): [`ProbeOutcome`] and its [`FailureClass`].
//!
//! Decision: one type on both sides of the wire, so a class or a detail cannot be
//! lost or renamed between the prober and `explain`. The wire form (`meridian.v1`)
//! converts to and from these types in one place, the `meridian-proto` crate; this
//! crate knows nothing of prost.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest failure detail kept (in bytes, before the `…` that marks a cut): the
/// control plane shows it in `explain`, it is not a log.
pub const MAX_DETAIL: usize = 240;

/// What one probe observed.
///
/// `success` is true exactly when `class` is [`FailureClass::None`]; the
/// constructors keep it so, and the health core rejects a value that does not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeOutcome {
    pub success: bool,
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    pub class: FailureClass,
    /// A short, human-readable explanation of a failure (empty on success), at most
    /// [`MAX_DETAIL`] bytes plus the `…` that marks a cut.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl ProbeOutcome {
    /// A successful probe that took `latency`.
    pub fn ok(latency: Duration) -> Self {
        Self {
            success: true,
            latency,
            class: FailureClass::None,
            detail: String::new(),
        }
    }

    /// A failed probe of `class`, with `detail` cut to [`MAX_DETAIL`] bytes on a
    /// character boundary.
    ///
    /// A failure needs a class: `FailureClass::None` here becomes
    /// [`FailureClass::Other`], so a failed outcome never reads as a success.
    pub fn failed(latency: Duration, class: FailureClass, detail: impl Into<String>) -> Self {
        Self {
            success: false,
            latency,
            class: if class == FailureClass::None {
                FailureClass::Other
            } else {
                class
            },
            detail: truncate_detail(detail.into()),
        }
    }

    /// Whether `success` and `class` agree (a success has no class, a failure has
    /// one).
    pub fn is_consistent(&self) -> bool {
        self.success == (self.class == FailureClass::None)
    }
}

/// Why a probe failed. [`FailureClass::None`] for a successful probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The probe succeeded.
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

    /// The snake_case name, as used in JSON, metric labels and `explain`.
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

    /// Whether probing again soon may give another answer: the network-level
    /// failures are often transient, a wrong status or a bad certificate rarely.
    pub const fn may_be_transient(self) -> bool {
        matches!(
            self,
            FailureClass::Timeout | FailureClass::Refused | FailureClass::Reset | FailureClass::Other
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cuts `s` to at most [`MAX_DETAIL`] bytes on a character boundary and marks the
/// cut with `…`.
pub fn truncate_detail(mut s: String) -> String {
    if s.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
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
        assert_eq!(FailureClass::HttpStatus.to_string(), "http_status");
    }

    #[test]
    fn only_network_level_failures_may_be_transient() {
        let transient: Vec<FailureClass> = FailureClass::ALL.into_iter().filter(|c| c.may_be_transient()).collect();
        assert_eq!(
            transient,
            [
                FailureClass::Timeout,
                FailureClass::Refused,
                FailureClass::Reset,
                FailureClass::Other
            ]
        );
    }

    #[test]
    fn details_are_kept_short_on_a_char_boundary() {
        let long = "é".repeat(300);
        let o = ProbeOutcome::failed(Duration::ZERO, FailureClass::Other, long);
        assert!(o.detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(o.detail.ends_with('…'));
        // 'é' is two bytes, so the cut lands on 240 exactly: 120 of them kept.
        assert_eq!(o.detail.chars().filter(|&c| c == 'é').count(), 120);
        let short = ProbeOutcome::failed(Duration::ZERO, FailureClass::Tls, "bad cert");
        assert_eq!(short.detail, "bad cert");
        assert_eq!(truncate_detail("x".repeat(MAX_DETAIL)), "x".repeat(MAX_DETAIL));
    }

    #[test]
    fn constructors_keep_success_and_class_consistent() {
        let ok = ProbeOutcome::ok(Duration::from_millis(3));
        assert!(ok.success && ok.class == FailureClass::None && ok.detail.is_empty() && ok.is_consistent());
        let failed = ProbeOutcome::failed(Duration::ZERO, FailureClass::None, "no class given");
        assert!(!failed.success);
        assert_eq!(failed.class, FailureClass::Other);
        assert!(failed.is_consistent());
        let mut broken = ok;
        broken.class = FailureClass::Tls;
        assert!(!broken.is_consistent());
    }

    #[test]
    fn outcome_round_trips_through_json_with_readable_latency() {
        let o = ProbeOutcome::failed(Duration::from_micros(1_500), FailureClass::HttpStatus, "status 503");
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"success":false,"latency":"1ms 500us","class":"http_status","detail":"status 503"}"#
        );
        assert_eq!(serde_json::from_str::<ProbeOutcome>(&json).unwrap(), o);
        // A success carries no detail, so its JSON has none.
        let ok = serde_json::to_string(&ProbeOutcome::ok(Duration::from_millis(2))).unwrap();
        assert_eq!(ok, r#"{"success":true,"latency":"2ms","class":"none"}"#);
    }
}
