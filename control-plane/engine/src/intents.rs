//! Operator intents that shape steering: drains, capacity overrides and the plan
//! pin, as the store holds them under `<root>/intents/`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use meridian_core::keys::Keys;
use meridian_core::records::{CapacityOverride, DrainIntent, PlanPin};
use meridian_core::topology::TopologyDoc;

/// Drains and capacity overrides by PoP, and the plan pin (while present, steering
/// publishes nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intents {
    pub drains: BTreeMap<String, DrainIntent>,
    pub capacity: BTreeMap<String, CapacityOverride>,
    pub pin: Option<PlanPin>,
}

/// The topology steering plans with at `now_ms`: the applied one, with the capacity
/// overrides in force (an expired one no longer applies; an override of a PoP the
/// topology no longer has is ignored). Borrowed when nothing is overridden.
pub fn with_capacity<'a>(
    doc: &'a TopologyDoc,
    capacity: &BTreeMap<String, CapacityOverride>,
    now_ms: u64,
) -> Cow<'a, TopologyDoc> {
    let in_force: Vec<&CapacityOverride> = capacity.values().filter(|c| c.in_force(now_ms)).collect();
    if in_force.is_empty() {
        return Cow::Borrowed(doc);
    }
    let mut owned = doc.clone();
    for o in in_force {
        if let Some(p) = owned.pops.iter_mut().find(|p| p.id == o.pop) {
            p.capacity = o.capacity;
        }
    }
    Cow::Owned(owned)
}

/// A stored intent that could not be read; it is left out, and the caller logs it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable intent at {key}: {reason}")]
pub struct IntentError {
    pub key: String,
    pub reason: String,
}

impl Intents {
    /// Decodes every intent under the intents prefix. Keys that are neither a drain
    /// nor the pin are ignored (a newer replica may store more kinds).
    pub fn decode<'a>(keys: &Keys, raw: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> (Intents, Vec<IntentError>) {
        let mut out = Intents::default();
        let mut errors = Vec::new();
        let drains = keys.drains_prefix();
        let capacity = keys.capacity_prefix();
        let pin = keys.plan_pin();
        for (key, value) in raw {
            let error = |e: serde_json::Error| IntentError {
                key: key.to_string(),
                reason: e.to_string(),
            };
            if key.starts_with(&drains) {
                match serde_json::from_slice::<DrainIntent>(value) {
                    Ok(d) => {
                        out.drains.insert(d.pop.clone(), d);
                    }
                    Err(e) => errors.push(error(e)),
                }
            } else if key.starts_with(&capacity) {
                match serde_json::from_slice::<CapacityOverride>(value) {
                    Ok(c) => {
                        out.capacity.insert(c.pop.clone(), c);
                    }
                    Err(e) => errors.push(error(e)),
                }
            } else if key == pin {
                match serde_json::from_slice::<PlanPin>(value) {
                    Ok(p) => out.pin = Some(p),
                    Err(e) => errors.push(error(e)),
                }
            }
        }
        (out, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_and_the_pin_decode_and_garbage_is_reported_not_applied() {
        let keys = Keys::new("/m");
        let drain = DrainIntent {
            pop: "fra1".into(),
            reason: "fibre".into(),
            requested_by: "alice".into(),
            at_unix_ms: 5,
            forced_past: None,
            weight_percent: None,
            regions: Vec::new(),
            anycast: None,
        };
        let pin = PlanPin {
            version: 7,
            reason: "roll back".into(),
            requested_by: "bob".into(),
            at_unix_ms: 6,
        };
        let d = serde_json::to_vec(&drain).unwrap();
        let p = serde_json::to_vec(&pin).unwrap();
        let drain_key = keys.drain("fra1");
        let bad_key = keys.drain("ams1");
        let pin_key = keys.plan_pin();
        let raw: Vec<(&str, &[u8])> = vec![
            (drain_key.as_str(), &d),
            (bad_key.as_str(), b"{not json"),
            (pin_key.as_str(), &p),
            ("/m/intents/future-kind", b"whatever"),
        ];
        let (intents, errors) = Intents::decode(&keys, raw);
        assert_eq!(intents.drains.len(), 1);
        assert_eq!(intents.drains["fra1"], drain);
        assert_eq!(intents.pin, Some(pin));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, bad_key);
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;

    #[test]
    fn capacity_overrides_decode_and_apply_until_they_expire() {
        let keys = Keys::new("/m");
        let o = CapacityOverride {
            pop: "fra1".into(),
            capacity: 250.0,
            reason: "half the racks".into(),
            requested_by: "otto".into(),
            at_unix_ms: 0,
            until_unix_ms: Some(1_000),
        };
        let v = serde_json::to_vec(&o).unwrap();
        let key = keys.capacity("fra1");
        let (intents, errors) = Intents::decode(&keys, vec![(key.as_str(), v.as_slice())]);
        assert!(errors.is_empty());
        assert_eq!(intents.capacity["fra1"], o);
        let doc = TopologyDoc::from_toml(
            r#"
[[pops]]
id = "fra1"
capacity = 1000
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]
"#,
        )
        .unwrap();
        assert_eq!(with_capacity(&doc, &intents.capacity, 999).pops[0].capacity, 250.0);
        assert_eq!(with_capacity(&doc, &intents.capacity, 1_000).pops[0].capacity, 1000.0);
        assert!(matches!(with_capacity(&doc, &BTreeMap::new(), 0), Cow::Borrowed(_)));
    }
}
