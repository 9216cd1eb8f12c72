//! The pure selection core: a validated [`Plan`] compiled into a [`PlanTable`] that
//! maps a client (an ECS prefix or a source address) to a region by longest-prefix
//! match, and picks that region's PoPs by weight. No I/O, no DNS types, no locks:
//! the table is immutable and shared by every query thread; randomness comes in
//! through [`Rng64`].
//!
//! **Region mapping** walks a binary trie of the plan's client prefixes (one per
//! address family). The same walk yields the ECS *scope*: the shortest prefix of the
//! client's address whose every address maps to the same region. Answering with the
//! matched prefix length alone would be wrong when a longer prefix of another region
//! sits inside it, and answering scope 0 for the default region would let a
//! resolver cache the default answer for *all* clients, including those in mapped
//! prefixes; the trie gives the exact value at no extra cost.
//!
//! **PoP choice** is systematic (inclusion-probability) sampling: with `k` records
//! per answer, PoP `i` is included with probability exactly `k * w_i / W`, and the
//! chosen records are returned in random order. So a PoP's long-run share is its
//! weight whether the client uses the first record *or* a resolver shuffles the
//! set and the client picks any of them (weighted random without replacement only
//! keeps the first record's share; a shuffling resolver pulls it towards uniform).
//! Inclusion probabilities cannot exceed 1, so when one PoP carries more than
//! `1/k` of the weight, `k` is lowered to `floor(W / max w)`: fewer records, exact
//! shares. Each query draws one uniform number per answer from a per-thread
//! generator: no shared counter, no atomics, nothing a plan swap could block.
//! Smooth weighted round-robin was rejected: exact only per sequence, so it needs
//! shared mutable state per region (contended atomics across query threads) and
//! resets on every plan swap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::plan::Plan;

/// Most records one answer may carry (config validation enforces it).
pub const MAX_ANSWERS: usize = 16;

/// A source of uniform random bits.
pub trait Rng64 {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is below 2^-50 for our sizes.
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// SplitMix64: tiny, fast, statistically fine for load spreading (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl Rng64 for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Address family of the records asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The region a client maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionMatch {
    /// Index into the plan's regions.
    pub region: usize,
    /// Length of the matched client prefix; `None` when the default region was used.
    pub matched_len: Option<u8>,
    /// The ECS scope: every address sharing this many leading bits with the client
    /// maps to the same region (never more than the bits the client disclosed).
    pub scope: u8,
}

/// One chosen record: the PoP (index into its region's PoPs) and the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub pop: usize,
    pub addr: IpAddr,
}

/// Up to [`MAX_ANSWERS`] picks without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Picks {
    len: usize,
    items: [Pick; MAX_ANSWERS],
}

impl Picks {
    fn new() -> Self {
        Picks {
            len: 0,
            items: [Pick {
                pop: 0,
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            }; MAX_ANSWERS],
        }
    }

