//! How to reach an etcd cluster: endpoints (parsed from the comma-separated list
//! daemons take), TLS material, timeouts and the retry policy, checked before the
//! first connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client as ec;
use serde::Deserialize;

use super::retry::RetryPolicy;
use crate::StoreError;

/// TLS material for `https://` endpoints, as it appears in config files.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM CA bundle that signed the etcd server certificates (system roots when unset).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for etcd's `--client-cert-auth`; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub domain: Option<String>,
}

/// How to reach an etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`, `https://host:port`, or `host:port`, which
    /// gets `https://` when `tls` is set and `http://` otherwise).
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    /// Bound on establishing a connection, and on [`super::EtcdStore::connect`] as a whole.
    pub connect_timeout: Duration,
    /// Bound on each attempt of each request.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl EtcdConfig {
    /// A config for `endpoints` with default timeouts (connect 5 s, request 5 s) and
    /// retry policy.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }

    /// Parses a comma-separated endpoint list (`"http://a:2379,http://b:2379"`, as in
    /// `--etcd-endpoints` / `MERIDIAN_ETCD_ENDPOINTS`), with default settings.
    pub fn from_endpoints_str(list: &str) -> Result<Self, StoreError> {
        Ok(Self::new(parse_endpoints(list)?))
    }

    /// Checks the config; returns it unchanged when valid.
    pub fn validate(self) -> Result<Self, StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::InvalidRequest("no etcd endpoints configured".into()));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint)?;
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(StoreError::InvalidRequest(
                "etcd connect_timeout and request_timeout must be positive".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(StoreError::InvalidRequest(
                "etcd retry.max_attempts must be at least 1".into(),
            ));
        }
        Ok(self)
    }
}

/// Splits and checks a comma-separated endpoint list.
pub(super) fn parse_endpoints(list: &str) -> Result<Vec<String>, StoreError> {
    if list.trim().is_empty() {
        return Err(StoreError::InvalidRequest("etcd endpoint list is empty".into()));
    }
    let mut endpoints = Vec::new();
    for (index, entry) in list.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(StoreError::InvalidRequest(format!(
                "etcd endpoint list {list:?}: entry {} is empty",
                index + 1
            )));
        }
        check_endpoint(entry)?;
        endpoints.push(entry.to_owned());
    }
    Ok(endpoints)
}

/// Rejects endpoints that cannot be a client URL.
pub(super) fn check_endpoint(endpoint: &str) -> Result<(), StoreError> {
    let bad = |why: &str| Err(StoreError::InvalidRequest(format!("etcd endpoint {endpoint:?}: {why}")));
    if endpoint.is_empty() {
        return bad("is empty");
    }
    if endpoint.chars().any(char::is_whitespace) {
        return bad("contains whitespace");
    }
    let authority = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return bad(&format!("unsupported scheme {scheme:?} (expected http or https)")),
        None => endpoint,
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return bad("expected host:port");
    }
    Ok(())
}

/// Gives an endpoint an explicit scheme, so the string we add to and remove from the
/// client's endpoint set is the same URI etcd-client keys its channels by.
pub(super) fn normalize_endpoint(endpoint: &str, tls: bool) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// Builds tonic TLS options from the config, reading the PEM files.
pub(super) fn tls_options(tls: &EtcdTls) -> Result<ec::TlsOptions, StoreError> {
    fn read(what: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
        std::fs::read(path).map_err(|e| StoreError::InvalidRequest(format!("etcd tls {what} {}: {e}", path.display())))
    }
    let mut options = ec::TlsOptions::new();
    match &tls.ca_file {
        Some(path) => options = options.ca_certificate(ec::Certificate::from_pem(read("ca_file", path)?)),
        None => options = options.with_enabled_roots(),
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(ec::Identity::from_pem(read("cert_file", cert)?, read("key_file", key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::InvalidRequest(
                "etcd tls: cert_file and key_file must be given together".into(),
            ))
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_endpoint_lists() {
        let config = EtcdConfig::from_endpoints_str(" http://a:1 ,http://b:2,c:3").unwrap();
        assert_eq!(config.endpoints, vec!["http://a:1", "http://b:2", "c:3"]);
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn rejects_bad_endpoint_lists() {
        for (list, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("http://a:1,,http://b:2", "entry 2 is empty"),
            ("http://a:1, ", "entry 2 is empty"),
            ("ftp://a:1", "unsupported scheme"),
            ("http://a:1/path", "host:port"),
            ("http://", "host:port"),
        ] {
            match EtcdConfig::from_endpoints_str(list) {
                Err(StoreError::InvalidRequest(message)) => {
                    assert!(message.contains(needle), "{list:?}: {message:?} lacks {needle:?}")
                }
                other => panic!("{list:?}: expected InvalidRequest, got {other:?}"),
            }
        }
    }

    #[test]
    fn normalizes_endpoints() {
        assert_eq!(normalize_endpoint("a:1", false), "http://a:1");
        assert_eq!(normalize_endpoint("a:1", true), "https://a:1");
        assert_eq!(normalize_endpoint("http://a:1/", true), "http://a:1");
    }

    #[test]
    fn tls_config_is_strict() {
        let parsed: Result<EtcdTls, _> = serde_json::from_str(r#"{"ca_file": "/x", "cert": "/y"}"#);
        assert!(parsed.is_err());
        let parsed: EtcdTls = serde_json::from_str(r#"{"ca_file": "/x", "domain": "etcd"}"#).unwrap();
        assert_eq!(parsed.domain.as_deref(), Some("etcd"));
        let only_cert = EtcdTls {
            cert_file: Some("/nonexistent".into()),
            ..EtcdTls::default()
        };
        assert!(matches!(tls_options(&only_cert), Err(StoreError::InvalidRequest(_))));
    }
}
