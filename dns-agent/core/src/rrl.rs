//! Response rate limiting (RRL) per client prefix, in the style of BIND and Knot:
//! each client /24 (IPv4) or /56 (IPv6) gets a token bucket of
//! `responses_per_second` tokens that refills at that rate; a response over the limit
//! is dropped, except every `slip`-th, which is sent truncated (TC=1, no records) so
//! a real client behind a spoofed flood retries over TCP, where no limit applies.
//!
//! Only the decision lives here, with time as an argument ([`RateLimiter::check`]
//! takes `now`); the daemon's UDP loop reads the clock and acts on the
//! [`RrlAction`]. Off by default, as in BIND and Knot.
//!
//! Decision: a fixed-size table (`table_size` slots, allocated once) indexed by a
//! seeded hash of the prefix, with a short probe, instead of a map that grows with
//! the prefixes seen and is swept or LRU-evicted. A flood from random spoofed
//! sources then costs O(1) per packet and no memory: a new prefix takes an empty slot
//! or one whose bucket is full again (a full bucket is the same as no entry), and when
//! every probed slot is busy it shares the least recently used one, i.e. it is
//! limited together with that prefix (Knot does the same with colliding buckets).
//! The rejected alternative, a `HashMap` with a sweep, has to stop and scan the table
//! under exactly the floods RRL exists for. Each bucket is kept as its theoretical
//! arrival time (GCRA), one integer, so refilling needs no timer.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[rrl]` section of the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrlConfig {
    /// Responses per second to one client prefix over UDP, which is also the burst
    /// a quiet prefix may send at once. 0 (the default) turns RRL off.
    pub responses_per_second: u32,
    /// Of the responses over the limit, every `slip`-th is sent truncated (TC=1) and
    /// the others are dropped; 0 drops them all, 1 truncates them all.
    pub slip: u32,
    /// The client prefix that shares one bucket, IPv4.
    pub ipv4_prefix_length: u8,
    /// The client prefix that shares one bucket, IPv6.
    pub ipv6_prefix_length: u8,
    /// Buckets kept (fixed memory, about 48 bytes each). When more prefixes than
    /// this are active at once, some share a bucket.
    pub table_size: usize,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
            table_size: 65_536,
        }
    }
}

/// The smallest and largest accepted `table_size`.
pub const MIN_TABLE_SIZE: usize = 64;
pub const MAX_TABLE_SIZE: usize = 1 << 24;

/// A wrong `[rrl]` setting: the key (inside `rrl`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`rrl.{key}`: {message}")]
pub struct RrlConfigError {
    pub key: &'static str,
    pub message: String,
}

impl RrlConfig {
    /// Whether responses are limited at all.
    pub fn enabled(&self) -> bool {
        self.responses_per_second > 0
    }

    /// Checks every key, even when RRL is off (so turning it on later cannot fail).
    pub fn validate(&self) -> Result<(), RrlConfigError> {
        let err = |key, message: String| Err(RrlConfigError { key, message });
        if self.responses_per_second > 1_000_000 {
            return err(
                "responses_per_second",
                format!("{} is above 1000000", self.responses_per_second),
            );
        }
        if !(8..=32).contains(&self.ipv4_prefix_length) {
            return err(
                "ipv4_prefix_length",
                format!("{} is not between 8 and 32", self.ipv4_prefix_length),
            );
        }
        if !(16..=128).contains(&self.ipv6_prefix_length) {
            return err(
                "ipv6_prefix_length",
                format!("{} is not between 16 and 128", self.ipv6_prefix_length),
            );
        }
        if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&self.table_size) {
            return err(
                "table_size",
                format!(
                    "{} is not between {MIN_TABLE_SIZE} and {MAX_TABLE_SIZE}",
                    self.table_size
                ),
            );
        }
        Ok(())
    }
}

/// What to do with one UDP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrlAction {
    /// Under the limit: send it.
    Send,
    /// Over the limit, and this one slips: send it truncated (see
    /// [`crate::wire::truncate_response`]).
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

/// The per-prefix limiter, shared by every UDP thread.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<Vec<Slot>>>,
    per_shard: usize,
    seed: u64,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far ahead of `now` a bucket's arrival time may be and still admit a
    /// response: (burst - 1) intervals.
    tolerance: u64,
    slip: u32,
    v4_mask: u32,
    v6_mask: u128,
}

