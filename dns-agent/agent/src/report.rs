//! What an agent says about itself on the plan stream besides ACK/NACK: reports,
//! in domain types (converted to the wire in [`crate::convert`]).
//!
//! Decision: the agent publishes its latest report on a `tokio::sync::watch`
//! channel and the follower forwards it, instead of the agent holding a sender on
//! the stream. A watch keeps only the newest value, so a slow or reconnecting stream
//! never queues stale reports, and the follower sends the latest one again right
//! after the hello of every new stream, so a replica learns the agent's state at
//! once after a failover.

use meridian_dns_core::plan::AnycastAction;
use tokio::sync::watch;

/// One report, sent as one `AgentMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReport {
    /// An Anycast agent's state per prefix of its PoP.
    Anycast(Vec<AnycastPrefixReport>),
}

/// One prefix: what the plan asks for and what the speaker announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastPrefixReport {
    /// The prefix as text (`198.51.100.0/24`).
    pub prefix: String,
    pub desired: AnycastAction,
    pub desired_prepend: u32,
    pub actual: AnycastAction,
    pub actual_prepend: u32,
    /// Why actual differs from desired; empty when they agree.
    pub detail: String,
    /// The plan version `desired` was taken from.
    pub plan_version: u64,
}

/// Where the follower reads the agent's latest report (`None`: nothing to report yet).
pub type Reports = watch::Receiver<Option<AgentReport>>;
