//! Metric names of the Anycast agent (`meridian_anycast_*`). The plan follower's
//! counters (`meridian_anycast_plans_received_total`,
//! `meridian_anycast_plan_nacks_total`, `meridian_anycast_control_plane_reconnects_total`,
//! `meridian_anycast_plan_epoch_changes_total`,
//! `meridian_anycast_plan_cache_write_failures_total`) are emitted by
//! `meridian-edge-agent` under [`PREFIX`].

/// The prefix of every Anycast agent metric.
pub const PREFIX: &str = "meridian_anycast";

/// Per prefix, `side` (`desired`: what the plan asks; `actual`: what the speaker
/// announces) and `action` (`announce`, `prepend`, `graceful_shutdown`,
/// `withdraw`): 1 for the current action, 0 for the others.
pub const PREFIX_STATE: &str = "meridian_anycast_prefix_state";
/// Per prefix and `side`, the AS-path prepend count.
pub const PREFIX_PREPENDS: &str = "meridian_anycast_prefix_prepends";
/// Per prefix, 1 while the speaker announces what the plan asks, 0 otherwise (a
/// refusal by the safety rules or a speaker error).
pub const PREFIX_IN_SYNC: &str = "meridian_anycast_prefix_in_sync";
/// Speaker calls that failed, by `op` (`list`, `announce`, `withdraw`) and `kind`.
pub const RECONCILE_ERRORS: &str = "meridian_anycast_reconcile_errors_total";
/// Routes put back after the speaker changed under the agent (a path deleted or
/// changed by hand), by prefix.
pub const DRIFT_CORRECTIONS: &str = "meridian_anycast_drift_corrections_total";
/// Withdrawals and graceful shutdowns the agent refused as the last announcer.
pub const REFUSALS: &str = "meridian_anycast_last_announcer_refusals_total";
/// How long one reconcile took (list, changes, list again).
pub const RECONCILE_DURATION: &str = "meridian_anycast_reconcile_duration_seconds";
/// Seconds since a control plane last sent or confirmed a plan (since start-up
/// when none has yet).
pub const SECONDS_SINCE_PLAN: &str = "meridian_anycast_seconds_since_last_plan";
/// The plan version applied to the speaker (0: none yet).
pub const PLAN_VERSION: &str = "meridian_anycast_plan_version";
/// 1 while a plan stream to a control-plane replica is open.
pub const CONTROL_PLANE_CONNECTED: &str = "meridian_anycast_control_plane_connected";
