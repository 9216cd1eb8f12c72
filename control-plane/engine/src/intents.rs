//! Operator intents that shape steering: drains and the plan pin, as the store holds
//! them under `<root>/intents/`.

use std::collections::BTreeMap;

use meridian_core::keys::Keys;
use meridian_core::records::{DrainIntent, PlanPin};

/// Drains by PoP, and the plan pin (while present, steering publishes nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intents {
    pub drains: BTreeMap<String, DrainIntent>,
    pub pin: Option<PlanPin>,
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