    pub fn as_slice(&self) -> &[Pick] {
        &self.items[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// A plan compiled for answering.
#[derive(Debug, Clone)]
pub struct PlanTable {
    v4: Trie,
    v6: Trie,
    default_region: usize,
    regions: Vec<RegionPools>,
}

#[derive(Debug, Clone)]
struct RegionPools {
    v4: Pool,
    v6: Pool,
}

/// The PoPs of one region that have addresses of one family and a positive weight.
#[derive(Debug, Clone, Default)]
struct Pool {
    members: Vec<Member>,
    total: f64,
    max: f64,
}

#[derive(Debug, Clone)]
struct Member {
    pop: usize,
    weight: f64,
    addrs: Vec<IpAddr>,
}

impl PlanTable {
    /// Compiles a validated plan. Prefixes mapped to two regions (validation rejects
    /// those) would resolve to the first.
    pub fn new(plan: &Plan) -> Self {
        let mut v4 = Trie::new();
        let mut v6 = Trie::new();
        for (index, region) in plan.regions.iter().enumerate() {
            for net in &region.prefixes {
                match net {
                    ipnet::IpNet::V4(n) => v4.insert(key_v4(n.network()), n.prefix_len(), index),
                    ipnet::IpNet::V6(n) => v6.insert(key_v6(n.network()), n.prefix_len(), index),
                }
            }
        }
        let regions = plan
            .regions
            .iter()
            .map(|r| {
                let pool = |family: Family| {
                    let members: Vec<Member> = r
                        .pops
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.weight > 0.0)
                        .map(|(i, p)| Member {
                            pop: i,
                            weight: p.weight,
                            addrs: match family {
                                Family::V4 => p.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
                                Family::V6 => p.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
                            },
                        })
                        .filter(|m| !m.addrs.is_empty())
                        .collect();
                    Pool {
                        total: members.iter().map(|m| m.weight).sum(),
                        max: members.iter().map(|m| m.weight).fold(0.0, f64::max),
                        members,
                    }
                };
                RegionPools {
                    v4: pool(Family::V4),
                    v6: pool(Family::V6),
                }
            })
            .collect();
        PlanTable {
            v4,
            v6,
            default_region: plan.default_region,
            regions,
        }
    }

    /// Maps a client to its region. `known_bits` is how much of `addr` the client
    /// disclosed (the ECS source prefix, or the full width for a source address).
    pub fn region_for(&self, addr: IpAddr, known_bits: u8) -> RegionMatch {
        let (trie, key, width) = match canonical(addr) {
            IpAddr::V4(a) => (&self.v4, key_v4(a), 32u8),
            IpAddr::V6(a) => (&self.v6, key_v6(a), 128u8),
        };
        let (found, scope) = trie.lookup(key, known_bits.min(width));
        match found {
            Some((region, len)) => RegionMatch {
                region,
                matched_len: Some(len),
                scope,
            },
            None => RegionMatch {
                region: self.default_region,
                matched_len: None,
                scope,
            },
        }
    }

    /// Picks up to `answers` distinct PoPs of `region` that have `family` addresses,
    /// by weight (see the module docs), in random order, one address each.
    pub fn pick(&self, region: usize, family: Family, answers: usize, rng: &mut impl Rng64) -> Picks {
        let mut picks = Picks::new();
        let Some(pools) = self.regions.get(region) else {
            return picks;
        };
        let pool = match family {
            Family::V4 => &pools.v4,
            Family::V6 => &pools.v6,
        };
        let n = pool.members.len();
        if n == 0 || pool.total.is_nan() || pool.total <= 0.0 {
            return picks;
        }
        let by_share = ((pool.total / pool.max) + 1e-9).floor() as usize;
        let k = answers.clamp(1, MAX_ANSWERS).min(n).min(by_share.max(1));
        let scale = k as f64 / pool.total;
        let u = rng.unit();
        let mut next_point = u;
        let mut cum = 0.0;
        for (i, m) in pool.members.iter().enumerate() {
            if picks.len == k {
                break;
            }
            cum += m.weight * scale;
            // The last member absorbs rounding so every point lands somewhere.
            let bound = if i + 1 == n { f64::INFINITY } else { cum };
            if next_point < bound {
                picks.items[picks.len] = Pick {
                    pop: m.pop,
                    addr: m.addrs[rng.below(m.addrs.len())],
                };
                picks.len += 1;
                next_point = u + picks.len as f64;
            }
        }
        // Random order, so that "the first record" has the same shares as the set.
        for i in (1..picks.len).rev() {
            let j = rng.below(i + 1);
            picks.items.swap(i, j);
        }
        picks
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 client) are
/// matched as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

fn key_v4(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a)) << 96
}

fn key_v6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

const NONE: u32 = u32::MAX;

/// A binary trie over left-aligned address bits; a node at depth `d` stands for a
/// `/d` block.
#[derive(Debug, Clone)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    child: [u32; 2],
    region: u32,
}

impl Node {
    const EMPTY: Node = Node {
        child: [NONE, NONE],
        region: NONE,
    };
}

impl Trie {
    fn new() -> Self {
        Trie {
            nodes: vec![Node::EMPTY],
        }
    }

    fn insert(&mut self, key: u128, len: u8, region: usize) {
        let mut node = 0usize;
        for d in 0..len.min(128) {
            let bit = ((key >> (127 - d)) & 1) as usize;
            let next = self.nodes[node].child[bit];
            node = if next == NONE {
                self.nodes.push(Node::EMPTY);
                let new = (self.nodes.len() - 1) as u32;
                self.nodes[node].child[bit] = new;
                new as usize
            } else {
                next as usize
            };
        }
        if self.nodes[node].region == NONE {
            self.nodes[node].region = region as u32;
        }
    }

