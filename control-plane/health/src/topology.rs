//! Which PoPs and endpoints exist, as far as health is concerned.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The PoPs and their endpoints. The control plane derives it from the full
/// topology and swaps it in with [`crate::HealthState::set_topology`]; results for
/// anything not listed here are rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTopology {
    pub pops: BTreeMap<String, BTreeSet<String>>,
}

impl HealthTopology {
    /// Builds a topology from `(pop, endpoints)` pairs.
    pub fn new<P, E, I>(pops: I) -> Self
    where
        I: IntoIterator<Item = (P, E)>,
        P: Into<String>,
        E: IntoIterator,
        E::Item: Into<String>,
    {
        Self {
            pops: pops
                .into_iter()
                .map(|(pop, endpoints)| (pop.into(), endpoints.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }
}