/// Shards of the table, each behind its own lock, so UDP threads rarely meet.
const SHARDS: usize = 16;
/// Slots looked at for one prefix, inside its shard.
const PROBE: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The prefix (IPv4 as its IPv4-mapped IPv6 form), `None` while never used.
    key: Option<u128>,
    /// GCRA theoretical arrival time, in nanoseconds on the caller's clock.
    tat: u64,
    /// Responses over the limit so far, for the slip ratio.
    over: u32,
}

impl RateLimiter {
    /// A limiter for `config`, which must be [`RrlConfig::enabled`] and valid (a zero
    /// rate is treated as one per second). `seed` keys the table's hash so clients
    /// cannot aim at one slot; the daemon passes a random one.
    pub fn new(config: &RrlConfig, seed: u64) -> Self {
        let rate = u64::from(config.responses_per_second.max(1));
        let interval = (1_000_000_000 / rate).max(1);
        let per_shard = config.table_size.clamp(MIN_TABLE_SIZE, MAX_TABLE_SIZE).div_ceil(SHARDS);
        let v4_bits = u32::from(config.ipv4_prefix_length.min(32));
        let v6_bits = u32::from(config.ipv6_prefix_length.min(128));
        RateLimiter {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![Slot::default(); per_shard]))
                .collect(),
            per_shard,
            seed,
            interval,
            tolerance: (rate - 1) * interval,
            slip: config.slip,
            v4_mask: u32::MAX.checked_shl(32 - v4_bits).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - v6_bits).unwrap_or(0),
        }
    }

    /// Decides about one response to `client` at `now` (any monotonic clock, the same
    /// origin on every call).
    pub fn check(&self, client: IpAddr, now: Duration) -> RrlAction {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let key = self.prefix(client);
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        let hash = h.finish();
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut slots = shard.lock().unwrap_or_else(|e| e.into_inner());
        let len = slots.len();
        let start = ((hash >> 32) as usize) % len;
        let probe = (0..PROBE.min(len)).map(|i| (start + i) % len);
        let at = probe
            .clone()
            .find(|&i| slots[i].key == Some(key))
            .or_else(|| probe.clone().find(|&i| slots[i].key.is_none() || slots[i].tat <= now));
        let slot = match at {
            Some(i) => {
                let s = &mut slots[i];
                if s.key != Some(key) {
                    *s = Slot {
                        key: Some(key),
                        tat: now,
                        over: 0,
                    };
                }
                s
            }
            None => {
                // Every probed slot is busy: share the one that will be full first.
                let i = probe.min_by_key(|&i| slots[i].tat).unwrap_or(start);
                &mut slots[i]
            }
        };
        if slot.tat <= now.saturating_add(self.tolerance) {
            slot.tat = slot.tat.max(now).saturating_add(self.interval);
            return RrlAction::Send;
        }
        let n = slot.over;
        slot.over = slot.over.wrapping_add(1);
        match self.slip {
            0 => RrlAction::Drop,
            s if n % s == 0 => RrlAction::Slip,
            _ => RrlAction::Drop,
        }
    }

    /// The client's prefix as a table key; an IPv4-mapped IPv6 source (a dual-stack
    /// socket) counts as the IPv4 client it is.
    fn prefix(&self, client: IpAddr) -> u128 {
        let v4 = |a: Ipv4Addr| (0xffff << 32) | u128::from(u32::from(a) & self.v4_mask);
        match client {
            IpAddr::V4(a) => v4(a),
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(u128::from(a) & self.v6_mask, v4),
        }
    }

    /// Buckets in the table (fixed at construction).
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.per_shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(
            &RrlConfig {
                responses_per_second: rps,
                slip,
                ..RrlConfig::default()
            },
            42,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// `n` decisions for `client` at one instant.
    fn burst(l: &RateLimiter, client: &str, now: Duration, n: usize) -> Vec<RrlAction> {
        (0..n).map(|_| l.check(ip(client), now)).collect()
    }

    use RrlAction::{Drop, Send, Slip};

    #[test]
    fn over_the_limit_responses_slip_and_drop_in_the_configured_ratio() {
        // (slip, the 8 decisions after a burst of 5 at 5/s)
        let cases = [
            (2, [Slip, Drop, Slip, Drop, Slip, Drop, Slip, Drop]),
            (3, [Slip, Drop, Drop, Slip, Drop, Drop, Slip, Drop]),
            (1, [Slip; 8]),
            (0, [Drop; 8]),
        ];
        for (slip, expected) in cases {
            let l = limiter(5, slip);
            assert_eq!(burst(&l, "192.0.2.1", at(1000), 5), vec![Send; 5], "slip {slip}");
            assert_eq!(burst(&l, "192.0.2.1", at(1000), 8), expected, "slip {slip}");
        }
    }

    #[test]
    fn prefixes_have_their_own_buckets() {
        let l = limiter(3, 2);
        assert_eq!(burst(&l, "10.0.0.1", at(0), 3), vec![Send; 3]);
        // Same /24 (also through an IPv4-mapped IPv6 source): limited together.
        assert_eq!(l.check(ip("10.0.0.200"), at(0)), Slip);
        assert_eq!(l.check(ip("::ffff:10.0.0.9"), at(0)), Drop);
        // Another /24 is unaffected.
        assert_eq!(burst(&l, "10.0.1.1", at(0), 3), vec![Send; 3]);
        assert_eq!(l.check(ip("10.0.1.1"), at(0)), Slip);
        // IPv6: one /56 shares a bucket, the next /56 does not.
        assert_eq!(burst(&l, "2001:db8:0:1::1", at(0), 3), vec![Send; 3]);
        assert_eq!(l.check(ip("2001:db8:0:ff::2"), at(0)), Slip);
        assert_eq!(burst(&l, "2001:db8:0:100::1", at(0), 3), vec![Send; 3]);
    }

    #[test]
    fn tokens_refill_with_time() {
        let l = limiter(10, 0);
        assert_eq!(burst(&l, "198.51.100.7", at(5000), 10), vec![Send; 10]);
        assert_eq!(l.check(ip("198.51.100.7"), at(5000)), Drop);
        // One token every 100 ms.
        assert_eq!(l.check(ip("198.51.100.7"), at(5099)), Drop);
        assert_eq!(burst(&l, "198.51.100.7", at(5100), 2), vec![Send, Drop]);
        assert_eq!(burst(&l, "198.51.100.7", at(5350), 3), vec![Send, Send, Drop]);
        // After a second of silence the whole burst is back, and no more.
        let mut after = burst(&l, "198.51.100.7", at(6400), 11);
        assert_eq!(after.pop(), Some(Drop));
        assert_eq!(after, vec![Send; 10]);
        // A steady 10/s is never limited.
        for i in 1..=50 {
            assert_eq!(l.check(ip("198.51.100.7"), at(6400 + i * 100)), Send, "tick {i}");
        }
    }

    #[test]
    fn a_flood_of_prefixes_does_not_grow_the_table_and_quiet_slots_are_reused() {
        let config = RrlConfig {
            responses_per_second: 2,
            slip: 0,
            table_size: MIN_TABLE_SIZE,
            ..RrlConfig::default()
        };
        let l = RateLimiter::new(&config, 7);
        let capacity = l.capacity();
        assert_eq!(capacity, MIN_TABLE_SIZE);
        // 5000 different /24s within one second: every one gets a decision, the
        // table stays its size, and (far more prefixes than slots) many share.
        let mut limited = 0;
        for i in 0..5000u32 {
            let a = std::net::Ipv4Addr::from((10 << 24) | (i << 8));
            for _ in 0..2 {
                if l.check(IpAddr::V4(a), at(u64::from(i) / 10)) != Send {
                    limited += 1;
                }
            }
        }
        assert!(limited > 0, "busy slots are shared, so some prefixes were limited");
        assert_eq!(l.capacity(), capacity);
        // A second later every bucket is full again: a new prefix has its whole burst.
        assert_eq!(burst(&l, "203.0.113.1", at(2000), 3), vec![Send, Send, Drop]);
    }

    #[test]
    fn settings_are_validated_and_off_by_default() {
        assert!(!RrlConfig::default().enabled());
        RrlConfig::default().validate().unwrap();
        let bad = [
            (
                RrlConfig {
                    ipv4_prefix_length: 33,
                    ..RrlConfig::default()
                },
                "ipv4_prefix_length",
            ),
            (
                RrlConfig {
                    ipv6_prefix_length: 8,
                    ..RrlConfig::default()
                },
                "ipv6_prefix_length",
            ),
            (
                RrlConfig {
                    table_size: 10,
                    ..RrlConfig::default()
                },
                "table_size",
            ),
        ];
        for (config, key) in bad {
            assert_eq!(config.validate().unwrap_err().key, key);
        }
    }
}
