//! The authoritative data that comes from configuration, not from the plan: each
//! zone's SOA and NS, its static records (name-server glue, TXT) and which names are
//! steered. Built once at start-up from the validated config; pure lookups after.

use std::collections::HashMap;

use crate::wire::{self, MAX_NAME_LEN};

/// Every configured zone, most specific origin first.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: Vec<Zone>,
}

#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower-case wire form.
    pub origin: Vec<u8>,
    pub soa_rdata: Vec<u8>,
    pub soa_ttl: u32,
    /// The TTL of negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308).
    pub negative_ttl: u32,
    pub ns: Vec<Vec<u8>>,
    pub ns_ttl: u32,
    /// Every name that exists in the zone (owners, their ancestors up to the apex as
    /// empty non-terminals, the apex itself), lower-case wire form.
    names: HashMap<Vec<u8>, NameData>,
}

/// What a name holds.
#[derive(Debug, Clone, Default)]
pub struct NameData {
    pub steered: Option<Steered>,
    pub records: Vec<StaticRecord>,
}

/// A name answered from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Presentation form, for logs.
    pub name: String,
    pub answers: usize,
    /// Overrides the plan's TTL when set.
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

/// The result of looking a query name up.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'z> {
    /// Not inside any configured zone.
    OutOfZone,
    /// Inside `zone` but no such name.
    NxDomain { zone: &'z Zone, apex_offset: usize },
    Found {
        zone: &'z Zone,
        /// Offset of the zone apex inside the query name (for compression).
        apex_offset: usize,
        is_apex: bool,
        data: &'z NameData,
    },
}

impl Zones {
    pub fn new(mut zones: Vec<Zone>) -> Self {
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.len()));
        Zones { zones }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Looks up a case-folded wire-form name.
    pub fn lookup(&self, folded: &[u8]) -> Lookup<'_> {
        for zone in &self.zones {
            if let Some(apex_offset) = wire::suffix_offset(folded, &zone.origin) {
                return match zone.names.get(folded) {
                    Some(data) => Lookup::Found {
                        zone,
                        apex_offset,
                        is_apex: apex_offset == 0,
                        data,
                    },
                    None => Lookup::NxDomain { zone, apex_offset },
                };
            }
        }
        Lookup::OutOfZone
    }

    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter()
    }
}

impl Zone {
    /// A zone with its apex; add names with [`Zone::add`].
    pub fn new(origin: Vec<u8>, soa_rdata: Vec<u8>, soa_ttl: u32, soa_minimum: u32, ns: Vec<Vec<u8>>) -> Self {
        let mut names = HashMap::new();
        names.insert(origin.clone(), NameData::default());
        Zone {
            origin,
            soa_rdata,
            soa_ttl,
            negative_ttl: soa_ttl.min(soa_minimum),
            ns,
            ns_ttl: soa_ttl,
            names,
        }
    }

    /// The data of `name` (inside the zone), creating it and its empty
    /// non-terminal ancestors.
    pub fn add(&mut self, name: &[u8]) -> &mut NameData {
        let mut pos = 0usize;
        while pos < name.len() && name.len() - pos > self.origin.len() {
            let ancestor = &name[pos..];
            self.names.entry(ancestor.to_vec()).or_default();
            pos += 1 + name[pos] as usize;
        }
        self.names.entry(name.to_vec()).or_default()
    }

    pub fn get(&self, name: &[u8]) -> Option<&NameData> {
        self.names.get(name)
    }

    /// Whether `name` (lower-case wire form) is inside this zone.
    pub fn contains(&self, name: &[u8]) -> bool {
        name.len() <= MAX_NAME_LEN && wire::suffix_offset(name, &self.origin).is_some()
    }

    /// Static A/AAAA records of an in-zone name (for NS glue).
    pub fn glue(&self, name: &[u8]) -> impl Iterator<Item = &StaticRecord> {
        self.names
            .get(name)
            .into_iter()
            .flat_map(|d| d.records.iter())
            .filter(|r| r.rtype == wire::TYPE_A || r.rtype == wire::TYPE_AAAA)
    }

    pub fn steered_names(&self) -> impl Iterator<Item = &Steered> {
        self.names.values().filter_map(|d| d.steered.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::name_from_text;

    #[test]
    fn lookup_distinguishes_names_empty_non_terminals_and_other_zones() {
        let origin = name_from_text("example.net.").unwrap();
        let mut zone = Zone::new(origin, vec![], 3600, 60, vec![]);
        zone.add(&name_from_text("a.b.example.net.").unwrap())
            .records
            .push(StaticRecord {
                rtype: wire::TYPE_TXT,
                ttl: 60,
                rdata: wire::txt_rdata("x"),
            });
        let sub = Zone::new(name_from_text("sub.example.net.").unwrap(), vec![], 3600, 60, vec![]);
        let zones = Zones::new(vec![zone, sub]);
        let look = |s: &str| zones.lookup(&name_from_text(s).unwrap());
        assert!(matches!(look("example.net."), Lookup::Found { is_apex: true, .. }));
        assert!(
            matches!(look("a.b.example.net."), Lookup::Found { is_apex: false, data, .. } if data.records.len() == 1)
        );
        assert!(matches!(look("b.example.net."), Lookup::Found { data, .. } if data.records.is_empty()));
        assert!(matches!(
            look("c.example.net."),
            Lookup::NxDomain { apex_offset: 2, .. }
        ));
        assert!(matches!(look("x.sub.example.net."), Lookup::NxDomain { zone, .. } if zone.origin.len() == 17));
        assert!(matches!(look("example.org."), Lookup::OutOfZone));
        assert!(matches!(look("net."), Lookup::OutOfZone));
    }
}
