//! Blending two plans, for staged changes such as failback slow start: the plan with
//! the recovering PoPs and the plan without them, mixed by the stage factor `f`, so a
//! recovering PoP carries at most `f` of its final share in every region.

use std::collections::BTreeMap;

use crate::plan::{Plan, PopLoad, PopWeight};

/// `f · with + (1 − f) · without`, region by region and PoP by PoP (`f` is clamped to
/// [0, 1]). Weights still sum to 1 per region. Everything that is not a weight or a
/// load (Anycast intents, guardrail firings, reasons) comes from `with`, the plan the
/// change is moving towards.
pub fn blend(with: &Plan, without: &Plan, f: f64) -> Plan {
    let f = if f.is_finite() { f.clamp(0.0, 1.0) } else { 1.0 };
    let mut out = with.clone();
    for (region, weights) in out.regions.iter_mut() {
        let mut mixed: BTreeMap<String, f64> = BTreeMap::new();
        for w in weights.iter() {
            *mixed.entry(w.pop.clone()).or_default() += f * w.weight;
        }
        match without.regions.get(region) {
            Some(other) if !other.is_empty() => {
                for w in other {
                    *mixed.entry(w.pop.clone()).or_default() += (1.0 - f) * w.weight;
                }
            }
            // Nothing to fall back on for this region: keep `with` unchanged.
            _ => continue,
        }
        let mut list: Vec<PopWeight> = mixed
            .into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(pop, weight)| PopWeight { pop, weight })
            .collect();
        list.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.pop.cmp(&b.pop)));
        *weights = list;
    }
    for (pop, load) in out.pop_load.iter_mut() {
        let other = without.pop_load.get(pop).map(|l| l.load).unwrap_or(0.0);
        let blended = f * load.load + (1.0 - f) * other;
        *load = PopLoad {
            load: blended,
            utilisation: if load.capacity > 0.0 {
                blended / load.capacity
            } else {
                0.0
            },
            ..load.clone()
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(weights: &[(&str, &[(&str, f64)])]) -> Plan {
        Plan {
            regions: weights
                .iter()
                .map(|(r, ws)| {
                    (
                        r.to_string(),
                        ws.iter()
                            .map(|(p, w)| PopWeight {
                                pop: p.to_string(),
                                weight: *w,
                            })
                            .collect(),
                    )
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn a_recovering_pop_gets_at_most_f_of_its_share() {
        let with = plan(&[("eu", &[("fra1", 1.0)])]);
        let without = plan(&[("eu", &[("ams1", 1.0)])]);
        let mixed = blend(&with, &without, 0.1);
        let eu = &mixed.regions["eu"];
        assert_eq!(eu[0].pop, "ams1");
        assert!((eu[0].weight - 0.9).abs() < 1e-12);
        assert!((eu[1].weight - 0.1).abs() < 1e-12);
        let total: f64 = eu.iter().map(|w| w.weight).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(blend(&with, &without, 1.0).regions, with.regions);
    }

    #[test]
    fn a_region_with_no_fallback_keeps_the_target_plan() {
        let with = plan(&[("eu", &[("fra1", 1.0)])]);
        let without = plan(&[("eu", &[])]);
        assert_eq!(blend(&with, &without, 0.1).regions, with.regions);
    }
}
