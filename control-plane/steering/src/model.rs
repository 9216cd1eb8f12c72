//! The steering inputs: PoPs, client regions, the latency matrix and the policy.
//!
//! Every map is a `BTreeMap` and every list is canonicalised (sorted by id) inside
//! [`crate::compute`], so the order in which a caller builds these values never shows in
//! a plan.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::SteeringError;

/// Everything the steering core looks at to compute one plan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringInput {
    /// The PoPs that can serve traffic, with their health and drain state.
    pub pops: Vec<PopInput>,
    /// The client regions whose demand is steered.
    pub regions: Vec<RegionInput>,
    /// Latency per (client region, PoP).
    #[serde(default)]
    pub latency: LatencyMatrix,
    /// Fill target and guardrail limits.
    #[serde(default)]
    pub policy: SteeringPolicy,
}

/// One PoP as the steering core sees it.
///
/// Room for later inputs ("Where this is going" in DESIGN.md): a price per PoP for
/// cost-aware steering would be one more field here, folded into the arc cost of the
/// solver (`latency + λ·price`) without changing its shape; a third-party CDN used as
/// overflow capacity is one more PoP with its own capacity and latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopInput {
    /// Unique PoP id.
    pub id: String,
    /// What the PoP can serve at 100 % utilisation, in the same unit as region demand
    /// (for example requests per second). Must be finite and > 0.
    pub capacity: f64,
    /// Health verdict and drain state.
    #[serde(default)]
    pub state: PopUsability,
    /// Client regions that must not use this PoP although it is up (the health verdict
    /// DEGRADED: some regions' probes fail). Other regions use it as usual.
    #[serde(default)]
    pub unreachable_from: BTreeSet<String>,
    /// Anycast prefixes this PoP announces when it is in service.
    #[serde(default)]
    pub anycast_prefixes: Vec<String>,
}

/// Whether a PoP may serve traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopUsability {
    /// Healthy.
    #[default]
    Usable,
    /// Unhealthy by the health verdicts: removed automatically, within the
    /// `max_failover_capacity_share` guardrail.
    Down,
    /// Drained by an operator, with the reason they gave.
    Drained {
        /// Why the operator drained it.
        reason: String,
    },
    /// No health data yet: treated as usable (fail static), never as down.
    Unknown,
}

impl PopUsability {
    /// A short name for messages: `usable`, `down`, `drained`, `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            PopUsability::Usable => "usable",
            PopUsability::Down => "down",
            PopUsability::Drained { .. } => "drained",
            PopUsability::Unknown => "unknown",
        }
    }
}

/// One client region: a set of clients (mapped by prefix elsewhere) with a demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionInput {
    /// Unique region id, as used by the probers and in `unreachable_from`.
    pub id: String,
    /// Expected load, in the unit of PoP capacity. Must be finite and >= 0. A region
    /// with zero demand still gets weights, so DNS can answer it.
    pub demand: f64,
    /// Residency constraint: when set, the only PoPs this region may be served from.
    /// It is a hard constraint: no guardrail serves a region from outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pops: Option<BTreeSet<String>>,
}

/// Latency in milliseconds per (client region, PoP).
///
/// The value used for a pair is the prober's measurement if there is one, else the
/// topology's hint, else `default_latency`. Entries naming a region or PoP that is not
/// in the input are ignored (stale measurements must not break steering), and so are
/// values that are not finite and ≥ 0 (the plan's reasons count them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyMatrix {
    /// Measured by the probers.
    #[serde(default)]
    pub measured: LatencyTable,
    /// Fixed hints from the topology.
    #[serde(default)]
    pub hints: LatencyTable,
    /// Used for pairs with neither a measurement nor a hint.
    #[serde(default = "default_latency_ms")]
    pub default_latency: f64,
}

impl Default for LatencyMatrix {
    fn default() -> Self {
        LatencyMatrix {
            measured: LatencyTable::default(),
            hints: LatencyTable::default(),
            default_latency: default_latency_ms(),
        }
    }
}

impl LatencyMatrix {
    /// An empty matrix whose every pair is `default_latency` milliseconds.
    pub fn new(default_latency: f64) -> Self {
        LatencyMatrix {
            default_latency,
            ..LatencyMatrix::default()
        }
    }

    /// Records a prober's measurement.
    pub fn set_measured(&mut self, region: &str, pop: &str, ms: f64) {
        self.measured.set(region, pop, ms);
    }

    /// Records a prober region's measurements, PoP by PoP (see [`LatencyTable::set_row`]).
    pub fn set_measured_row<'a>(&mut self, region: &str, values: impl IntoIterator<Item = (&'a str, f64)>) {
        self.measured.set_row(region, values);
    }

    /// Records a topology hint.
    pub fn set_hint(&mut self, region: &str, pop: &str, ms: f64) {
        self.hints.set(region, pop, ms);
    }

    /// The latency the steering core uses for this pair: measured, else hint, else default.
    pub fn latency(&self, region: &str, pop: &str) -> f64 {
        let usable = |ms: f64| ms.is_finite() && ms >= 0.0;
        self.measured
            .get(region, pop)
            .filter(|&ms| usable(ms))
            .or_else(|| self.hints.get(region, pop).filter(|&ms| usable(ms)))
            .unwrap_or(self.default_latency)
    }
}

