//! Metric names (all `meridian_prober_*`) and their descriptions. The values are
//! recorded through the `metrics` facade where things happen.

pub const PROBES: &str = "meridian_prober_probes_total";
pub const PROBE_DURATION: &str = "meridian_prober_probe_duration_seconds";
pub const BUFFERED: &str = "meridian_prober_buffered_results";
pub const DROPPED: &str = "meridian_prober_results_dropped_total";
pub const ACKED: &str = "meridian_prober_results_acked_total";
pub const REJECTED: &str = "meridian_prober_results_rejected_total";
pub const RECONNECTS: &str = "meridian_prober_stream_reconnects_total";
pub const CONNECTED: &str = "meridian_prober_stream_connected";
pub const ASSIGNMENT_VERSION: &str = "meridian_prober_assignment_version";
pub const TARGETS: &str = "meridian_prober_targets";
pub const TARGETS_REJECTED: &str = "meridian_prober_targets_rejected_total";
pub const ASSIGNMENTS_STALE: &str = "meridian_prober_assignments_stale_total";
pub const ASSIGNMENT_RECONNECTS: &str = "meridian_prober_assignment_reconnects_total";
pub const PROBE_NOW: &str = "meridian_prober_probe_now_total";
pub const PROBE_NOW_UNKNOWN: &str = "meridian_prober_probe_now_unknown_targets_total";

/// Registers the descriptions (shown as `# HELP` on /metrics).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        PROBES,
        "Probes run, by pop, kind, outcome (success|failure) and failure class."
    );
    describe_histogram!(PROBE_DURATION, Unit::Seconds, "Probe latency, by pop and kind.");
    describe_gauge!(
        BUFFERED,
        "Results held for a replica (waiting or sent and unacknowledged), by replica."
    );
    describe_counter!(
        DROPPED,
        "Results dropped because a replica's buffer was full (oldest first), by replica."
    );
    describe_counter!(ACKED, "Results acknowledged by a replica, by replica.");
    describe_counter!(
        REJECTED,
        "Results a replica acknowledged but rejected as invalid, by replica."
    );
    describe_counter!(
        RECONNECTS,
        "Result streams that broke or failed to connect and were retried, by replica."
    );
    describe_gauge!(CONNECTED, "1 while the result stream to a replica is up, by replica.");
    describe_gauge!(ASSIGNMENT_VERSION, "Version of the probe assignment set applied.");
    describe_gauge!(TARGETS, "Targets being probed.");
    describe_counter!(TARGETS_REJECTED, "Assigned targets refused as invalid.");
    describe_counter!(
        ASSIGNMENTS_STALE,
        "Assignment sets ignored because their version was older than the one applied."
    );
    describe_counter!(
        PROBE_NOW,
        "Requests from the control plane to probe a target now (another region saw it fail), by pop."
    );
    describe_counter!(
        PROBE_NOW_UNKNOWN,
        "Requests to probe now that named a target this prober does not run."
    );
    describe_counter!(
        ASSIGNMENT_RECONNECTS,
        "Assignment streams that broke or failed to connect, by replica."
    );
}
