//! The zones section of the agent's configuration (`[[zones]]` with SOA fields,
//! `[[zones.steered]]`, `[[zones.records]]`) and its compilation into [`Zones`]. The
//! TOML shape lives here, next to the data it becomes, so the core can be tested from
//! the same text operators write; the daemon's config embeds `Vec<ZoneConfig>` and
//! turns a [`ZoneConfigError`] into its own error naming the file.

use serde::{Deserialize, Serialize};

use crate::select::MAX_ANSWERS;
use crate::wire::{self, name_from_text};
use crate::zones::{StaticRecord, Steered, Zone, Zones};

/// A zone setting that cannot be served; `key` is the path in the config
/// (`zones[0].steered[1].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct ZoneConfigError {
    pub key: String,
    pub message: String,
}

impl ZoneConfigError {
    fn new(key: &str, message: String) -> Self {
        ZoneConfigError {
            key: key.to_string(),
            message,
        }
    }
}

/// Compiles the configured zones (`zones[i]` in error keys).
pub fn compile(configs: &[ZoneConfig]) -> Result<Zones, ZoneConfigError> {
    let mut zones = Vec::new();
    for (zi, z) in configs.iter().enumerate() {
        zones.push(build_zone(z, &format!("zones[{zi}]"))?);
    }
    for (i, a) in zones.iter().enumerate() {
        if zones[..i].iter().any(|b| b.origin == a.origin) {
            return Err(ZoneConfigError::new(
                &format!("zones[{i}].origin"),
                format!("zone {} is configured twice", wire::name_to_text(&a.origin)),
            ));
        }
    }
    Ok(Zones::new(zones))
}

/// One authoritative zone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The apex, e.g. "example.net." (the trailing dot is optional).
    pub origin: String,
    /// Name servers (relative to the origin or absolute with a trailing dot).
    pub ns: Vec<String>,
    /// SOA MNAME; default: the first name server.
    #[serde(default)]
    pub soa_mname: Option<String>,
    /// SOA RNAME (the mailbox as a name); default: hostmaster.<origin>.
    #[serde(default)]
    pub soa_rname: Option<String>,
    #[serde(default = "default_serial")]
    pub soa_serial: u32,
    #[serde(default = "default_refresh")]
    pub soa_refresh: u32,
    #[serde(default = "default_retry")]
    pub soa_retry: u32,
    #[serde(default = "default_expire")]
    pub soa_expire: u32,
    /// Negative-caching TTL (RFC 2308).
    #[serde(default = "default_minimum")]
    pub soa_minimum: u32,
    /// TTL of the SOA, NS and static records without their own.
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// Names answered from the plan.
    #[serde(default)]
    pub steered: Vec<SteeredConfig>,
    /// Static records (name-server glue, TXT).
    #[serde(default)]
    pub records: Vec<RecordConfig>,
}

fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    604_800
}
fn default_minimum() -> u32 {
    60
}
fn default_zone_ttl() -> u32 {
    3600
}
fn default_answers() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeredConfig {
    /// Relative ("www", "@") or absolute ("www.example.net.").
    pub name: String,
    /// Most A/AAAA records per answer (fewer when weights demand it; see `select`).
    #[serde(default = "default_answers")]
    pub answers: usize,
    /// Overrides the plan's TTL for this name.
    #[serde(default)]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// Resolves a configured name: "@" is the origin, a trailing dot makes it absolute,
/// anything else is relative to the origin.
fn resolve(name: &str, origin_text: &str) -> Result<Vec<u8>, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a name must not be empty".into());
    }
    if name == "@" {
        return name_from_text(origin_text);
    }
    if name.ends_with('.') {
        return name_from_text(name);
    }
    name_from_text(&format!("{name}.{}", origin_text.trim_end_matches('.')))
}