/// A table of latencies: one row per client region, one column per PoP.
///
/// Dense by design: the probers of every region measure every PoP, so a full table has
/// regions × PoPs entries (300 k at the design size), and reading it must cost an array
/// access per entry, not a map lookup (a map of maps alone took half the 10 ms budget).
/// Build it in bulk by setting `pops` and pushing rows; [`LatencyTable::set`] is a
/// convenience for small tables.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    /// The column ids (PoPs), in column order.
    pub pops: Vec<String>,
    /// Per region id, one value per column (`None`: no value for that pair). A row
    /// shorter than `pops` has no values for the missing columns.
    pub rows: BTreeMap<String, Vec<Option<f64>>>,
}

impl LatencyTable {
    /// Sets one value, adding the column and the row as needed.
    ///
    /// The column is searched from the end of the region's row onwards (then from the
    /// start), so filling region by region with PoPs in the same order each time costs
    /// O(1) per value, gaps included; other orders cost a scan of the columns.
    pub fn set(&mut self, region: &str, pop: &str, ms: f64) {
        let row_len = self.rows.get(region).map_or(0, Vec::len).min(self.pops.len());
        let found = self.pops[row_len..]
            .iter()
            .position(|p| p == pop)
            .map(|c| c + row_len)
            .or_else(|| self.pops[..row_len].iter().position(|p| p == pop));
        let column = match found {
            Some(c) => c,
            None => {
                self.pops.push(pop.to_owned());
                self.pops.len() - 1
            }
        };
        // Look the row up by `&str` first: allocating the key on every call costs
        // more than the rest of `set` when a whole matrix is filled.
        let row = match self.rows.get_mut(region) {
            Some(row) => row,
            None => self.rows.entry(region.to_owned()).or_default(),
        };
        if row.len() <= column {
            row.resize(column + 1, None);
        }
        row[column] = Some(ms);
    }

    /// Sets a whole region's values: one row lookup for the region, and each column
    /// found in O(1) when the values come in the same PoP order as before (the order
    /// of the topology, every tick). What `set` costs per value, this costs per row.
    pub fn set_row<'a>(&mut self, region: &str, values: impl IntoIterator<Item = (&'a str, f64)>) {
        let mut row = self.rows.remove(region).unwrap_or_default();
        let mut cursor = 0;
        for (pop, ms) in values {
            let column = if self.pops.get(cursor).is_some_and(|p| p == pop) {
                cursor
            } else {
                match self.pops.iter().position(|p| p == pop) {
                    Some(c) => c,
                    None => {
                        self.pops.push(pop.to_owned());
                        self.pops.len() - 1
                    }
                }
            };
            cursor = column + 1;
            if row.len() <= column {
                row.resize(column + 1, None);
            }
            row[column] = Some(ms);
        }
        self.rows.insert(region.to_owned(), row);
    }

    /// The value for a pair, if any.
    pub fn get(&self, region: &str, pop: &str) -> Option<f64> {
        let column = self.pops.iter().position(|p| p == pop)?;
        self.rows.get(region)?.get(column).copied().flatten()
    }
}

/// The knobs of steering and its guardrails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringPolicy {
    /// Fill each PoP up to this share of its capacity before any load spills into its
    /// headroom. In (0, 1].
    pub target_utilisation: f64,
    /// The largest share of total capacity (of PoPs not drained by an operator) that
    /// automatic failover may remove at once; past it the core fails open. In [0, 1].
    pub max_failover_capacity_share: f64,
    /// A new plan is published only when some weight moves by more than this (or a
    /// state changes). In [0, 1).
    pub weight_change_threshold: f64,
}

impl Default for SteeringPolicy {
    fn default() -> Self {
        SteeringPolicy {
            target_utilisation: 0.8,
            max_failover_capacity_share: 0.5,
            weight_change_threshold: 0.05,
        }
    }
}

impl SteeringPolicy {
    /// Checks every field, naming the first one out of range.
    pub fn validate(self) -> Result<Self, SteeringError> {
        let check = |field: &str, value: f64, ok: bool, expected: &str| {
            if value.is_finite() && ok {
                Ok(())
            } else {
                Err(SteeringError::invalid(
                    format!("policy.{field}"),
                    format!("must be {expected}, got {value}"),
                ))
            }
        };
        let t = self.target_utilisation;
        check("target_utilisation", t, t > 0.0 && t <= 1.0, "in (0, 1]")?;
        let s = self.max_failover_capacity_share;
        check("max_failover_capacity_share", s, (0.0..=1.0).contains(&s), "in [0, 1]")?;
        let w = self.weight_change_threshold;
        check("weight_change_threshold", w, (0.0..1.0).contains(&w), "in [0, 1)")?;
        Ok(self)
    }
}

/// A hypothetical change for [`crate::what_if`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// An operator drains this PoP.
    Drain(String),
    /// This PoP's health verdict turns to down.
    Down(String),
}

fn default_latency_ms() -> f64 {
    300.0
}