    /// Longest match within the first `known` bits, and the scope (see [`RegionMatch`]).
    fn lookup(&self, key: u128, known: u8) -> (Option<(usize, u8)>, u8) {
        let mut node = 0usize;
        let root = self.nodes[0].region;
        let mut best = (root != NONE).then_some((root as usize, 0u8));
        for d in 0..known {
            let n = self.nodes[node];
            if n.child == [NONE, NONE] {
                // Nothing more specific inside this /d block: all of it answers alike.
                return (best, d);
            }
            let bit = ((key >> (127 - d)) & 1) as usize;
            let next = n.child[bit];
            if next == NONE {
                // The client's /(d+1) block holds no prefix at all.
                return (best, d + 1);
            }
            node = next as usize;
            let r = self.nodes[node].region;
            if r != NONE {
                best = Some((r as usize, d + 1));
            }
        }
        (best, known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{pop, region};
    use crate::plan::{validate, PlanSnapshot};

    fn table(doc: PlanSnapshot) -> PlanTable {
        PlanTable::new(&validate(&doc).unwrap())
    }

    fn doc(regions: Vec<crate::plan::RegionSnapshot>, default: &str) -> PlanSnapshot {
        PlanSnapshot {
            version: 1,
            created_at_unix_ms: None,
            dns_ttl_seconds: 20,
            default_region: default.into(),
            regions,
            epoch: String::new(),
            content_hash: String::new(),
            anycast: Vec::new(),
        }
    }

    fn three_regions() -> PlanTable {
        table(doc(
            vec![
                region(
                    "eu",
                    &["10.1.0.0/16", "2001:db8:1::/48"],
                    vec![pop("fra1", 1.0, &["192.0.2.1"], &[])],
                ),
                region(
                    "eu-ams",
                    &["10.1.128.0/20"],
                    vec![pop("ams1", 1.0, &["192.0.2.2"], &[])],
                ),
                region(
                    "us",
                    &["10.0.0.0/8", "127.0.0.0/8"],
                    vec![pop("iad1", 1.0, &["192.0.2.3"], &[])],
                ),
                region("apac", &[], vec![pop("sin1", 1.0, &["192.0.2.4"], &[])]),
            ],
            "apac",
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_the_default_catches_the_rest() {
        let t = three_regions();
        let cases = [
            // (address, known bits, region, matched len, scope)
            ("10.1.2.3", 32, 0, Some(16), 17),
            ("10.1.130.9", 32, 1, Some(20), 20),
            ("10.1.2.0", 24, 0, Some(16), 17),
            ("10.9.9.9", 32, 2, Some(8), 13),
            ("127.0.0.1", 32, 2, Some(8), 8),
            ("192.0.2.1", 32, 3, None, 1),
            ("2001:db8:1:2::5", 128, 0, Some(48), 48),
            ("2001:db8:2::5", 56, 3, None, 47),
            ("::ffff:10.1.2.3", 128, 0, Some(16), 17),
            // Only 8 bits disclosed: the /16 cannot be decided, 10/8 can.
            ("10.0.0.0", 8, 2, Some(8), 8),
        ];
        for (addr, bits, region, len, scope) in cases {
            let m = t.region_for(ip(addr), bits);
            assert_eq!(
                (m.region, m.matched_len, m.scope),
                (region, len, scope),
                "{addr}/{bits}"
            );
        }
    }

    #[test]
    fn the_scope_covers_only_addresses_that_map_alike() {
        // Brute force over a small space: every address sharing `scope` bits with the
        // client must map to the same region.
        let t = three_regions();
        let mut rng = SplitMix64(7);
        for _ in 0..300 {
            let a = Ipv4Addr::from(0x0A01_0000u32 | (rng.next_u64() as u32 & 0x0000_FFFF));
            let m = t.region_for(IpAddr::V4(a), 32);
            for _ in 0..50 {
                let keep = if m.scope == 0 { 0 } else { u32::MAX << (32 - m.scope) };
                let other = (u32::from(a) & keep) | (rng.next_u64() as u32 & !keep);
                let o = t.region_for(IpAddr::V4(Ipv4Addr::from(other)), 32);
                assert_eq!(o.region, m.region, "{a} scope {} vs {}", m.scope, Ipv4Addr::from(other));
            }
        }
    }

    fn shares(t: &PlanTable, family: Family, answers: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut rng = SplitMix64(42);
        let mut first = vec![0.0; 8];
        let mut any = vec![0.0; 8];
        for _ in 0..n {
            let picks = t.pick(0, family, answers, &mut rng);
            let s = picks.as_slice();
            assert!(!s.is_empty());
            first[s[0].pop] += 1.0 / n as f64;
            for p in s {
                any[p.pop] += 1.0 / (n * s.len()) as f64;
            }
            let mut pops: Vec<usize> = s.iter().map(|p| p.pop).collect();
            pops.sort();
            pops.dedup();
            assert_eq!(pops.len(), s.len(), "answers must be distinct PoPs");
        }
        (first, any)
    }

    #[test]
    fn long_run_shares_equal_the_weights() {
        let t = table(doc(
            vec![region(
                "eu",
                &[],
                vec![
                    pop("a", 0.5, &["192.0.2.1"], &[]),
                    pop("b", 0.3, &["192.0.2.2"], &[]),
                    pop("c", 0.2, &["192.0.2.3", "192.0.2.33"], &[]),
                    pop("zero", 0.0, &["192.0.2.4"], &[]),
                ],
            )],
            "",
        ));
        for answers in [1, 2, 3] {
            let (first, any) = shares(&t, Family::V4, answers, 100_000);
            for (i, w) in [0.5, 0.3, 0.2, 0.0].iter().enumerate() {
                assert!((first[i] - w).abs() < 0.01, "answers {answers}: first {first:?}");
                assert!((any[i] - w).abs() < 0.01, "answers {answers}: any {any:?}");
            }
        }
        // answers = 3 with a 0.5 weight: at most 2 records keep the shares exact.
        let mut rng = SplitMix64(1);
        assert_eq!(t.pick(0, Family::V4, 3, &mut rng).len(), 2);
        // Both of c's addresses are used.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            for p in t.pick(0, Family::V4, 1, &mut rng).as_slice() {
                seen.insert(p.addr);
            }
        }
        assert!(seen.contains(&ip("192.0.2.33")) && !seen.contains(&ip("192.0.2.4")));
    }

    #[test]
    fn equal_weights_fill_every_answer() {
        let t = table(doc(
            vec![region(
                "eu",
                &[],
                (0..5)
                    .map(|i| pop(&format!("p{i}"), 1.0, &[&format!("192.0.2.{i}")], &[]))
                    .collect(),
            )],
            "",
        ));
        let mut rng = SplitMix64(3);
        for answers in 1..=7 {
            let picks = t.pick(0, Family::V4, answers, &mut rng);
            assert_eq!(picks.len(), answers.min(5));
        }
        let (first, _) = shares(&t, Family::V4, 2, 50_000);
        for s in &first[..5] {
            assert!((s - 0.2).abs() < 0.01, "{first:?}");
        }
    }

    #[test]
    fn family_filtering_picks_among_pops_that_have_it() {
        let t = table(doc(
            vec![
                region(
                    "eu",
                    &[],
                    vec![
                        pop("v4only", 0.9, &["192.0.2.1"], &[]),
                        pop("dual", 0.1, &["192.0.2.2"], &["2001:db8::2"]),
                    ],
                ),
                region("us", &["10.0.0.0/8"], vec![pop("iad1", 1.0, &["192.0.2.3"], &[])]),
            ],
            "",
        ));
        let mut rng = SplitMix64(5);
        for _ in 0..100 {
            let picks = t.pick(0, Family::V6, 2, &mut rng);
            assert_eq!(
                picks.as_slice(),
                &[Pick {
                    pop: 1,
                    addr: ip("2001:db8::2")
                }]
            );
        }
        assert!(t.pick(1, Family::V6, 1, &mut rng).is_empty(), "no IPv6 in us: NODATA");
        assert!(t.pick(9, Family::V4, 1, &mut rng).is_empty(), "unknown region");
    }

    #[test]
    fn unit_is_in_range() {
        let mut r = SplitMix64(0);
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(3) < 3);
        }
    }
}