fn build_zone(z: &ZoneConfig, at: &str) -> Result<Zone, ZoneConfigError> {
    let invalid = ZoneConfigError::new;
    let origin = name_from_text(&z.origin).map_err(|e| invalid(&format!("{at}.origin"), e))?;
    if origin == [0] {
        return Err(invalid(
            &format!("{at}.origin"),
            "serving the root zone is not supported".into(),
        ));
    }
    let origin_text = wire::name_to_text(&origin);
    if z.ns.is_empty() {
        return Err(invalid(
            &format!("{at}.ns"),
            "at least one name server is required".into(),
        ));
    }
    let ns =
        z.ns.iter()
            .enumerate()
            .map(|(i, n)| resolve(n, &origin_text).map_err(|e| invalid(&format!("{at}.ns[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
    let mname = match &z.soa_mname {
        Some(m) => resolve(m, &origin_text).map_err(|e| invalid(&format!("{at}.soa_mname"), e))?,
        None => ns[0].clone(),
    };
    let rname = match &z.soa_rname {
        Some(r) => resolve(r, &origin_text).map_err(|e| invalid(&format!("{at}.soa_rname"), e))?,
        None => resolve("hostmaster", &origin_text).map_err(|e| invalid(&format!("{at}.soa_rname"), e))?,
    };
    let soa = wire::soa_rdata(
        &mname,
        &rname,
        [z.soa_serial, z.soa_refresh, z.soa_retry, z.soa_expire, z.soa_minimum],
    );
    let mut zone = Zone::new(origin, soa, z.ttl, z.soa_minimum, ns.clone());
    for (i, r) in z.records.iter().enumerate() {
        let key = format!("{at}.records[{i}]");
        let name = resolve(&r.name, &origin_text).map_err(|e| invalid(&format!("{key}.name"), e))?;
        if !zone.contains(&name) {
            return Err(invalid(
                &format!("{key}.name"),
                format!("{} is outside the zone {origin_text}", wire::name_to_text(&name)),
            ));
        }
        let value = r.value.trim();
        let (rtype, rdata) = match r.rtype.to_ascii_uppercase().as_str() {
            "A" => {
                let a: std::net::Ipv4Addr = value
                    .parse()
                    .map_err(|_| invalid(&format!("{key}.value"), format!("`{value}` is not an IPv4 address")))?;
                (wire::TYPE_A, a.octets().to_vec())
            }
            "AAAA" => {
                let a: std::net::Ipv6Addr = value
                    .parse()
                    .map_err(|_| invalid(&format!("{key}.value"), format!("`{value}` is not an IPv6 address")))?;
                (wire::TYPE_AAAA, a.octets().to_vec())
            }
            "TXT" => (wire::TYPE_TXT, wire::txt_rdata(&r.value)),
            other => {
                return Err(invalid(
                    &format!("{key}.type"),
                    format!("`{other}` is not supported (A, AAAA or TXT)"),
                ))
            }
        };
        zone.add(&name).records.push(StaticRecord {
            rtype,
            ttl: r.ttl.unwrap_or(z.ttl),
            rdata,
        });
    }
    for (i, s) in z.steered.iter().enumerate() {
        let key = format!("{at}.steered[{i}]");
        let name = resolve(&s.name, &origin_text).map_err(|e| invalid(&format!("{key}.name"), e))?;
        if !zone.contains(&name) {
            return Err(invalid(
                &format!("{key}.name"),
                format!("{} is outside the zone {origin_text}", wire::name_to_text(&name)),
            ));
        }
        if !(1..=MAX_ANSWERS).contains(&s.answers) {
            return Err(invalid(
                &format!("{key}.answers"),
                format!("{} is not between 1 and {MAX_ANSWERS}", s.answers),
            ));
        }
        let text = wire::name_to_text(&name);
        let data = zone.add(&name);
        if data.steered.is_some() {
            return Err(invalid(&format!("{key}.name"), format!("{text} is steered twice")));
        }
        if data
            .records
            .iter()
            .any(|r| r.rtype == wire::TYPE_A || r.rtype == wire::TYPE_AAAA)
        {
            return Err(invalid(
                &format!("{key}.name"),
                format!("{text} is steered and also has static A/AAAA records"),
            ));
        }
        data.steered = Some(Steered {
            name: text,
            answers: s.answers,
            ttl: s.ttl,
        });
    }
    for (i, n) in ns.iter().enumerate() {
        if zone.contains(n) && zone.glue(n).next().is_none() {
            return Err(invalid(
                &format!("{at}.ns[{i}]"),
                format!(
                    "in-zone name server {} needs an A or AAAA record in {at}.records (glue)",
                    wire::name_to_text(n)
                ),
            ));
        }
    }
    Ok(zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::Lookup;

    #[derive(Deserialize)]
    struct File {
        zones: Vec<ZoneConfig>,
    }

    fn compile_text(text: &str) -> Result<Zones, ZoneConfigError> {
        let file: File = toml::from_str(text).unwrap();
        compile(&file.zones)
    }

    const ZONE: &str = r#"
[[zones]]
origin = "example.net."
ns = ["ns1"]

[[zones.steered]]
name = "www"
answers = 2

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"
"#;

    #[test]
    fn zones_compile_with_steered_names_and_glue() {
        let zones = compile_text(ZONE).unwrap();
        match zones.lookup(&name_from_text("www.example.net.").unwrap()) {
            Lookup::Found { data, .. } => assert_eq!(data.steered.as_ref().unwrap().answers, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                ZONE.replace("answers = 2", "answers = 17"),
                "zones[0].steered[0].answers",
            ),
            (ZONE.replace("name = \"ns1\"", "name = \"ns9\""), "zones[0].ns[0]"),
            (format!("{ZONE}{ZONE}"), "zones[1].origin"),
            (
                ZONE.replace("value = \"127.0.0.53\"", "value = \"::1\""),
                "zones[0].records[0].value",
            ),
        ];
        for (text, key) in cases {
            let err = compile_text(&text).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
