//! The steering output: a [`Plan`] and the guardrail firings it records. Whether a
//! new plan is worth publishing is decided on the stored form, by
//! `meridian_engine::worth_publishing`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::PopUsability;

/// Who serves whom with what weight, and what each PoP announces.
///
/// A plan carries no version: versions are given by the control plane when it
/// publishes one (`meridian_engine::worth_publishing` decides when it should).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Per client region, the PoPs to answer with and their weights (each ≥ 0, summing
    /// to 1), sorted by weight descending, then PoP id. Empty only when there is no PoP.
    pub regions: BTreeMap<String, Vec<PopWeight>>,
    /// Per PoP, the load the plan sends it and its resulting utilisation.
    pub pop_load: BTreeMap<String, PopLoad>,
    /// Some PoP is loaded beyond its full capacity (demand exceeds what can be served).
    pub overloaded: bool,
    /// Per PoP, whether its anycast prefixes are announced.
    pub anycast: BTreeMap<String, AnycastIntent>,
    /// Guardrails that fired while computing this plan.
    pub fired: Vec<GuardrailFiring>,
    /// Why the plan looks as it does: removed PoPs, fail-static decisions, overload,
    /// guardrails. One sentence each, in a deterministic order.
    pub reasons: Vec<String>,
}

/// One PoP's share of a region's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopWeight {
    /// PoP id.
    pub pop: String,
    /// Share of the region's demand, in [0, 1].
    pub weight: f64,
}

/// The load a plan puts on one PoP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopLoad {
    /// Demand sent to the PoP, summed over regions.
    pub load: f64,
    /// The PoP's capacity (at 100 %).
    pub capacity: f64,
    /// `load / capacity`; above 1 only when the plan is overloaded.
    pub utilisation: f64,
    /// The state the PoP had in the input.
    pub state: PopUsability,
    /// Whether the PoP serves every region that can reach it. False for PoPs removed
    /// (down within the failover cap, or drained); such a PoP may still carry load for
    /// a single region kept on it by the last-PoP-in-region guardrail.
    pub in_service: bool,
}

/// Whether a PoP announces its anycast prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnycastIntent {
    /// Announce every prefix of the PoP.
    Announce,
    /// Withdraw them (the anycast agent does so through its drain ladder).
    Withdraw,
}

impl fmt::Display for AnycastIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnycastIntent::Announce => "announce",
            AnycastIntent::Withdraw => "withdraw",
        })
    }
}

/// The guardrails. `Display` gives the rule's name as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardrailRule {
    /// Automatic failover may remove at most `max_failover_capacity_share` of the
    /// capacity; past it the core fails open.
    MaxFailoverCapacity,
    /// Never remove the last PoP serving a client region.
    LastPopInRegion,
    /// Never withdraw the last PoP announcing an anycast prefix.
    LastPopForPrefix,
    /// Refuse an operator drain that would push the remaining PoPs over capacity.
    DrainOverCapacity,
}

impl GuardrailRule {
    /// The rule's kebab-case name, e.g. `max-failover-capacity`.
    pub fn name(self) -> &'static str {
        match self {
            GuardrailRule::MaxFailoverCapacity => "max-failover-capacity",
            GuardrailRule::LastPopInRegion => "last-pop-in-region",
            GuardrailRule::LastPopForPrefix => "last-pop-for-prefix",
            GuardrailRule::DrainOverCapacity => "drain-over-capacity",
        }
    }
}

impl fmt::Display for GuardrailRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One guardrail that fired: which rule, where, and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailFiring {
    /// The rule that fired.
    pub rule: GuardrailRule,
    /// The PoP concerned, if one.
    pub pop: Option<String>,
    /// The client region concerned, if one.
    pub region: Option<String>,
    /// What happened, with the numbers.
    pub detail: String,
    /// The firing would have refused an operator action that was forced anyway.
    #[serde(default)]
    pub overridden: bool,
}

impl fmt::Display for GuardrailFiring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guardrail {}", self.rule)?;
        if let Some(pop) = &self.pop {
            write!(f, " (pop {pop})")?;
        }
        if let Some(region) = &self.region {
            write!(f, " (region {region})")?;
        }
        write!(f, ": {}", self.detail)?;
        if self.overridden {
            f.write_str(" [overridden by force]")?;
        }
        Ok(())
    }
}
